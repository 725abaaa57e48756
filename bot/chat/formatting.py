"""The small words every text is made of: HTML that can be sent, times, spans and durations, counts, and metric
values with their usual ranges."""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING

from telegram.constants import MessageLimit

from agent.vocabulary import KNOWN_METRICS
from bot.pipeline.baselines import Usual
from schema.conditions import Condition, Severity, parse_key

if TYPE_CHECKING:
    from bot.db import Incident


def span(start: float, end: float) -> str:
    """A span of clock times, to the second when it is shorter than minutes alone would tell (10 min)."""
    shown = "%H:%M:%S" if end - start < 600 else "%H:%M"
    return f"{datetime.fromtimestamp(start, UTC):{shown}}–{datetime.fromtimestamp(end, UTC):{shown}} UTC"


def escape(text: str) -> str:
    """Text from outside (device and metric names, reasons, user names) as HTML that can be sent: a lone
    surrogate, which Telegram's UTF-8 cannot carry, becomes "?" instead of failing the whole reply."""
    return html.escape(text.encode("utf-8", "replace").decode("utf-8"))


def clip(text: str) -> str:
    """Telegram refuses messages longer than 4096 characters."""
    limit = MessageLimit.MAX_TEXT_LENGTH
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pre(rows: list[str], budget: int = 3500) -> str:
    """Rows as a <pre> block that fits in one message with room around it; cut rows are counted, not cut."""
    kept: list[str] = []
    size = 0
    for index, row in enumerate(rows):
        line = escape(row)
        if size + len(line) + 1 > budget:
            kept.append(f"… and {len(rows) - index} more")
            break
        kept.append(line)
        size += len(line) + 1
    return f"<pre>{chr(10).join(kept)}</pre>"


def when(ts: float, tz: tzinfo = UTC) -> str:
    """A sample time as people read it, in UTC or in the time zone given (BOT_TIMEZONE), which it names."""
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def ago(seconds: float) -> str:
    """A duration as people say it, to two units at most: 12 s, 5 min, 2 h 5 min, 3 d 4 h."""
    seconds = int(max(0.0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else f"{seconds} s"


def lasted(seconds: float) -> str:
    """How long something that is over lasted: to the second under an hour (1 min 55 s, not 1 min), else as ago()."""
    minutes, rest = divmod(int(max(0.0, seconds)), 60)
    if minutes and rest and minutes < 60:
        return f"{minutes} min {rest} s"
    return ago(seconds)


def plural(count: int, noun: str) -> str:
    """'1 machine', '2 machines', '1,000 machines'."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def metric_value(name: str, value: float, label: str | None = None) -> str:
    """One metric with its label (or the one given) and unit, e.g. 'CPU 97.5 %'."""
    known, unit = KNOWN_METRICS.get(name, (name, ""))
    label = known if label is None else label
    if unit == "s":  # a duration (uptime) reads as one: 15 h 10 min, not 54625 s
        return f"{label} {ago(value)}"
    if unit == "B/s":
        for prefix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if value >= size:
                return f"{label} {value / size:.1f} {prefix}B/s"
    shown = f"{value:.0f}" if abs(value) >= 1000 or value == int(value) else f"{value:.2f}".rstrip("0")
    return f"{label} {shown} {unit}".rstrip()


def number(value: float) -> str:
    """A value as people read it: 47, 0.35, 1.2."""
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"


def usual_range(name: str, usual: Usual | None) -> str:
    """A metric's usual range on its machine, e.g. '40-55 %'."""
    if usual is None:
        return "no usual range yet"
    unit = KNOWN_METRICS.get(name, (name, ""))[1]
    return f"{number(usual.low)}–{number(usual.high)} {unit}".rstrip()


def fullest(filesystems: Mapping[str, float] | None) -> str | None:
    """The mount point of the fullest filesystem (the one disk_percent is), or None without filesystems."""
    if not filesystems:
        return None
    return min(filesystems, key=lambda mount: (-filesystems[mount], mount))


def disk_label(mount: str) -> str:
    """'Disk /data'."""
    return f"Disk {mount}"


def top_processes(top: list | None) -> str:
    """'java 61 % (pid 4121), postgres 12 %': the top processes of one kind, the pid of the first."""
    shown = [f"{name} {number(percent)} %" + (f" (pid {pid})" if index == 0 else "")
             for index, (name, pid, percent) in enumerate(top or [])]
    return ", ".join(shown)


def percent(p: float | None) -> str:
    return "n/a" if p is None else f"{100 * p:.0f}%"


SEVERITY_ICONS = {Severity.CRITICAL: "🚨", Severity.WARNING: "🛠", Severity.INFO: "ℹ️"}


def severity_icon(severity: str) -> str:
    """The mark of a condition's alert by how bad it is (a warning's when the severity is not one we know)."""
    return SEVERITY_ICONS.get(Severity(severity) if severity in tuple(Severity) else Severity.WARNING, "🛠")


def condition_of(incident: Incident) -> tuple[Condition, str] | None:
    """A condition incident's condition and object (None: one of a condition this version no longer has)."""
    return parse_key(incident.detail.metric)


def described(incident: Incident) -> str:
    """'RAID array degraded (md0)', 'clock wrong': the condition of an incident and its object."""
    found = condition_of(incident)
    if found is None:
        return incident.detail.metric
    condition, obj = found
    return f"{condition.title} ({obj})" if obj else condition.title
