"""The repeating jobs that talk to Telegram: deliver the outbox, run the watch and send what it queued, tell
the chats about the model and about outages of the services metrics depend on. Their data comes in as job
data (`run_repeating(..., data=...)`), never through globals."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from telegram import Bot
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.chat import model_admin
from bot.chat.rate_limits import URGENT
from bot.chat.sender import Sender
from bot.pipeline.active_model import ModelNews
from bot.pipeline.watch import Watch

log = logging.getLogger(__name__)


DATABASE_DOWN = "⚠️ The database is unreachable: metrics are not stored and /status cannot answer until it is back."
DATABASE_UP = "✅ The database is reachable again: metrics are stored."
KAFKA_DOWN = ("⚠️ Kafka is unreachable: no new metrics arrive until it is back. Nothing is lost: they are read "
              "when it returns.")
KAFKA_UP = "✅ Kafka is reachable again: metrics arrive."
REMOTE_WRITE_IDLE = ("⚠️ No remote write has arrived for a minute: is Prometheus down? The machines it reports "
                     "are not declared silent meanwhile.")
REMOTE_WRITE_BACK = "✅ Remote writes arrive again."


async def send(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Deliver the outbox: the Sender comes in as job data."""
    await context.job.data.run(context.bot)


@dataclass
class Watching:
    watch: Watch
    sender: Sender


async def watch(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Silent machines, due reminders, mutes that ended; what that queued goes out at once."""
    watching: Watching = context.job.data
    if await asyncio.to_thread(watching.watch.run):
        await watching.sender.run(context.bot)


async def in_thread(context: ContextTypes.DEFAULT_TYPE) -> None:
    """A blocking job that does not talk to Telegram (a checkpoint, retention): the function is the job data."""
    await asyncio.to_thread(context.job.data)


async def tell(bot: Bot, chat_ids: Iterable[int], text: str) -> None:
    """Say `text` in every chat; a chat Telegram refuses is logged, and the others still hear it."""
    for chat_id in chat_ids:
        try:
            await bot.send_message(chat_id, text, rate_limit_args=URGENT)
        except TelegramError as exc:  # the log has it; the chat hears the next news
            log.warning("could not tell chat %d: %s", chat_id, exc.message)


def model_news_teller(bot: Bot, chat_ids: Iterable[int]) -> Callable[[ModelNews], Awaitable[None]]:
    """What the model keeper is handed to tell the chats about the model."""

    async def tell_news(news: ModelNews) -> None:
        await tell(bot, chat_ids, model_admin.model_news(news))

    return tell_news


@dataclass
class WatchedService:
    """A service whose outage the chats hear about: once when it starts and once when it ends."""

    is_up: Callable[[], bool]
    down_text: str
    up_text: str
    told_up: bool = True  # what the chats were told last


async def tell_outages(context: ContextTypes.DEFAULT_TYPE) -> None:
    """A service that went down or came back is said once in every allowed chat."""
    for service in context.job.data:
        up = service.is_up()
        if up == service.told_up:
            continue
        try:
            for chat_id in context.bot_data["settings"].allowed_chat_ids:
                await context.bot.send_message(chat_id, service.up_text if up else service.down_text,
                                               rate_limit_args=URGENT)
        except TelegramError as exc:  # Telegram is out too: its own outage is in the log
            log.debug("outage notice not sent (%s); trying again at the next check", exc)
            return
        service.told_up = up
