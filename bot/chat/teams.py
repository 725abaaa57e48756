"""Teams: subscriptions by chat and forum topic (/subscribe, /unsubscribe, /subscriptions) and maintenance (/mute,
/muted, /unmute), with their words."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from datetime import tzinfo

from telegram import Update
from telegram.constants import ParseMode
from telegram.ext import BaseHandler, CommandHandler, ContextTypes

from bot import db
from bot.chat import common
from bot.chat.formatting import ago, clip, escape, plural, when
from bot.db import Mute, Subscription
from schema.domain import PATTERN_RE, Window, matches

log = logging.getLogger(__name__)


def _device_names() -> list[str]:
    return [d.name for d in db.devices()]


MAX_PATTERNS = 10  # in one command
SUBSCRIBE_USAGE = ("Usage: /subscribe <pattern>…, e.g. /subscribe web* db1 (shell-style: * any characters, ? one). "
                   "Sent in a forum topic, the subscription is that topic's.")
UNSUBSCRIBE_USAGE = "Usage: /unsubscribe [pattern…]; without a pattern it removes all of this topic's."


def patterns(args: list[str]) -> list[str] | None:
    """The patterns of /subscribe, /unsubscribe: 1 to MAX_PATTERNS of them, each a pattern; else None."""
    if not 1 <= len(args) <= MAX_PATTERNS or not all(PATTERN_RE.fullmatch(a) for a in args):
        return None
    return args


def _where(thread_id: int | None) -> str:
    return f"topic {thread_id}" if thread_id else "this chat's general topic"


def unmatched(pattern_list: list[str], known: list[str]) -> str:
    """A warning for patterns no machine matches yet (they are kept all the same)."""
    lonely = [p for p in pattern_list if not any(matches(p, d) for d in known)]
    return "".join(f"\n⚠️ No machine matches {escape(p)} yet." for p in lonely)


def subscribed(added: list[str], asked: list[str], thread_id: int | None) -> str:
    already = [p for p in asked if p not in added]
    text = f"📬 {_where(thread_id).capitalize()} now gets the messages about: {escape(', '.join(asked))}."
    if already:
        text += f" (Already: {escape(', '.join(already))}.)"
    return text + ("\nOnce a chat has a subscription, it gets only what its subscriptions match; "
                   "/subscriptions lists them.")


def unsubscribed(count: int, left: int, thread_id: int | None) -> str:
    if not count:
        return f"{_where(thread_id).capitalize()} had no such subscription."
    text = f"📭 Removed {plural(count, 'subscription')} from {_where(thread_id)}."
    if not left:
        text += " This chat has none left: it gets every message again, in its general topic."
    return text


def subscription_list(rows: list[Subscription]) -> str:
    if not rows:
        return "This chat has no subscription: it gets every message, in its general topic. /subscribe web* …"
    by_topic: dict[int, list[Subscription]] = {}
    for row in rows:
        by_topic.setdefault(row.thread_id, []).append(row)
    lines = [f"<b>{_where(thread).capitalize()}</b>: " + ", ".join(
        f"{escape(r.pattern)} ({escape(r.user_name)})" for r in subs) for thread, subs in by_topic.items()]
    return clip(f"<b>Subscriptions</b> ({len(rows)})\n" + "\n".join(lines))


DURATION_RE = re.compile(r"(\d{1,5})(s|m|min|h|d)", re.IGNORECASE)
DURATION_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
DEFAULT_MUTE_S = 3600
MAX_MUTE_S = 30 * 86400
MAX_MUTES = 100
MUTE_USAGE = ("Usage: /mute <pattern> [duration] [reason], e.g. /mute web* 2h deploy (duration like 30m, 2h, 3d; "
              "default 1 h, at most 30 d), or a recurring window: /mute <pattern> <days> <hh:mm-hh:mm> [reason], "
              "e.g. /mute db1 daily 02:00-03:00 backups, /mute db* sun 01:00-05:00 (days: daily, weekdays, "
              "weekends, mon … sun, mon,wed or mon-fri)")
UNMUTE_USAGE = "Usage: /unmute <pattern>, e.g. /unmute web*"
TOO_MANY_MUTES = f"There are already {MAX_MUTES} mutes and windows: /unmute some first."


@dataclass(frozen=True)
class MuteRequest:
    pattern: str
    seconds: float | None  # a one-off mute
    window: Window | None  # a recurring one
    reason: str


def parse_mute(args: list[str]) -> MuteRequest | str:
    """What /mute asks for, or the usage line (with what is wrong) when its arguments make no sense."""
    if not args or not PATTERN_RE.fullmatch(args[0]):
        return MUTE_USAGE
    rest = args[1:]
    if len(rest) >= 2 and re.fullmatch(r"[\d:]+-[\d:]+", rest[1]):
        try:
            window = Window.parse(rest[0], rest[1])
        except ValueError as exc:
            return f"{exc}.\n{MUTE_USAGE}"
        return MuteRequest(args[0], None, window, _reason(rest[2:]))
    seconds = float(DEFAULT_MUTE_S)
    if rest and (match := DURATION_RE.fullmatch(rest[0])):
        seconds, rest = float(int(match[1]) * DURATION_S[match[2].lower()]), rest[1:]
    elif rest and (rest[0][:1].isdigit() or rest[0].lower() in ("daily", "weekdays", "weekends")):
        return MUTE_USAGE  # "2 hours", "1.5h", "daily" without hours: not a reason
    if not 0 < seconds <= MAX_MUTE_S:
        return MUTE_USAGE
    return MuteRequest(args[0], seconds, None, _reason(rest))


def _reason(words: list[str]) -> str:
    return " ".join(words)[:200] or "no reason given"


def muted_reply(request: MuteRequest, until: float | None, user_name: str, tz: tzinfo, matching: int) -> str:
    who = f"by {escape(user_name)}: {escape(request.reason)}"
    if request.window is not None:
        text = (f"🔁 <b>{escape(request.pattern)}</b> is muted {escape(request.window.describe())} ({tz}), {who}.\n"
                "In the window their samples are still stored and predicted; a machine still stressed when it "
                "ends alerts then.")
    else:
        text = (f"🔕 <b>{escape(request.pattern)}</b> is muted for {ago(request.seconds or 0)}, "
                f"until {when(until or 0)}, {who}.\nTheir samples are still stored and predicted.")
    text += f" /unmute {escape(request.pattern)} ends it."
    if not matching:
        text += f"\n⚠️ No machine matches {escape(request.pattern)} yet."
    return text


def mutes(rows: list[Mute], now: float, tz: tzinfo) -> str:
    """/muted: who muted what, until when or in which window, and why."""
    if not rows:
        return "Nothing is muted."
    lines = []
    for m in rows:
        who = f"by {escape(m.user_name)} at {when(m.created)}: {escape(m.reason)}"
        if m.until is not None:
            lines.append(f"🔕 <b>{escape(m.pattern)}</b> until {when(m.until)}, {who}")
        else:
            window = Window(m.days, m.start, m.end)
            now_or_next = "in force now" if window.holds(now, tz) else f"next {when(window.next_start(now, tz))}"
            lines.append(f"🔁 <b>{escape(m.pattern)}</b> {escape(window.describe())} ({tz}; {now_or_next}), {who}")
    return clip(f"<b>Mutes and windows</b> ({len(rows)})\n" + "\n".join(lines))


def unmuted(pattern: str, ended: int) -> str:
    """The reply to /unmute."""
    if ended:
        return (f"🔔 {escape(pattern)} is no longer muted ({plural(ended, 'mute')} ended): the next sample of a "
                "matching machine can alert again.")
    return f"{escape(pattern)} has no mute of that pattern. /muted lists them."


async def mute_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/mute <pattern> [duration] [reason] or /mute <pattern> <days> <hh:mm-hh:mm> [reason]: no incidents for
    machines under maintenance, once or in a recurring window."""
    tz = common.settings_of(context).timezone
    request = parse_mute(context.args or [])
    if isinstance(request, str):
        await update.effective_message.reply_text(request)
        return
    if await asyncio.to_thread(db.count_mutes) >= MAX_MUTES:
        await update.effective_message.reply_text(TOO_MANY_MUTES)
        return
    user_id, name = common.who(update)
    until = time.time() + request.seconds if request.seconds is not None else None
    await asyncio.to_thread(db.mute, request.pattern, until, request.window, request.reason, user_id, name)
    known = await asyncio.to_thread(_device_names)
    log.info("%s muted %s %s: %s", name, request.pattern,
             request.window.describe() if request.window else f"until {when(until or 0)}", request.reason)
    matching = sum(matches(request.pattern, d) for d in known)
    await update.effective_message.reply_text(muted_reply(request, until, name, tz, matching),
                                              parse_mode=ParseMode.HTML)


async def unmute_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/unmute <pattern>: its mutes and windows end; alerts again from the next sample."""
    args = context.args or []
    if len(args) != 1 or not PATTERN_RE.fullmatch(args[0]):
        await update.effective_message.reply_text(UNMUTE_USAGE)
        return
    ended = await asyncio.to_thread(db.unmute, args[0])
    await update.effective_message.reply_text(unmuted(args[0], ended), parse_mode=ParseMode.HTML)


async def muted_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/muted: the mutes and windows, by whom, until when or when, and why."""
    now = time.time()
    rows = await asyncio.to_thread(db.mutes, now)
    await update.effective_message.reply_text(mutes(rows, now, common.settings_of(context).timezone),
                                              parse_mode=ParseMode.HTML)


async def subscribe_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/subscribe <pattern>…: this chat's topic gets the messages about the machines matching."""
    asked = patterns(context.args or [])
    if asked is None:
        await update.effective_message.reply_text(SUBSCRIBE_USAGE)
        return
    chat, thread = update.effective_chat.id, common.thread_of(update)
    user_id, name = common.who(update)
    try:
        added = await asyncio.to_thread(db.subscribe, chat, thread, asked, user_id, name)
    except ValueError as exc:
        await update.effective_message.reply_text(f"{exc}: /unsubscribe some first.")
        return
    log.info("%s subscribed chat %d topic %s to %s", name, chat, thread, ", ".join(added) or "nothing new")
    known = await asyncio.to_thread(_device_names)
    text = subscribed(added, asked, thread) + unmatched(asked, known)
    await update.effective_message.reply_text(text, parse_mode=ParseMode.HTML)


async def unsubscribe_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/unsubscribe [pattern…]: remove some (or all) of this topic's subscriptions."""
    args = context.args or []
    asked = patterns(args) if args else []
    if asked is None:
        await update.effective_message.reply_text(UNSUBSCRIBE_USAGE)
        return
    chat, thread = update.effective_chat.id, common.thread_of(update)
    removed = await asyncio.to_thread(db.unsubscribe, chat, thread, asked)
    left = len(await asyncio.to_thread(db.subscriptions, chat))
    await update.effective_message.reply_text(unsubscribed(removed, left, thread), parse_mode=ParseMode.HTML)


async def subscriptions_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/subscriptions: this chat's subscriptions, by topic."""
    rows = await asyncio.to_thread(db.subscriptions, update.effective_chat.id)
    await update.effective_message.reply_text(subscription_list(rows), parse_mode=ParseMode.HTML)


def handlers() -> list[BaseHandler]:
    return [CommandHandler(name, command) for name, command in (
        ("mute", mute_command), ("unmute", unmute_command), ("muted", muted_command),
        ("subscribe", subscribe_command), ("unsubscribe", unsubscribe_command),
        ("subscriptions", subscriptions_command))]
