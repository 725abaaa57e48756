"""Tolerances: what a ❌ taught one machine (shown beside its values and under its alerts), its Undo, the
/tolerance command, and a wrong forecast held until its metric is back in its usual range."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping

from telegram import Update
from telegram.constants import ParseMode
from telegram.ext import BaseHandler, CommandHandler, ContextTypes

from agent.vocabulary import DEVICE_RE, KNOWN_METRICS
from bot.chat import common
from bot.chat.formatting import clip, disk_label, escape, when
from bot.db import Expected, Tolerance, incidents, tolerances
from bot.pipeline import tolerating
from ml.features import ZONES
from schema.conditions import parse_key
from schema.domain import FILESYSTEM

log = logging.getLogger(__name__)


# The words of the metrics a machine can tolerate, in messages and in /tolerance <device> reset <metric>.
TOLERANCE_WORDS = {"disk_percent": "disk", "mem_percent": "memory", "swap_percent": "swap",
                   "cpu_temp_c": "temperature", "load_1m": "load"}


TOLERANCE_USAGE = ("Usage: /tolerance <device> lists what a ❌ taught it; /tolerance <device> reset [metric] "
                   f"forgets it (metric: {', '.join(TOLERANCE_WORDS.values())}), e.g. /tolerance build1 reset disk")


def tolerance_word(metric: str) -> str:
    """'Disk', 'Memory', 'Load'; a condition's ('RAID array degraded (md0)')."""
    found = parse_key(metric)
    if found is not None:
        condition, obj = found
        return f"{condition.title} ({obj})" if obj else condition.title
    if metric.startswith(FILESYSTEM):
        return disk_label(metric.removeprefix(FILESYSTEM))
    return TOLERANCE_WORDS.get(metric, metric).capitalize()


def tolerance_value(metric: str, value: float) -> str:
    """'98.6 %', '97 °C', '3.9 per CPU'."""
    unit = "per CPU" if metric == "load_1m" else KNOWN_METRICS.get(tolerating.metric_of(metric), ("", ""))[1]
    shown = f"{value:.0f}" if value == int(value) else f"{value:.2f}".rstrip("0")
    return f"{shown} {unit}".rstrip()


def _and(words: Iterable[str]) -> str:
    """'Disk', 'Disk and Swap', 'Disk, Memory and Swap'."""
    items = list(words)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def tolerated_now(device: str, tolerated: Mapping[str, float], by: str = "") -> str:
    """'Disk up to 98.6 % is now normal for build1 (❌ by @bob)'."""
    parts = _and(f"{tolerance_word(m)} up to {tolerance_value(m, v)}" for m, v in sorted(tolerated.items()))
    verb = "is" if len(tolerated) == 1 else "are"
    return f"{parts} {verb} now normal for {device}" + (f" (❌ by {by})" if by else "")


def not_tolerated(beyond: Mapping[str, float]) -> str:
    """'Not tolerated: Memory at 99.7 %, past its hard ceiling of 99.5 %': what a ❌ could not make normal."""
    return "Not tolerated, past its hard ceiling: " + _and(
        f"{tolerance_word(m)} at {tolerance_value(m, v)} "
        f"(ceiling {tolerance_value(m, ZONES[tolerating.metric_of(m)].ceiling or 0)})"
        for m, v in sorted(beyond.items()))


def tolerated_up_to(metric: str, value: float, tolerated: float, device: str) -> str:
    """'(tolerated up to 98.6 % on build1)' beside a value its machine tolerates, with its hard ceiling once the
    value is past it."""
    ceiling = ZONES[tolerating.metric_of(metric)].ceiling
    past = f", past its hard ceiling of {tolerance_value(metric, ceiling)}" if ceiling and value >= ceiling else ""
    return f"(tolerated up to {tolerance_value(metric, tolerated)} on {device}{past})"


def parse_tolerance_metric(word: str) -> str | None:
    """The metric a word of /tolerance … reset names ('disk', 'Memory', 'disk_percent'), or None."""
    word = word.lower()
    return next((m for m, w in TOLERANCE_WORDS.items() if word in (w, m)), None)


def tolerance_lines(rows: list[Tolerance]) -> list[str]:
    """'• Disk up to 98.6 % (❌ by @bob, 2026-11-28 14:03:25 UTC; hard ceiling 99.5 %)' per tolerance."""
    return [f"• {escape(tolerance_word(t.metric))} up to {tolerance_value(t.metric, t.value)} (❌ by "
            f"{escape(t.user_name)}, {when(t.updated)}; hard ceiling "
            f"{tolerance_value(t.metric, ZONES[tolerating.metric_of(t.metric)].ceiling or 0)})"
            for t in rows if tolerating.metric_of(t.metric) in ZONES]


def expected_lines(rows: list[Expected]) -> list[str]:
    """'• RAID array degraded (md0) (❌ by @bob, 2026-11-28 14:03:25 UTC)' per expected condition."""
    return [f"• {escape(tolerance_word(e.metric))} (❌ by {escape(e.user_name)}, {when(e.created)})" for e in rows]


def tolerates(rows: list[Tolerance], expected: list[Expected] | None = None) -> str:
    """Under /status <device>: what the machine tolerates and the conditions expected on it, a line each; nothing
    when there are none."""
    text = "Tolerates (a ❌ taught it):\n" + "".join(f"{line}\n" for line in tolerance_lines(rows)) if rows else ""
    if expected:
        text += "Expected here (a ❌ said so):\n" + "".join(f"{line}\n" for line in expected_lines(expected))
    return text


def tolerance_list(device: str, rows: list[Tolerance], expected: list[Expected] | None = None) -> str:
    """/tolerance <device>."""
    if not rows and not expected:
        return (f"<b>{escape(device)}</b> tolerates nothing of its own: it alerts as every machine does. A ❌ on "
                "one of its alerts makes it tolerate what drove it.")
    text = f"<b>{escape(device)}</b> tolerates, from a ❌ on its alerts:\n" + "\n".join(tolerance_lines(rows)) \
        if rows else f"<b>{escape(device)}</b> tolerates no metric of its own."
    if expected:
        text += "\nExpected here, from a ❌ on its alerts:\n" + "\n".join(expected_lines(expected))
    return clip(text + f"\n/tolerance {escape(device)} reset [metric] forgets them.")


def tolerance_reset(device: str, removed: list[str]) -> str:
    if not removed:
        return f"<b>{escape(device)}</b> had no such tolerance. /tolerance {escape(device)} lists them."
    return (f"↩️ <b>{escape(device)}</b> no longer tolerates {escape(_and(tolerance_word(m) for m in removed))}: "
            "from its next sample it alerts as every machine does.")


def tolerance_refused(device: str, setters: list[str], user_id: int) -> str:
    """Someone who is neither an admin nor who set them asked to reset a machine's tolerances."""
    return (f"Only admins or whoever set them can reset these tolerances of <b>{escape(device)}</b> (set by "
            f"{escape(', '.join(setters))}). Your user id is <code>{user_id}</code>.")


def undone(device: str, removed: list[str] | None) -> str:
    """What the presser of Undo is told."""
    if removed is None:
        return "Only admins or whoever pressed ❌ can undo this."
    if not removed:
        return f"Nothing left to undo: /tolerance {device} shows what {device} tolerates now."
    return f"Undone: {device} alerts on {_and(tolerance_word(m) for m in removed)} as every machine does."


def undone_by(device: str, by: str, metrics: Iterable[str]) -> str:
    """Under the alert whose ❌ was undone: '↩️ Undone by @bob: build1 alerts on Disk as every machine does.'"""
    return (f"↩️ Undone by {escape(by)}: {escape(device)} alerts on "
            f"{escape(_and(tolerance_word(m) for m in sorted(metrics)))} as every machine does.")


def expected_now(device: str, what: str, by: str) -> str:
    """Under a condition's alert someone ❌'d: 'RAID array degraded (md0) is expected on nas1 (❌ by @bob): it
    alerts no more there.'"""
    return f"{what} is expected on {device} (❌ by {by}): it alerts no more there"


def expected_undone_by(device: str, what: str, by: str) -> str:
    """Under a condition's alert whose ❌ was undone."""
    return f"↩️ Undone by {escape(by)}: {escape(device)} alerts on {escape(what)} again."


def forecast_held(device: str, what: str) -> str:
    """What the presser of ❌ Wrong forecast is told: no forecast of `what` ('disk', '/data') on that machine until
    the metric is back in its usual range."""
    return (f"Thanks: stored as a wrong forecast. No forecast of {what} "
            f"on {device} until it is back in its usual range.")


async def undo(update: Update, context: ContextTypes.DEFAULT_TYPE, incident_id: int, device: str) -> None:
    """↩️ Undo on an alert a ❌ closed: the tolerances that ❌ set are gone (whoever set them, or an admin)."""
    query = update.callback_query
    user_id, name = common.who(update)
    admin = user_id in common.settings_of(context).admin_user_ids
    _incident, removed = await asyncio.to_thread(incidents.undo_tolerance, incident_id, user_id, name, admin,
                                                 time.time())
    await query.answer(undone(device, removed), show_alert=removed is None)
    if removed:
        await asyncio.to_thread(common.tolerances_of(context).refresh)
        context.application.create_task(common.sender_of(context).run(context.bot), name="send")


async def tolerance_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/tolerance <device> [reset [metric]]: what a ❌ taught a machine; reset forgets it (admins, or whoever set
    it)."""
    args = context.args or []
    metric = parse_tolerance_metric(args[2]) if len(args) == 3 else None
    if (not 1 <= len(args) <= 3 or not DEVICE_RE.fullmatch(args[0]) or (len(args) > 1 and args[1].lower() != "reset")
            or (len(args) == 3 and metric is None)):
        await update.effective_message.reply_text(TOLERANCE_USAGE)
        return
    device = args[0]
    rows, expected = await asyncio.to_thread(lambda: (tolerances.tolerances(device), tolerances.expected(device)))
    if len(args) == 1:
        await update.effective_message.reply_text(tolerance_list(device, rows, expected),
                                                  parse_mode=ParseMode.HTML)
        return
    chosen: list[Tolerance | Expected] = [row for row in rows
                                          if metric is None or tolerating.metric_of(row.metric) == metric]
    if metric is None:  # every tolerance, and every condition expected here
        chosen += expected
    user_id, name = common.who(update)
    others = sorted({row.user_name for row in chosen if row.user_id != user_id})
    if others and user_id not in common.settings_of(context).admin_user_ids:
        log.warning("refused /tolerance %s reset for user %d: set by %s", device, user_id, others)
        await update.effective_message.reply_text(tolerance_refused(device, others, user_id),
                                                  parse_mode=ParseMode.HTML)
        return
    removed = await asyncio.to_thread(tolerances.untolerate, device, [row.metric for row in chosen
                                                                      if isinstance(row, Tolerance)])
    if metric is None:
        removed += await asyncio.to_thread(tolerances.unexpect, device)
    log.info("%s reset the tolerances %s of %s", name, removed, device)
    await asyncio.to_thread(common.tolerances_of(context).refresh)
    await update.effective_message.reply_text(tolerance_reset(device, removed),
                                              parse_mode=ParseMode.HTML)


def handlers() -> list[BaseHandler]:
    return [CommandHandler("tolerance", tolerance_command)]
