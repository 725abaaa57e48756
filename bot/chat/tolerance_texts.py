"""What the bot says about tolerances: what a ❌ taught a machine (per-machine tolerances, shown beside its
values and under its alerts), their Undo, the /tolerance command, and a wrong forecast held until its metric is
back in its usual range. The fleet's own words are in texts.py."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent.vocabulary import KNOWN_METRICS
from bot.chat.words import clip, escape, when
from bot.db import Tolerance
from ml.features import ZONES

# The words of the metrics a machine can tolerate, in messages and in /tolerance <device> reset <metric>.
TOLERANCE_WORDS = {"disk_percent": "disk", "mem_percent": "memory", "swap_percent": "swap",
                   "cpu_temp_c": "temperature", "load_1m": "load"}
TOLERANCE_USAGE = ("Usage: /tolerance <device> lists what a ❌ taught it; /tolerance <device> reset [metric] "
                   f"forgets it (metric: {', '.join(TOLERANCE_WORDS.values())}), e.g. /tolerance build1 reset disk")


def tolerance_word(metric: str) -> str:
    """'Disk', 'Memory', 'Load'."""
    return TOLERANCE_WORDS.get(metric, metric).capitalize()


def tolerance_value(metric: str, value: float) -> str:
    """'98.6 %', '97 °C', '3.9 per CPU'."""
    unit = "per CPU" if metric == "load_1m" else KNOWN_METRICS.get(metric, ("", ""))[1]
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


def tolerated_up_to(metric: str, value: float, tolerated: float, device: str) -> str:
    """'(tolerated up to 98.6 % on build1)' beside a value its machine tolerates, with its hard ceiling once the
    value is past it."""
    ceiling = ZONES[metric].ceiling
    past = f", past its hard ceiling of {tolerance_value(metric, ceiling)}" if ceiling and value >= ceiling else ""
    return f"(tolerated up to {tolerance_value(metric, tolerated)} on {device}{past})"


def parse_tolerance_metric(word: str) -> str | None:
    """The metric a word of /tolerance … reset names ('disk', 'Memory', 'disk_percent'), or None."""
    word = word.lower()
    return next((m for m, w in TOLERANCE_WORDS.items() if word in (w, m)), None)


def tolerance_lines(rows: list[Tolerance]) -> list[str]:
    """'• Disk up to 98.6 % (❌ by @bob, 2026-11-28 14:03:25 UTC; hard ceiling 99.5 %)' per tolerance."""
    return [f"• {tolerance_word(t.metric)} up to {tolerance_value(t.metric, t.value)} (❌ by {escape(t.user_name)}, "
            f"{when(t.updated)}; hard ceiling {tolerance_value(t.metric, ZONES[t.metric].ceiling or 0)})"
            for t in rows if t.metric in ZONES]


def tolerates(rows: list[Tolerance]) -> str:
    """Under /status <device>: what the machine tolerates, a line each; nothing when it tolerates nothing."""
    if not rows:
        return ""
    return "Tolerates (a ❌ taught it):\n" + "".join(f"{line}\n" for line in tolerance_lines(rows))


def tolerance_list(device: str, rows: list[Tolerance]) -> str:
    """/tolerance <device>."""
    if not rows:
        return (f"<b>{escape(device)}</b> tolerates nothing of its own: it alerts as every machine does. A ❌ on "
                "one of its alerts makes it tolerate what drove it.")
    return clip(f"<b>{escape(device)}</b> tolerates, from a ❌ on its alerts:\n" + "\n".join(tolerance_lines(rows))
                + f"\n/tolerance {escape(device)} reset [metric] forgets them.")


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


def forecast_held(device: str, what: str) -> str:
    """What the presser of ❌ Wrong forecast is told: no forecast of `what` ('disk', '/data') on that machine until
    the metric is back in its usual range."""
    return (f"Thanks: stored as a wrong forecast. No forecast of {what} "
            f"on {device} until it is back in its usual range.")
