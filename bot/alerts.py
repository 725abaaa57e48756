"""Sending alerts: which samples deserve one, to which chats, and what to do when Telegram fails."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from telegram import Bot, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError

from bot import store, texts
from bot.active_model import ActiveModel
from bot.baselines import Baselines
from bot.forecast import Forecaster
from ml.features import ZONES

log = logging.getLogger(__name__)
MAX_PENDING = 500  # alerts kept for a retry while Telegram is down; the oldest go first
RETRY_S = 5.0  # after a network error or a 5xx: soon enough for an alert, rare enough for the log


@dataclass(frozen=True)
class Pending:
    chat_id: int
    sample: store.StoredSample
    text: str


class Alerter:
    """Alerts every allowed chat when a new sample's P(stressed) reaches the threshold.

    A device stays stressed for many samples in a row: it is alerted again only after `repeat_s`.
    """

    def __init__(self, chat_ids: frozenset[int], threshold: float, repeat_s: float, baselines: Baselines) -> None:
        self.chat_ids = chat_ids
        self.baselines = baselines
        self.threshold = threshold
        self.repeat_s = repeat_s
        self.last_alert: dict[str, float] = {}
        self.pending: deque[Pending] = deque(maxlen=MAX_PENDING)
        self._retry_at = 0.0

    def due(self, new: list[store.StoredSample], now: float) -> list[store.StoredSample]:
        """The most stressed new sample of each device that is over the threshold and not alerted lately."""
        worst: dict[str, store.StoredSample] = {}
        for sample in new:
            if sample.p_stressed is None or sample.p_stressed < self.threshold:
                continue
            if sample.device not in worst or sample.p_stressed > worst[sample.device].p_stressed:
                worst[sample.device] = sample
        due = [s for s in worst.values() if now - self.last_alert.get(s.device, float("-inf")) >= self.repeat_s]
        for sample in due:
            self.last_alert[sample.device] = now
        return due

    async def alert(self, bot: Bot, new: list[store.StoredSample], model: ActiveModel) -> None:
        """Queue alerts for the new samples that are due, then send what is queued."""
        for sample in self.due(new, time.time()):
            usual = await asyncio.to_thread(self.baselines.get, sample.device)
            text = texts.alert(sample, model.drivers(sample.metrics), usual)
            self.pending.extend(Pending(chat_id, sample, text) for chat_id in sorted(self.chat_ids))
        if self.pending and time.monotonic() >= self._retry_at:
            await self._send_pending(bot)

    async def _send_pending(self, bot: Bot) -> None:
        while self.pending:
            item = self.pending[0]
            try:
                message = await bot.send_message(
                    item.chat_id, item.text, parse_mode=ParseMode.HTML,
                    reply_markup=texts.alert_keyboard(item.sample.id),
                )
            except RetryAfter as exc:
                self._pause(exc.retry_after if isinstance(exc.retry_after, (int, float)) else 30, exc)
                return
            except (Forbidden, BadRequest) as exc:
                # Blocked bot, deleted chat, bad text: retrying cannot help.
                log.error("alert for %s to chat %d dropped: %s", item.sample.device, item.chat_id, exc.message)
                self.pending.popleft()
                continue
            except TelegramError as exc:
                self._pause(RETRY_S, exc)
                return
            self.pending.popleft()
            await asyncio.to_thread(store.record_alert, item.sample.id, item.chat_id, message.message_id)
            log.info("alerted chat %d: %s P(stressed)=%.2f", item.chat_id, item.sample.device, item.sample.p_stressed)

    def _pause(self, seconds: float, exc: TelegramError) -> None:
        log.warning("Telegram did not take an alert (%s); %d waiting, retrying in %.0f s",
                    exc.message, len(self.pending), seconds)
        self._retry_at = time.monotonic() + seconds


@dataclass(frozen=True)
class Outgoing:
    chat_id: int
    text: str
    markup: InlineKeyboardMarkup
    what: str  # for the log
    on_sent: Callable[[int], None]  # gets the message id; blocks on the store


class Outbox:
    """Messages waiting for Telegram, sent in order; an outage pauses them, a refusal drops one."""

    def __init__(self) -> None:
        self.pending: deque[Outgoing] = deque(maxlen=MAX_PENDING)
        self._retry_at = 0.0

    async def send(self, bot: Bot) -> None:
        """Send what is queued, unless Telegram asked for a pause that is not over."""
        if time.monotonic() < self._retry_at:
            return
        while self.pending:
            item = self.pending[0]
            try:
                message = await bot.send_message(item.chat_id, item.text, parse_mode=ParseMode.HTML,
                                                 reply_markup=item.markup)
            except RetryAfter as exc:
                self._pause(exc.retry_after if isinstance(exc.retry_after, (int, float)) else 30, exc)
                return
            except (Forbidden, BadRequest) as exc:
                log.error("%s to chat %d dropped: %s", item.what, item.chat_id, exc.message)
                self.pending.popleft()
                continue
            except TelegramError as exc:
                self._pause(RETRY_S, exc)
                return
            self.pending.popleft()
            await asyncio.to_thread(item.on_sent, message.message_id)
            log.info("sent chat %d: %s", item.chat_id, item.what)

    def _pause(self, seconds: float, exc: TelegramError) -> None:
        log.warning("Telegram did not take a message (%s); %d waiting, retrying in %.0f s",
                    exc.message, len(self.pending), seconds)
        self._retry_at = time.monotonic() + seconds


class ForecastAlerter:
    """Alerts every allowed chat once per episode when a device's disk, memory or swap will reach its edge
    within the horizon and is already above its usual level (its usual range's top, or the fleet's typical
    value while the device has no usual range yet)."""

    def __init__(self, chat_ids: frozenset[int], forecaster: Forecaster, baselines: Baselines) -> None:
        self.chat_ids = chat_ids
        self.forecaster = forecaster
        self.baselines = baselines
        self.outbox = Outbox()

    async def alert(self, bot: Bot, new: list[store.StoredSample]) -> None:
        """Feed the new samples to the forecaster, queue the forecasts that are due, send what is queued."""
        samples = [(s.id, s.device, s.ts, s.metrics) for s in new]
        due = await asyncio.to_thread(self.forecaster.observe, samples) if samples else []
        for forecast in due:
            usual = (await asyncio.to_thread(self.baselines.get, forecast.device)).get(forecast.metric)
            if forecast.level <= (usual.high if usual else ZONES[forecast.metric].typical):
                continue  # a machine that always runs this full and this fast: its normal, not news
            self.forecaster.mark_alerted(forecast)
            text = texts.forecast_alert(forecast, usual)
            markup = texts.forecast_keyboard(forecast.sample_id, forecast.metric)
            what = f"forecast {forecast.device} {forecast.metric} edge in {forecast.eta_s:.0f} s"
            span = (usual.low, usual.high) if usual else None
            for chat_id in sorted(self.chat_ids):
                record = partial(store.record_forecast_alert, forecast.sample_id, forecast.metric, forecast.level,
                                 forecast.slope_per_h, forecast.eta_s or 0.0, span, chat_id)
                self.outbox.pending.append(Outgoing(chat_id, text, markup, what, record))
        if self.outbox.pending:
            await self.outbox.send(bot)
