"""What the bot says to teams: subscriptions by chat and topic, maintenance (mutes and recurring windows),
one message for many machines, and "slow down". The fleet's own words are in texts.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import tzinfo

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.chat import callbacks
from bot.chat.words import ago, clip, escape, metric_value, percent, plural, when
from bot.db import Incident, Mute, Notice, Subscription
from schema.domain import PATTERN_RE, Kind, Reply, State, Window, matches

MAX_PATTERNS = 10  # in one command
SHOWN_NAMES = 20  # a group message names this many machines, then "and N more"
MAX_BUTTONS = 60  # a group message has a button per machine, up to this many (Telegram allows 100)
BUTTONS_PER_ROW = 3

# --- subscriptions -----------------------------------------------------------------------------------------

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


def no_match(pattern: str) -> str:
    return f"No machine matches {pattern}."


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


# --- maintenance -------------------------------------------------------------------------------------------

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


# --- one message for many machines -------------------------------------------------------------------------

_HEADS = {
    Kind.STRESSED: "🔴 {} stressed", Kind.SILENT: "⚪ {} stopped reporting", Kind.FORECAST: "📈 {} heading for full",
    Reply.RECOVERED: "✅ {} recovered", Reply.REPORTING_AGAIN: "✅ {} reporting again",
    Reply.REMINDER: "⏰ {} still need attention (nobody acknowledged)",
}


def _line(incident: Incident, change: str, first: float) -> str:
    """One member: a stressed machine with its P(stressed) and main driver, a silent one with when it was last
    seen (when later than the group's first), and how it ended if it did."""
    device = f"<b>{escape(incident.device)}</b>"
    if change == Kind.STRESSED:
        driver = incident.detail.drivers[0] if incident.detail.drivers else None
        shown = incident.detail.metrics if incident.state == State.OPEN else incident.detail.peak
        what = f" · {escape(metric_value(driver, shown[driver]))}" if driver and driver in shown else ""
        line = f"• {device}: P {percent(incident.peak_p)}{what}"
    elif change == Kind.SILENT and incident.opened_ts > first + 60:
        line = f"• {device}: last seen {when(incident.opened_ts)}"
    elif change == Kind.FORECAST:
        line = f"• {device}: {escape(incident.detail.metric)}"
    else:
        line = f"• {device}"
    if incident.state == State.RESOLVED and change in (Kind.STRESSED, Kind.SILENT, Kind.FORECAST):
        line += " ✅ " + ("reporting again" if change == Kind.SILENT else "recovered")
    elif incident.state == State.FALSE_ALARM:
        line += " ❌ false alarm"
    return line


def digest(change: str, members: list[tuple[Notice, Incident]]) -> tuple[str, InlineKeyboardMarkup | None]:
    """A group's message: how many, the first names (and how many more), and for stressed machines each one's
    P(stressed) and main driver; a button per machine sends its own alert, with its buttons."""
    incidents = [incident for _, incident in members]
    head = f"<b>{_HEADS.get(change, '{} ' + change).format(plural(len(incidents), 'machine'))}</b>"
    first = min((i.opened_ts for i in incidents), default=0.0)
    if change in tuple(Kind):  # an outage: since when; a recovery or a reminder: when
        head += f" (since {when(first)})"
    else:
        head += f" ({when(max((i.resolved_ts or i.updated for i in incidents), default=0.0))})"
    lines = [_line(i, change, first) for i in incidents[:SHOWN_NAMES]]
    if len(incidents) > SHOWN_NAMES:
        lines.append(f"… and {len(incidents) - SHOWN_NAMES} more")
    text = f"{head}\n" + "\n".join(lines)
    buttons = [InlineKeyboardButton(f"{i.device} ›", callback_data=callbacks.expand(i.id)) for i in incidents
               if change in (Kind.STRESSED, Kind.FORECAST) and i.state == State.OPEN][:MAX_BUTTONS]
    if buttons:
        text += "\n\nA machine's button sends its own alert, with ✅/❌ and 🔕."
    rows = [buttons[i:i + BUTTONS_PER_ROW] for i in range(0, len(buttons), BUTTONS_PER_ROW)]
    return clip(text), InlineKeyboardMarkup(rows) if rows else None


def expanded(device: str, already: bool) -> str:
    """The answer to a machine's button on a group message."""
    return f"{device}'s alert is already in this chat." if already else f"Sending {device}'s own alert…"


# --- floods --------------------------------------------------------------------------------------------------

SLOW_DOWN = ("⏳ Slow down: too many commands in a short time. I ignore your commands for a minute; "
             "alerts still come.")
