"""Wiring: the Telegram application, its handlers, ingestion and the repeating jobs, and how the process runs.

Metrics are read and stored from the first second; the chat side joins as soon as the Bot API answers.
An outage of Telegram, at start or later, is retried with backoff and said once in the log when it
starts and once when it ends.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

import peewee as pw
from telegram import BotCommand, InlineKeyboardMarkup, Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import HTTPXRequest
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

from bot import forecast, handlers, incidents, retention, store, texts
from bot.active_model import ActiveModel, ModelKeeper, keep_model_loaded
from bot.baselines import Baselines
from bot.config import Settings
from bot.incidents import Decider, Rules
from bot.poller import KafkaSource, LocalSource, Poller
from bot.sender import Sender
from ml.registry import ModelStore

log = logging.getLogger(__name__)
RETENTION_FIRST_S = 300.0
COMMANDS = [
    BotCommand("status", "every machine, or /status <device> for one"),
    BotCommand("chart", "a chart of one machine: /chart <device> [hours]"),
    BotCommand("rejected", "latest invalid messages and why"),
    BotCommand("versions", "model versions, or /versions <n> for one in full"),
    BotCommand("retrain", "train a new model from data and labels (admins)"),
    BotCommand("rollback", "go back to an earlier model version (admins)"),
    BotCommand("help", "what this bot does"),
]
RETRY_MAX_S = 30.0  # the longest wait between two tries to reach the Bot API
OUTAGE_CHECK_S = 5.0  # how often the chats' view of Kafka and the database is brought up to date
GC_YOUNG = 50_000  # allocations between collections of the youngest generation (Python's default: 700)
SEND_EVERY_S = 1.0  # the outbox is also delivered at once after a batch that queued a message
WATCH_EVERY_S = 15.0  # silent machines, reminders and ended mutes (more often for shorter settings)


class TelegramLink:
    """Whether the Bot API answers; the log says so once per change, not once per retry."""

    def __init__(self) -> None:
        self.up = True

    def failed(self, error: BaseException) -> None:
        if self.up:
            log.warning("cannot reach the Telegram Bot API (%s: %s); retrying with backoff, metrics are still "
                        "stored and alerts wait", type(error).__name__, error)
        self.up = False

    def answered(self) -> None:
        if not self.up:
            log.info("Telegram Bot API reachable again")
        self.up = True


class _PollingRequest(HTTPXRequest):
    """The connection getUpdates uses. A failed poll reaches the Updater's error callback, but a good one
    has no hook: this tells the link when Telegram answers again."""

    __slots__ = ("_link",)

    def __init__(self, link: TelegramLink) -> None:
        super().__init__(connection_pool_size=1)  # what ApplicationBuilder gives getUpdates by default
        self._link = link

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        code, payload = await super().do_request(*args, **kwargs)
        if code == HTTPStatus.OK:
            self._link.answered()
        return code, payload


def build_application(settings: Settings, model_store: ModelStore) -> Application:
    """The bot, ready for serve(); the database must already be open."""
    link = TelegramLink()
    application = (
        Application.builder()
        .token(settings.token)
        .base_url(f"{settings.api_url}/bot")
        .base_file_url(f"{settings.api_url}/file/bot")
        .get_updates_request(_PollingRequest(link))
        # Telegram's flood limits: at most ~30 messages a second, ~20 a minute per group. A 429 still
        # reaching the sender pauses it for as long as Telegram asks.
        .rate_limiter(AIORateLimiter())
        .build()
    )
    application.bot_data.update(
        settings=settings, model=ActiveModel(model_store), retrain_lock=asyncio.Lock(), link=link,
        baselines=Baselines(), forecaster=forecast.Forecaster(settings.forecast_hours * 3600),
    )
    application.add_handler(TypeHandler(object, handlers.guard), group=-1)
    application.add_handler(CommandHandler("start", handlers.start_command))
    application.add_handler(CommandHandler("help", handlers.help_command))
    application.add_handler(CommandHandler("status", handlers.status))
    application.add_handler(CommandHandler("chart", handlers.chart_command))
    application.add_handler(CommandHandler("rejected", handlers.rejected_command))
    application.add_handler(CommandHandler("versions", handlers.versions_command))
    # Retraining takes a while: it must not hold up /status and the buttons.
    application.add_handler(CommandHandler("retrain", handlers.retrain_command, block=False))
    application.add_handler(CommandHandler("rollback", handlers.rollback_command))
    application.add_handler(CommandHandler("mute", handlers.mute_command))
    application.add_handler(CommandHandler("unmute", handlers.unmute_command))
    application.add_handler(CommandHandler("muted", handlers.muted_command))
    application.add_handler(CallbackQueryHandler(handlers.incident_button, pattern=r"^i:"))
    application.add_handler(CallbackQueryHandler(handlers.missed_button, pattern=r"^missed:"))
    application.add_handler(CallbackQueryHandler(handlers.activate_button, pattern=r"^activate:"))
    application.add_handler(CallbackQueryHandler(handlers.cancel_button, pattern=r"^cancel$"))
    application.add_handler(CallbackQueryHandler(handlers.invalid_button))
    application.add_handler(MessageHandler(filters.COMMAND, handlers.unknown_command))
    application.add_error_handler(handlers.on_error)
    return application


async def serve(application: Application, worker: bool = False) -> None:
    """Run until SIGTERM or SIGINT. Raises InvalidToken when the Bot API rejects the token: that cannot heal.

    A worker ingests, predicts, decides incidents and sends their messages, but does not poll Telegram for
    updates: several workers share the partitions of one consumer group, and exactly one plain bot process
    answers commands and buttons (Telegram refuses two pollers of one token) and watches for silences.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await _start_ingestion(application, watch_silences=not worker)
    try:
        if not await _unless_stopped(_connect(application), stop):
            return
        if worker:
            log.info("worker: ingesting and sending; commands and buttons are the bot process's")
            await stop.wait()
            return
        link: TelegramLink = application.bot_data["link"]
        # Telegram answered getMe a moment ago: a failure of the bootstrap calls now is retried too.
        await application.updater.start_polling(
            allowed_updates=Update.ALL_TYPES, bootstrap_retries=-1, error_callback=link.failed
        )
        await application.start()
        await _greet(application)
        await stop.wait()
    finally:
        await _shut_down(application)


async def _unless_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Await `work` unless `stop` is set first (then cancel it); whether it finished."""
    task, stopping = asyncio.create_task(work), asyncio.create_task(stop.wait())
    await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not task.done():
        task.cancel()
        return False
    task.result()  # raises what the work raised
    return True


def _worth_retrying(error: BaseException) -> bool:
    # No connection, a 502, a timeout heal by themselves; a rejected token does not.
    return isinstance(error, TelegramError) and not isinstance(error, InvalidToken)


async def _connect(application: Application) -> None:
    """Initialize the application (its getMe checks the token), retrying with backoff while Telegram fails."""
    link: TelegramLink = application.bot_data["link"]

    def on_failure(state: RetryCallState) -> None:
        if state.outcome is not None and (error := state.outcome.exception()) is not None:
            link.failed(error)

    retrying = AsyncRetrying(
        retry=retry_if_exception(_worth_retrying),
        wait=wait_exponential(multiplier=1, max=RETRY_MAX_S),
        before_sleep=on_failure,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            await application.initialize()
    link.answered()


async def _start_ingestion(application: Application, watch_silences: bool) -> None:
    """Load the model and start ingestion, before and whatever Telegram does; the watch of silences,
    reminders and mutes, and retention, run in one process of a fleet only (`watch_silences`)."""
    settings: Settings = application.bot_data["settings"]
    model: ActiveModel = application.bot_data["model"]
    if not settings.allowed_chat_ids:
        log.warning("ALLOWED_CHAT_IDS is empty: the bot answers nobody and sends no alerts")
    # One try before the first batch, so a reachable store predicts from the first sample; then a job keeps
    # trying with backoff while the store is down or refuses, and samples are stored without a prediction.
    keeper = ModelKeeper(model, settings.allowed_chat_ids)
    await keeper.attempt(application.bot)
    application.job_queue.run_repeating(keep_model_loaded, interval=1.0, first=1.0, data=keeper, name="model")
    if settings.kafka_bootstrap:
        source: KafkaSource | LocalSource = KafkaSource(settings)
        interval = settings.poll_interval_s
        log.info("reading metrics from Kafka topic %s", settings.kafka_topic)
    else:
        source = LocalSource()
        interval = settings.sample_interval_s
        log.info("single-host mode: watching this machine as %s every %g s", source.device, interval)
    baselines: Baselines = application.bot_data["baselines"]
    forecaster: forecast.Forecaster = application.bot_data["forecaster"]
    await asyncio.to_thread(_rebuild_forecasts, forecaster)
    rules = Rules(settings.alert_threshold, settings.alert_hysteresis, settings.recover_samples,
                  settings.alert_repeat_s, settings.silent_after_s, tuple(sorted(settings.allowed_chat_ids)))
    decider = Decider(rules, model.drivers, forecaster, baselines)
    sender = Sender(partial(_render, baselines), settings.alert_edit_s)
    poller = Poller(source, model, decider, sender, interval)
    application.bot_data.update(poller=poller, decider=decider, sender=sender)
    application.job_queue.run_repeating(send, interval=SEND_EVERY_S, first=1.0, data=sender, name="send")
    if store.checkpoint_in_background():
        application.job_queue.run_repeating(checkpoint, interval=store.CHECKPOINT_S, name="checkpoint")
    # Often enough that a silence, a reminder or the end of a mute is seen within a quarter of its time.
    every = min(WATCH_EVERY_S, (settings.silent_after_s or WATCH_EVERY_S * 4) / 4,
                (settings.alert_repeat_s or WATCH_EVERY_S * 4) / 4)
    if watch_silences:
        application.job_queue.run_repeating(watch, interval=every, first=every, data=decider, name="watch")
    application.job_queue.run_repeating(
        tell_outages, interval=OUTAGE_CHECK_S, data=_watched(source), name="outages"
    )
    if watch_silences:
        # In one process of a fleet: two downsampling the same device at once would count samples twice.
        # Soon after start as well as daily: a bot restarted every day still downsamples.
        application.job_queue.run_repeating(retention.daily, interval=retention.DAY_S, first=RETENTION_FIRST_S,
                                            data=settings.retention_days, name="retention")
    # Everything made so far (libraries, the model) lives as long as the process: the garbage collector
    # need not walk it again on every full collection, which cost ingestion about a third of its time.
    gc.freeze()
    # A batch makes some 100,000 objects that live until it is stored, nearly none in a cycle (they go by
    # their reference counts). At the default threshold of 700 the collector looked at them over a hundred
    # times a batch; at GC_YOUNG a few times, a few per cent of ingestion.
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    # Application.start() would start the job queue only once Telegram answers.
    await application.job_queue.start()
    poller.start(application.bot)


@dataclass
class Service:
    """A service whose outage the chats hear about: once when it starts and once when it ends."""

    is_up: Callable[[], bool]
    down_text: str
    up_text: str
    told_up: bool = True  # what the chats were told last


async def tell_outages(context: ContextTypes.DEFAULT_TYPE) -> None:
    """The repeating job: a service that went down or came back is said once in every allowed chat."""
    settings: Settings = context.bot_data["settings"]
    for service in context.job.data:
        up = service.is_up()
        if up == service.told_up:
            continue
        try:
            for chat_id in settings.allowed_chat_ids:
                await context.bot.send_message(chat_id, service.up_text if up else service.down_text)
        except TelegramError as exc:  # Telegram is out too: its own outage is in the log
            log.debug("outage notice not sent (%s); trying again at the next check", exc)
            return
        service.told_up = up


def _watched(source: KafkaSource | LocalSource) -> list[Service]:
    services = [Service(
        store.reachable,
        "⚠️ The database is unreachable: metrics are not stored and /status cannot answer until it is back.",
        "✅ The database is reachable again: metrics are stored.",
    )]
    if isinstance(source, KafkaSource):
        services.append(Service(
            lambda: source.reachable,
            "⚠️ Kafka is unreachable: no new metrics arrive until it is back. Nothing is lost: "
            "they are read when it returns.",
            "✅ Kafka is reachable again: metrics arrive.",
        ))
    return services


async def _greet(application: Application) -> None:
    """Once Telegram answers: set the command menu."""
    try:
        await application.bot.set_my_commands(COMMANDS)
    except TelegramError as exc:  # the bot works without the menu
        log.warning("could not set the command menu: %s", exc.message)


def _render(baselines: Baselines, incident: store.Incident) -> tuple[str, InlineKeyboardMarkup | None]:
    """An incident's message as of its newest state (blocks: the usual ranges may be read)."""
    return (texts.incident(incident, baselines.get(incident.device), time.time()),
            texts.incident_keyboard(incident))


async def send(context: ContextTypes.DEFAULT_TYPE) -> None:
    """The repeating job that delivers the outbox: the Sender comes in as job data."""
    await context.job.data.run(context.bot)


async def checkpoint(context: ContextTypes.DEFAULT_TYPE) -> None:
    """The repeating job that checkpoints SQLite beside ingestion. One that fails costs nothing: a commit
    checkpoints once the log is long."""
    try:
        await asyncio.to_thread(store.checkpoint)
    except pw.DatabaseError as exc:
        log.debug("SQLite checkpoint failed: %s", exc)


async def watch(context: ContextTypes.DEFAULT_TYPE) -> None:
    """The repeating job for what no sample announces: silent machines, due reminders, mutes that ended."""
    decider: Decider = context.job.data
    await asyncio.to_thread(decider.check_silent)
    await asyncio.to_thread(decider.due_reminders)
    await asyncio.to_thread(decider.end_mutes)
    if decider.queued:
        decider.queued = False
        await context.bot_data["sender"].run(context.bot)


def _rebuild_forecasts(forecaster: forecast.Forecaster) -> None:
    """The trends as they were before the restart, from the store's last window of samples; an episode
    with an open incident stays alerted, so a restart does not repeat it."""
    forecaster.observe(store.recent_per_device(forecast.REBUILD_S, list(forecast.TRENDED)))
    forecaster.restore_alerted(incidents.open_forecasts())
    log.info("forecasts rebuilt for %d devices", forecaster.devices())


async def _shut_down(application: Application) -> None:
    poller: Poller | None = application.bot_data.get("poller")
    if poller is not None:
        await poller.stop()  # its messages go out while the bot can still send
    if application.updater.running:
        await application.updater.stop()
    if application.running:
        await application.stop()  # stops the job queue too, waiting for a running job
    else:
        await application.job_queue.stop()
    await application.shutdown()
    # Its connections are open when getMe never succeeded, and the application did not count as initialized.
    await application.bot.shutdown()
    if poller is not None:
        await asyncio.to_thread(poller.source.close)
