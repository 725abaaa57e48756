"""Delivering the outbox (bot/db/outbox.py): sends incident messages and replies, edits them while incidents change.

Every message to send is a `Notice` row written when its incident was decided, so nothing waits in memory:
a Telegram outage or a restart delays messages, never drops them. Each row is claimed in the database before
it is sent, so two processes never send the same one. A permanent error (the bot was blocked, the chat is
gone) is logged once per chat and the row is marked failed; other chats go on. A flood limit (429) pauses
sending to its chat for as long as Telegram asks; other chats go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError

from agent.log_once import Outage
from bot.chat.limits import URGENT
from bot.db import Digest, Incident, Notice, outbox
from bot.db.outbox import (
    SEND_TIMEOUT_S,
    claim,
    due,
    record_edit,
    record_failed,
    record_retry,
    record_sent,
    release,
    stale,
)
from schema.domain import NoticeKind

log = logging.getLogger(__name__)
RETRY_S = (5.0, 15.0, 60.0, 300.0)  # after a network error or a 5xx, by attempt

Render = Callable[[Incident], tuple[str, InlineKeyboardMarkup | None]]
# A group's message from its change and its members' notices and incidents.
RenderDigest = Callable[[str, list[tuple[Notice, Incident]]], tuple[str, InlineKeyboardMarkup | None]]
THREAD_GONE = ("thread not found", "topic_closed")  # Telegram's answers for a deleted or closed forum topic


def retry_seconds(retry_after: float | timedelta) -> float:
    """PTB gives 429's retry_after as seconds or as a timedelta, depending on its version and settings."""
    return retry_after.total_seconds() if isinstance(retry_after, timedelta) else float(retry_after)


class Sender:
    """The outbox's one delivery loop in this process; `run` is safe to call often and from many places."""

    def __init__(self, render: Render, render_digest: RenderDigest, edit_every_s: float) -> None:
        self.render = render
        self.render_digest = render_digest
        self.edit_every_s = edit_every_s
        self._gone_topics: set[tuple[int, int]] = set()
        self._running = asyncio.Lock()
        self._paused: dict[int, float] = {}  # chat id -> monotonic time its flood limit ends
        self._dead_chats: set[int] = set()
        self.telegram = Outage(log, "Telegram did not take a message (%s); it stays queued and is retried",
                               "Telegram takes messages again")

    async def run(self, bot: Bot) -> None:
        """Send what is due, then bring edited incidents up to date; a run while another is busy does nothing."""
        if self._running.locked():
            return
        async with self._running:
            now = time.time()
            notices = await asyncio.to_thread(due, now)
            await self._deliver(bot, notices)
            await self._deliver_digests(bot, await asyncio.to_thread(outbox.due_digests, time.time()))
            edits = await asyncio.to_thread(stale, time.time(), self.edit_every_s)
            await self._edit(bot, edits)
            await self._edit_digests(bot, await asyncio.to_thread(outbox.stale_digests, time.time(),
                                                                  self.edit_every_s))

    async def _send(self, bot: Bot, chat_id: int, thread_id: int | None, text: str,
                    markup: InlineKeyboardMarkup | None, reply_to: int | None) -> Message:
        """One message of the outbox, in its forum topic; a topic that is gone (closed or deleted) is said once
        in the log, and its messages go to the chat's general topic."""
        if thread_id is not None and (chat_id, thread_id) in self._gone_topics:
            thread_id = None
        reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        try:
            return await bot.send_message(
                chat_id, text, parse_mode=ParseMode.HTML, reply_markup=markup, reply_parameters=reply,
                message_thread_id=thread_id, read_timeout=SEND_TIMEOUT_S, write_timeout=SEND_TIMEOUT_S,
                rate_limit_args=URGENT,
            )
        except BadRequest as exc:
            if thread_id is None or not any(gone in exc.message.lower() for gone in THREAD_GONE):
                raise
        self._gone_topics.add((chat_id, thread_id))
        log.warning("topic %d of chat %d is gone (closed or deleted): its messages go to the chat's general topic",
                    thread_id, chat_id)
        return await self._send(bot, chat_id, None, text, markup, reply_to)

    async def _deliver(self, bot: Bot, notices: list[tuple[Notice, Incident, int | None]]) -> None:
        for notice, incident, reply_to in notices:
            if self._waiting(notice.chat_id) or not await asyncio.to_thread(claim, notice.id, True):
                continue  # its chat waits out a flood limit, or another process sends (or sent) this one
            if notice.kind == NoticeKind.ALERT:
                text, markup = await asyncio.to_thread(self.render, incident)
            else:
                text, markup = notice.text or "", None
            try:
                message = await self._send(bot, notice.chat_id, notice.thread_id, text, markup, reply_to)
            except RetryAfter as exc:
                await self._flood(exc, notice.chat_id, partial(release, notice.id))
                continue
            except (Forbidden, BadRequest) as exc:
                await asyncio.to_thread(record_failed, notice.id, exc.message)
                self._dead(notice.chat_id, exc)
                continue
            except TelegramError as exc:
                self.telegram.down(exc.message)
                wait = RETRY_S[min(notice.attempts, len(RETRY_S) - 1)]
                await asyncio.to_thread(record_retry, notice.id, wait, time.time(), exc.message)
                return
            except Exception as exc:  # a bug must cost one message a delay, not the whole outbox
                log.exception("sending notice %d failed", notice.id)
                wait = RETRY_S[min(notice.attempts, len(RETRY_S) - 1)]
                await asyncio.to_thread(record_retry, notice.id, wait, time.time(), repr(exc))
                continue
            self.telegram.up()
            await asyncio.to_thread(record_sent, notice.id, message.message_id, incident.revision, time.time())
            log.info("sent %s about incident %d (%s) to chat %d", notice.kind, incident.id, incident.device,
                     notice.chat_id)

    async def _edit(self, bot: Bot, edits: list[tuple[Notice, Incident]]) -> None:
        for notice, incident in edits:
            if self._waiting(notice.chat_id) or not await asyncio.to_thread(claim, notice.id, False):
                continue
            text, markup = await asyncio.to_thread(self.render, incident)
            try:
                await bot.edit_message_text(text, notice.chat_id, notice.message_id, parse_mode=ParseMode.HTML,
                                            reply_markup=markup, rate_limit_args=URGENT)
            except RetryAfter as exc:
                await self._flood(exc, notice.chat_id, partial(release, notice.id))
                continue
            except BadRequest as exc:
                if "not modified" not in exc.message.lower():
                    # The message is gone or cannot be edited: stop trying, the incident lives on in the database.
                    log.warning("cannot edit the message of incident %d in chat %d: %s", incident.id,
                                notice.chat_id, exc.message)
            except Forbidden as exc:
                self._dead(notice.chat_id, exc)
            except TelegramError as exc:
                self.telegram.down(exc.message)
                await asyncio.to_thread(release, notice.id)
                return
            await asyncio.to_thread(record_edit, notice.id, incident.revision, time.time())

    async def _deliver_digests(self, bot: Bot, digests: list[Digest]) -> None:
        """Send the groups that are due: one message for many changes of one kind."""
        for digest in digests:
            if self._waiting(digest.chat_id) or not await asyncio.to_thread(outbox.claim_digest, digest.id, True):
                continue
            members = await asyncio.to_thread(outbox.members, digest.id)
            text, markup = await asyncio.to_thread(self.render_digest, digest.change, members)
            reply_to = await asyncio.to_thread(outbox.reply_target, digest)
            try:
                message = await self._send(bot, digest.chat_id, digest.thread_id, text, markup, reply_to)
            except RetryAfter as exc:
                await self._flood(exc, digest.chat_id, partial(outbox.release_digest, digest.id))
                continue
            except (Forbidden, BadRequest) as exc:
                await asyncio.to_thread(outbox.digest_failed, digest.id, exc.message)
                self._dead(digest.chat_id, exc)
                continue
            except TelegramError as exc:
                self.telegram.down(exc.message)
                wait = RETRY_S[min(digest.attempts, len(RETRY_S) - 1)]
                await asyncio.to_thread(outbox.digest_retry, digest.id, wait, time.time())
                return
            self.telegram.up()
            revisions = sum(incident.revision for _, incident in members)
            await asyncio.to_thread(outbox.record_digest, digest.id, message.message_id, len(members), revisions,
                                    time.time())
            log.info("sent a group of %d (%s) to chat %d", len(members), digest.change, digest.chat_id)

    async def _edit_digests(self, bot: Bot, edits: list[tuple[Digest, int, int]]) -> None:
        """Bring group messages up to date: members joined, or their incidents changed."""
        for digest, _count, _revisions in edits:
            if self._waiting(digest.chat_id) or not await asyncio.to_thread(outbox.claim_digest, digest.id, False):
                continue
            members = await asyncio.to_thread(outbox.members, digest.id)
            text, markup = await asyncio.to_thread(self.render_digest, digest.change, members)
            try:
                await bot.edit_message_text(text, digest.chat_id, digest.message_id, parse_mode=ParseMode.HTML,
                                            reply_markup=markup, rate_limit_args=URGENT)
            except RetryAfter as exc:
                await self._flood(exc, digest.chat_id, partial(outbox.release_digest, digest.id))
                continue
            except BadRequest as exc:
                if "not modified" not in exc.message.lower():
                    log.warning("cannot edit the group message %d in chat %d: %s", digest.id, digest.chat_id,
                                exc.message)
            except Forbidden as exc:
                self._dead(digest.chat_id, exc)
            except TelegramError as exc:
                self.telegram.down(exc.message)
                await asyncio.to_thread(outbox.release_digest, digest.id)
                return
            revisions = sum(incident.revision for _, incident in members)
            await asyncio.to_thread(outbox.record_digest, digest.id, None, len(members), revisions, time.time())

    def _waiting(self, chat_id: int) -> bool:
        """Whether the chat is within a flood limit Telegram set: its messages stay queued, other chats go on."""
        until = self._paused.get(chat_id)
        if until is not None and time.monotonic() >= until:
            del self._paused[chat_id]
            return False
        return until is not None

    async def _flood(self, exc: RetryAfter, chat_id: int, release_row: Callable[[], None]) -> None:
        seconds = retry_seconds(exc.retry_after)
        log.warning("Telegram asks to wait %.0f s (flood limit) in chat %d; its messages wait, other chats go on",
                    seconds, chat_id)
        self._paused[chat_id] = time.monotonic() + seconds
        await asyncio.to_thread(release_row)

    def _dead(self, chat_id: int, exc: TelegramError) -> None:
        if chat_id not in self._dead_chats:
            self._dead_chats.add(chat_id)
            log.error("chat %d cannot receive messages (%s); its messages are dropped, other chats go on",
                      chat_id, exc.message)
