"""Delivering the outbox: sends incident messages and replies, edits them while incidents change.

Every message to send is a `Notice` row written when its incident was decided, so nothing waits in memory:
a Telegram outage or a restart delays messages, never drops them. Each row is claimed in the database before
it is sent, so two processes never send the same one. A permanent error (the bot was blocked, the chat is
gone) is logged once per chat and the row is marked failed; other chats go on. A flood limit (429) pauses
sending for as long as Telegram asks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from telegram import Bot, InlineKeyboardMarkup, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError

from bot.store import Incident, Notice

log = logging.getLogger(__name__)
SEND_TIMEOUT_S = 30.0  # wait long for an answer: a send that times out may have gone through
CLAIM_S = SEND_TIMEOUT_S + 15  # a row is claimed just before its send, for longer than that send can take
RETRY_S = (5.0, 15.0, 60.0, 300.0)  # after a network error or a 5xx, by attempt
BATCH = 50

Render = Callable[[Incident], tuple[str, InlineKeyboardMarkup | None]]


def retry_seconds(retry_after: float | timedelta) -> float:
    """PTB gives 429's retry_after as seconds or as a timedelta, depending on its version and settings."""
    return retry_after.total_seconds() if isinstance(retry_after, timedelta) else float(retry_after)


def _free(now: float) -> object:
    return Notice.claimed_until.is_null() | (Notice.claimed_until < now)


def claim(notice_id: int, unsent: bool) -> bool:
    """Take one row for this process, or learn that another process has it (or, with `unsent`, has sent it
    since this one read it: the claim is checked against the row as it is now)."""
    now = time.time()
    which = (Notice.id == notice_id) & _free(now)
    if unsent:
        which &= Notice.sent.is_null() & Notice.failed.is_null()
    return Notice.update(claimed_until=now + CLAIM_S).where(which).execute() == 1


def due(now: float) -> list[tuple[Notice, Incident, int | None]]:
    """Unsent, unclaimed notices whose time has come, oldest first, with the message a reply answers."""
    rows = (Notice.select(Notice, Incident).join(Incident)
            .where(Notice.sent.is_null() & Notice.failed.is_null() & (Notice.due <= now) & _free(now))
            .order_by(Notice.id).limit(BATCH))
    out = []
    for notice in rows:
        reply_to = None
        if notice.kind == "reply":
            alert = Notice.get_or_none((Notice.incident == notice.incident_id) & (Notice.chat_id == notice.chat_id)
                                       & (Notice.kind == "alert"))
            if alert is not None and alert.sent is None and alert.failed is None:
                continue  # the alert goes first; this reply answers it
            reply_to = alert.message_id if alert is not None else None
        out.append((notice, notice.incident, reply_to))
    return out


def stale(now: float, edit_every_s: float) -> list[tuple[Notice, Incident]]:
    """Sent incident messages that show an older state of their incident, and may be edited now: at once when
    the incident ended or a person acted on it, else at most every `edit_every_s`."""
    query = (Notice.select(Notice, Incident).join(Incident)
             .where((Notice.kind == "alert") & Notice.message_id.is_null(False) & _free(now)
                    & (Incident.revision > Notice.shown_revision)
                    & ((Incident.state != "open") | Notice.edited.is_null() | (Incident.acted > Notice.edited)
                       | (Notice.edited <= now - edit_every_s)))
             .order_by(Notice.id).limit(BATCH))
    return [(n, n.incident) for n in query]


def record_sent(notice_id: int, message_id: int, revision: int, now: float) -> None:
    Notice.update(sent=now, message_id=message_id, shown_revision=revision, edited=now, claimed_until=None,
                  attempts=Notice.attempts + 1).where(Notice.id == notice_id).execute()


def record_edit(notice_id: int, revision: int, now: float) -> None:
    Notice.update(claimed_until=None).where(Notice.id == notice_id).execute()
    # The newest state wins: a slow edit of an older revision never overwrites the record of a newer one.
    Notice.update(shown_revision=revision, edited=now).where(
        (Notice.id == notice_id) & (Notice.shown_revision < revision)).execute()


def record_retry(notice_id: int, seconds: float, now: float, error: str) -> None:
    Notice.update(due=now + seconds, attempts=Notice.attempts + 1, claimed_until=None).where(
        Notice.id == notice_id).execute()
    log.debug("notice %d: %s; next try in %.0f s", notice_id, error, seconds)


def record_failed(notice_id: int, error: str) -> None:
    Notice.update(failed=error[:500], claimed_until=None).where(Notice.id == notice_id).execute()


def release(notice_id: int) -> None:
    Notice.update(claimed_until=None).where(Notice.id == notice_id).execute()


class Sender:
    """The outbox's one delivery loop in this process; `run` is safe to call often and from many places."""

    def __init__(self, render: Render, edit_every_s: float) -> None:
        self.render = render
        self.edit_every_s = edit_every_s
        self._running = asyncio.Lock()
        self._paused_until = 0.0
        self._dead_chats: set[int] = set()
        self._outage = False

    async def run(self, bot: Bot) -> None:
        """Send what is due, then bring edited incidents up to date; a run while another is busy does nothing."""
        if self._running.locked() or time.monotonic() < self._paused_until:
            return
        async with self._running:
            now = time.time()
            notices = await asyncio.to_thread(due, now)
            await self._deliver(bot, notices)
            if time.monotonic() >= self._paused_until:
                edits = await asyncio.to_thread(stale, time.time(), self.edit_every_s)
                await self._edit(bot, edits)

    async def _deliver(self, bot: Bot, notices: list[tuple[Notice, Incident, int | None]]) -> None:
        for notice, incident, reply_to in notices:
            if not await asyncio.to_thread(claim, notice.id, True):
                continue  # another process sends (or sent) this one
            if notice.kind == "alert":
                text, markup = await asyncio.to_thread(self.render, incident)
            else:
                text, markup = notice.text or "", None
            try:
                reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
                message = await bot.send_message(
                    notice.chat_id, text, parse_mode=ParseMode.HTML, reply_markup=markup, reply_parameters=reply,
                    read_timeout=SEND_TIMEOUT_S, write_timeout=SEND_TIMEOUT_S,
                )
            except RetryAfter as exc:
                await self._flood(exc, notice.id)
                return
            except (Forbidden, BadRequest) as exc:
                await asyncio.to_thread(record_failed, notice.id, exc.message)
                self._dead(notice.chat_id, exc)
                continue
            except TelegramError as exc:
                self._down(exc)
                wait = RETRY_S[min(notice.attempts, len(RETRY_S) - 1)]
                await asyncio.to_thread(record_retry, notice.id, wait, time.time(), exc.message)
                return
            except Exception as exc:  # a bug must cost one message a delay, not the whole outbox
                log.exception("sending notice %d failed", notice.id)
                wait = RETRY_S[min(notice.attempts, len(RETRY_S) - 1)]
                await asyncio.to_thread(record_retry, notice.id, wait, time.time(), repr(exc))
                continue
            self._up()
            await asyncio.to_thread(record_sent, notice.id, message.message_id, incident.revision, time.time())
            log.info("sent %s about incident %d (%s) to chat %d", notice.kind, incident.id, incident.device,
                     notice.chat_id)

    async def _edit(self, bot: Bot, edits: list[tuple[Notice, Incident]]) -> None:
        for notice, incident in edits:
            if not await asyncio.to_thread(claim, notice.id, False):
                continue
            text, markup = await asyncio.to_thread(self.render, incident)
            try:
                await bot.edit_message_text(text, notice.chat_id, notice.message_id, parse_mode=ParseMode.HTML,
                                            reply_markup=markup)
            except RetryAfter as exc:
                await self._flood(exc, notice.id)
                return
            except BadRequest as exc:
                if "not modified" not in exc.message.lower():
                    # The message is gone or cannot be edited: stop trying, the incident lives on in the database.
                    log.warning("cannot edit the message of incident %d in chat %d: %s", incident.id,
                                notice.chat_id, exc.message)
            except Forbidden as exc:
                self._dead(notice.chat_id, exc)
            except TelegramError as exc:
                self._down(exc)
                await asyncio.to_thread(release, notice.id)
                return
            await asyncio.to_thread(record_edit, notice.id, incident.revision, time.time())

    async def _flood(self, exc: RetryAfter, notice_id: int) -> None:
        seconds = retry_seconds(exc.retry_after)
        log.warning("Telegram asks to wait %.0f s (flood limit); the messages wait", seconds)
        self._paused_until = time.monotonic() + seconds
        await asyncio.to_thread(release, notice_id)

    def _dead(self, chat_id: int, exc: TelegramError) -> None:
        if chat_id not in self._dead_chats:
            self._dead_chats.add(chat_id)
            log.error("chat %d cannot receive messages (%s); its messages are dropped, other chats go on",
                      chat_id, exc.message)

    def _down(self, exc: TelegramError) -> None:
        if not self._outage:
            self._outage = True
            log.warning("Telegram did not take a message (%s); it stays queued and is retried", exc.message)

    def _up(self) -> None:
        if self._outage:
            self._outage = False
            log.info("Telegram takes messages again")

