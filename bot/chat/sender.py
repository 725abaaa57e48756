"""Delivering the outbox (bot/db/outbox.py): sends incident messages, replies and group messages, and edits them
while their incidents change.

Every message to send is a row written when its incident was decided, so nothing waits in memory: a Telegram
outage or a restart delays messages, never drops them. Each row is claimed in the database before it is sent, so
two processes never send the same one. Whatever Telegram answers is put in one of four kinds (`SendFailed`) that
every path treats the same way: a permanent error (the bot was blocked, the chat is gone) is logged once per chat
and the row is marked failed, other chats go on; a flood limit (429) pauses sending to its chat for as long as
Telegram asks, other chats go on; anything else is tried again later with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from enum import Enum
from functools import partial
from typing import TypeVar

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError

from agent.log_once import Outage
from bot.chat.rate_limits import URGENT
from bot.db import Group, Incident, Notice, oncall, outbox
from bot.db.outbox import SEND_TIMEOUT_S, Row, claim, record_failed, record_retry, release
from schema.domain import NoticeKind

log = logging.getLogger(__name__)
RETRY_S = (5.0, 15.0, 60.0, 300.0)  # after a network error or a 5xx, by attempt
PROBE_S = 5.0  # while Telegram is out, asked this often (getMe) whether it is back
T = TypeVar("T")

Render = Callable[[Incident], tuple[str, InlineKeyboardMarkup | None]]
# A group's message from its change and its members' notices and incidents.
RenderGroup = Callable[[str, list[tuple[Notice, Incident]]], tuple[str, InlineKeyboardMarkup | None]]
Text = Callable[[], tuple[str, InlineKeyboardMarkup | None]]  # a message's text and buttons, made when it goes
THREAD_GONE = ("thread not found", "topic_closed")  # Telegram's answers for a deleted or closed forum topic


class Failure(Enum):
    PERMANENT = "permanent"  # the chat cannot take it, ever: blocked, gone, refused
    LATER = "later"  # Telegram or the network is out: the same call can work later
    FLOOD = "flood"  # this chat's flood limit: wait as long as Telegram asks
    UNCHANGED = "unchanged"  # an edit to what the message says already


class SendFailed(Exception):
    """Telegram did not take a call, as one of the four kinds every delivery path handles."""

    def __init__(self, message: str, failure: Failure, wait_s: float = 0.0) -> None:
        super().__init__(message)
        self.message, self.failure, self.wait_s = message, failure, wait_s


def retry_seconds(retry_after: float | timedelta) -> float:
    """PTB gives 429's retry_after as seconds or as a timedelta, depending on its version and settings."""
    return retry_after.total_seconds() if isinstance(retry_after, timedelta) else float(retry_after)


async def classified(call: Awaitable[T]) -> T:
    """The result of a Bot API call, or SendFailed saying what kind of failure it was."""
    try:
        return await call
    except RetryAfter as exc:
        raise SendFailed(exc.message, Failure.FLOOD, retry_seconds(exc.retry_after)) from exc
    except BadRequest as exc:
        unchanged = "not modified" in exc.message.lower()
        raise SendFailed(exc.message, Failure.UNCHANGED if unchanged else Failure.PERMANENT) from exc
    except Forbidden as exc:
        raise SendFailed(exc.message, Failure.PERMANENT) from exc
    except TelegramError as exc:
        raise SendFailed(exc.message, Failure.LATER) from exc


class Sender:
    """The outbox's one delivery loop in this process; `run` is safe to call often and from many places."""

    def __init__(self, render: Render, render_group: RenderGroup, edit_every_s: float) -> None:
        self.render = render
        self.render_group = render_group
        self.edit_every_s = edit_every_s
        self._gone_topics: set[tuple[int, int]] = set()
        self._running = asyncio.Lock()
        self._paused: dict[int, float] = {}  # chat id -> monotonic time its flood limit ends
        self._dead_chats: set[int] = set()
        self._probe_at = 0.0  # monotonic time of the next getMe while Telegram is out
        self.telegram = Outage(log, "Telegram did not take a message (%s); it stays queued and is retried",
                               "Telegram takes messages again")

    async def run(self, bot: Bot) -> None:
        """Send what is due, then bring edited incidents up to date; a run while another is busy does nothing.
        A run ends early when Telegram is out: what is left waits for the next."""
        if self._running.locked():
            return
        async with self._running:
            if self.telegram.is_down and not await self._back(bot):
                return
            for notice, incident, reply_to in await asyncio.to_thread(outbox.due, time.time()):
                text = partial(self._notice_text, notice, incident)
                if not await self._deliver(bot, Notice, notice, text, reply_to, partial(self._sent, notice, incident)):
                    return
            for group in await asyncio.to_thread(outbox.due_groups, time.time()):
                members = await asyncio.to_thread(outbox.members, group.id)
                reply_to = await asyncio.to_thread(outbox.reply_target, group)
                text = partial(self.render_group, group.change, members)
                if not await self._deliver(bot, Group, group, text, reply_to, partial(self._shown, group, members)):
                    return
            for notice, incident in await asyncio.to_thread(outbox.stale, time.time(), self.edit_every_s):
                record = partial(outbox.record_edit, notice.id, incident.revision)
                if not await self._edit(bot, Notice, notice, partial(self.render, incident), record):
                    return
            for group, _count, _revisions in await asyncio.to_thread(outbox.stale_groups, time.time(),
                                                                      self.edit_every_s):
                members = await asyncio.to_thread(outbox.members, group.id)
                text = partial(self.render_group, group.change, members)
                if not await self._edit(bot, Group, group, text, partial(self._shown, group, members, None)):
                    return

    async def _back(self, bot: Bot) -> bool:
        """While Telegram is out: whether it answers again (a getMe every PROBE_S). When it does, every message
        that waits out its backoff is due at once: up to minutes sooner than its own next try."""
        if time.monotonic() < self._probe_at:
            return False
        self._probe_at = time.monotonic() + PROBE_S
        try:
            await classified(bot.get_me())
        except SendFailed:
            return False
        self.telegram.up()
        waiting = await asyncio.to_thread(outbox.due_now, time.time())
        log.info("Telegram answers again: what waited is due at once (%d message%s)", waiting,
                 "" if waiting == 1 else "s")
        return True

    def _notice_text(self, notice: Notice, incident: Incident) -> tuple[str, InlineKeyboardMarkup | None]:
        """An alert as of its incident's newest state; a reply as it was written."""
        if notice.kind == NoticeKind.ALERT:
            return self.render(incident)
        return notice.text or "", None

    @staticmethod
    def _sent(notice: Notice, incident: Incident, message: Message, now: float) -> None:
        outbox.record_sent(notice.id, message.message_id, incident.revision, now)
        log.info("sent %s about incident %d (%s) to chat %d", notice.kind, incident.id, incident.device,
                 notice.chat_id)

    @staticmethod
    def _shown(group: Group, members: list[tuple[Notice, Incident]], message: Message | None, now: float) -> None:
        """A group message was sent (`message`) or edited: the members and the revisions it shows."""
        revisions = sum(incident.revision for _, incident in members)
        outbox.record_group(group.id, message.message_id if message else None, len(members), revisions, now)
        if message is not None:
            log.info("sent a group of %d (%s) to chat %d", len(members), group.change, group.chat_id)

    async def _deliver(self, bot: Bot, table: Row, row: Notice | Group, text: Text, reply_to: int | None,
                       record: Callable[[Message, float], None]) -> bool:
        """Send one row's message (`text` blocks: it may read the database); False when Telegram is out."""
        if self._waiting(row.chat_id) or not await asyncio.to_thread(claim, table, row.id, True):
            return True  # its chat waits out a flood limit, or another process sends (or sent) this one
        try:
            shown, markup = await asyncio.to_thread(text)
            message = await self._send(bot, row.chat_id, row.thread_id, shown, markup, reply_to)
        except SendFailed as exc:
            return await self._failed(exc, table, row, edit=False)
        except Exception as exc:  # a bug must cost one message a delay, not the whole outbox
            log.exception("sending %s %d failed", table.__name__.lower(), row.id)
            await asyncio.to_thread(record_retry, table, row.id, self._backoff(row), time.time(), repr(exc))
            return True
        self.telegram.up()
        await asyncio.to_thread(record, message, time.time())
        return True

    async def _edit(self, bot: Bot, table: Row, row: Notice | Group, text: Text,
                    record: Callable[[float], None]) -> bool:
        """Edit one row's message to its incident's newest state; False when Telegram is out."""
        if self._waiting(row.chat_id) or not await asyncio.to_thread(claim, table, row.id, False):
            return True
        shown, markup = await asyncio.to_thread(text)
        try:
            await classified(bot.edit_message_text(shown, row.chat_id, row.message_id, parse_mode=ParseMode.HTML,
                                                   reply_markup=markup, rate_limit_args=URGENT))
        except SendFailed as exc:
            if exc.failure in (Failure.FLOOD, Failure.LATER):
                return await self._failed(exc, table, row, edit=True)
            if exc.failure == Failure.PERMANENT:  # the message is gone or cannot be edited: stop trying
                await self._failed(exc, table, row, edit=True)
        await asyncio.to_thread(record, time.time())
        return True

    async def _failed(self, exc: SendFailed, table: Row, row: Notice | Group, edit: bool) -> bool:
        """What a failure does: a flood limit pauses the chat and lets the row go; Telegram out lets it go, or
        retries it with backoff, and ends the run (False); a message that can never be sent is marked failed,
        and an edit that can never be made is said in the log (the incident lives on in the database)."""
        if exc.failure == Failure.FLOOD:
            log.warning("Telegram asks to wait %.0f s (flood limit) in chat %d; its messages wait, other chats go on",
                        exc.wait_s, row.chat_id)
            self._paused[row.chat_id] = time.monotonic() + exc.wait_s
            await asyncio.to_thread(release, table, row.id)
            return True
        if exc.failure == Failure.LATER:
            self.telegram.down(exc.message)
            if edit:
                await asyncio.to_thread(release, table, row.id)
            else:
                await asyncio.to_thread(record_retry, table, row.id, self._backoff(row), time.time(), exc.message)
            return False
        if not edit:
            await asyncio.to_thread(record_failed, table, row.id, exc.message)
            if row.chat_id > 0:  # a person's private chat: they blocked the bot, escalations mention them instead
                await asyncio.to_thread(oncall.unreachable, row.chat_id)
        elif not isinstance(exc.__cause__, Forbidden):
            log.warning("cannot edit the message of %s %d in chat %d: %s", table.__name__.lower(), row.id,
                        row.chat_id, exc.message)
            return True
        if row.chat_id not in self._dead_chats:
            self._dead_chats.add(row.chat_id)
            log.error("chat %d cannot receive messages (%s); its messages are dropped, other chats go on",
                      row.chat_id, exc.message)
        return True

    @staticmethod
    def _backoff(row: Notice | Group) -> float:
        return RETRY_S[min(row.attempts, len(RETRY_S) - 1)]

    async def _send(self, bot: Bot, chat_id: int, thread_id: int | None, text: str,
                    markup: InlineKeyboardMarkup | None, reply_to: int | None) -> Message:
        """One message of the outbox, in its forum topic; a topic that is gone (closed or deleted) is said once
        in the log, and its messages go to the chat's general topic."""
        if thread_id is not None and (chat_id, thread_id) in self._gone_topics:
            thread_id = None
        reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        try:
            return await classified(bot.send_message(
                chat_id, text, parse_mode=ParseMode.HTML, reply_markup=markup, reply_parameters=reply,
                message_thread_id=thread_id, read_timeout=SEND_TIMEOUT_S, write_timeout=SEND_TIMEOUT_S,
                rate_limit_args=URGENT,
            ))
        except SendFailed as exc:
            if thread_id is None or not any(gone in exc.message.lower() for gone in THREAD_GONE):
                raise
        self._gone_topics.add((chat_id, thread_id))
        log.warning("topic %d of chat %d is gone (closed or deleted): its messages go to the chat's general topic",
                    thread_id, chat_id)
        return await self._send(bot, chat_id, None, text, markup, reply_to)

    def _waiting(self, chat_id: int) -> bool:
        """Whether the chat is within a flood limit Telegram set: its messages stay queued, other chats go on."""
        until = self._paused.get(chat_id)
        if until is not None and time.monotonic() >= until:
            del self._paused[chat_id]
            return False
        return until is not None
