"""The values an incident and its messages take, as types: what is stored is what the code compares."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum
from fnmatch import fnmatchcase


class Kind(StrEnum):
    """What an incident is about."""

    STRESSED = "stressed"
    SILENT = "silent"
    FORECAST = "forecast"
    CONDITION = "condition"  # one of the catalogue's (schema/conditions.py), of one object of the machine


class State(StrEnum):
    """Where an incident stands: open until it resolves, or until a person calls it a false alarm."""

    OPEN = "open"
    RESOLVED = "resolved"
    FALSE_ALARM = "false alarm"


class NoticeKind(StrEnum):
    """An outbox row: the incident's own message (edited while it lasts), or a short reply to it."""

    ALERT = "alert"
    REPLY = "reply"


@dataclass
class IncidentDetail:
    """What an incident's message shows besides its columns.

    A stressed incident: the metrics that drove it (`drivers`), the model's metrics now (`metrics`) and at its
    worst (`peak`), and the sample's filesystems and top processes now and at its worst, where it has them. A
    forecast: the metric (`disk:<mount point>` for a filesystem) and where its trend stood (`ts`, `level`,
    `slope_per_h`, `eta_s`). A ❌ on a stressed incident leaves the tolerances it set (`tolerated`, metric ->
    value) and, once someone pressed Undo, who (`undone_by`). A condition: its metric (`cond:<name>:<object>`),
    what its alert says of the object now (`evidence`), how bad it is (`severity`), when it was last seen to hold
    (`ts`), who made it expected on its machine with ❌ (`expected_by`) and who undid that (`undone_by`). Stored as
    one flat JSON object (`to_json`), read back by `from_json`: the one writer and the one reader; JSON written
    before a field existed reads as that field's default.
    """

    drivers: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)
    filesystems: dict[str, float] = field(default_factory=dict)  # percent used by mount point, now
    peak_filesystems: dict[str, float] = field(default_factory=dict)
    processes: dict[str, list] = field(default_factory=dict)  # "cpu"/"memory" -> [[name, pid, percent]], now
    peak_processes: dict[str, list] = field(default_factory=dict)
    metric: str = ""
    ts: float | None = None
    level: float | None = None
    slope_per_h: float | None = None
    eta_s: float | None = None
    tolerated: dict[str, float] = field(default_factory=dict)
    undone_by: str = ""
    evidence: str = ""
    severity: str = ""
    expected_by: str = ""  # a ❌ on a condition: it is expected on this machine, said by whom
    # Any incident: who pressed 👀 On it and when, and each escalation step taken ([when, to whom]).
    taken_by: str = ""
    taken_at: float | None = None
    escalated: list[list] = field(default_factory=list)
    # Dependencies: a parent's incident names the machines behind it that went silent during it (`behind`), and
    # those still silent when it ended (`still_silent`); a child's silence names its parent's incident (`parent`,
    # `parent_id`) and sends nothing of its own until it is `released`.
    behind: list[str] = field(default_factory=list)
    still_silent: list[str] = field(default_factory=list)
    parent: str = ""
    parent_id: int | None = None
    released: bool = False

    def to_json(self) -> str:
        if self.evidence:
            stored: dict[str, object] = {name: getattr(self, name) for name in (
                "metric", "ts", "evidence", "severity", "expected_by", "undone_by") if getattr(self, name)}
        elif self.metric:
            stored = {"metric": self.metric, "ts": self.ts, "level": self.level, "slope_per_h": self.slope_per_h,
                      "eta_s": self.eta_s}
        elif self.drivers or self.metrics or self.peak:
            stored = {"drivers": self.drivers, "metrics": self.metrics, "peak": self.peak}
            for name in ("filesystems", "peak_filesystems", "processes", "peak_processes", "tolerated", "undone_by"):
                if value := getattr(self, name):  # left out when empty: a machine without them reads as before
                    stored[name] = value
        else:
            stored = {}
        for name in _ANY_KIND:
            if value := getattr(self, name):
                stored[name] = value
        return json.dumps(stored)

    def renewed(self, new: IncidentDetail) -> IncidentDetail:
        """`new` (a new worst moment, a new trend) with what people and the watch added to this one: who took it,
        its escalation steps, the machines behind it."""
        return replace(new, **{name: getattr(self, name) for name in _ANY_KIND})

    @classmethod
    def from_json(cls, text: str | None) -> IncidentDetail:
        known = {name: value for name, value in json.loads(text or "{}").items() if name in _FIELDS}
        return cls(**known)


_FIELDS = frozenset(IncidentDetail.__dataclass_fields__)
_ANY_KIND = ("taken_by", "taken_at", "escalated", "behind", "still_silent", "parent", "parent_id", "released")

FILESYSTEM = "disk:"  # the metric of a filesystem's forecast is "disk:<mount point>"
INODES = "inodes:"  # the metric of a forecast of a filesystem's inodes is "inodes:<mount point>"
METRIC_KEY_CHARS = 32  # Incident.metric's column


def metric_key(metric: str) -> str:
    """An incident's metric as its column holds it: at most METRIC_KEY_CHARS characters. A longer one (a
    filesystem's deep mount point) is cut and told apart from others by a digest of the whole; the whole
    metric is in the incident's detail."""
    if len(metric) <= METRIC_KEY_CHARS:
        return metric
    return metric[:15] + "~" + hashlib.sha256(metric.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class Action(StrEnum):
    """A button on an incident's message (the last part of its callback data)."""

    CORRECT = "ok"
    WRONG_PREDICTION = "no"
    SNOOZE_1H = "s1"
    SNOOZE_8H = "s8"
    CHART = "chart"
    RIGHT_FORECAST = "right"
    WRONG_FORECAST = "wrong"
    UNDO_TOLERANCE = "undo"  # on a stressed incident a ❌ turned into tolerances, or a condition made expected
    EXPECTED = "x"  # ❌ on a condition: expected on this machine
    ON_IT = "on"  # 👀 On it: someone takes it; no more reminders or escalation, its verdict buttons stay
    REPORT = "report"  # 📄 on a finished incident: its post-mortem


SNOOZE_HOURS = {Action.SNOOZE_1H: 1, Action.SNOOZE_8H: 8}
ACTIONS_OF = {  # the buttons each kind of incident has
    Kind.STRESSED: {Action.CORRECT, Action.WRONG_PREDICTION, Action.SNOOZE_1H, Action.SNOOZE_8H, Action.CHART,
                    Action.UNDO_TOLERANCE, Action.ON_IT, Action.REPORT},
    Kind.FORECAST: {Action.RIGHT_FORECAST, Action.WRONG_FORECAST, Action.SNOOZE_1H, Action.SNOOZE_8H, Action.CHART,
                    Action.ON_IT, Action.REPORT},
    Kind.SILENT: {Action.SNOOZE_1H, Action.SNOOZE_8H, Action.ON_IT, Action.REPORT},
    Kind.CONDITION: {Action.CORRECT, Action.EXPECTED, Action.SNOOZE_1H, Action.SNOOZE_8H, Action.CHART,
                     Action.UNDO_TOLERANCE, Action.ON_IT, Action.REPORT},
}


class Reply(StrEnum):
    """A short reply to an incident's message: a machine reporting again, recovered, or a reminder."""

    REPORTING_AGAIN = "reporting again"
    RECOVERED = "recovered"
    REMINDER = "reminder"
    ESCALATED = "escalated"  # nobody answered: someone is called by name (one message for all of a chat's incidents)


# A pattern of device names: a shell-style glob (* ? [...]) over the characters of a device id.
PATTERN_RE = re.compile(r"[A-Za-z0-9._\-*?\[\]!]{1,64}")


def matches(pattern: str, device: str) -> bool:
    """Whether a device name matches a pattern (case-sensitive, as device ids are)."""
    return fnmatchcase(device, pattern)


class Muting:
    """The patterns muted at one moment; `device in muting` says whether a device is muted."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = patterns
        self._known: dict[str, bool] = {}

    def __contains__(self, device: object) -> bool:
        if not self.patterns or not isinstance(device, str):
            return False
        if device not in self._known:
            self._known[device] = any(fnmatchcase(device, p) for p in self.patterns)
        return self._known[device]


DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_SETS = {"daily": 0b1111111, "weekdays": 0b0011111, "weekends": 0b1100000}
_TIME_RANGE = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)-([01]?\d|2[0-3]|24):([0-5]\d)")


@dataclass(frozen=True)
class Window:
    """A recurring maintenance window: on `days` (bit 0 Monday) from minute `start` to minute `end` of the day,
    past midnight into the next day when end <= start."""

    days: int
    start: int
    end: int

    @classmethod
    def parse(cls, days: str, hours: str) -> Window:
        """From "daily" / "weekdays" / "weekends" / "sun" / "mon,wed" / "mon-fri" and "02:00-03:00"; raises
        ValueError saying what is wrong."""
        bits = DAY_SETS.get(days.lower())
        if bits is None:
            bits = 0
            for part in days.lower().split(","):
                first, _, last = part.partition("-")
                if first not in DAY_NAMES or (last and last not in DAY_NAMES):
                    raise ValueError(f"{days[:20]!r} is not a day: daily, weekdays, weekends, mon … sun, "
                                     "mon,wed or mon-fri")
                a, b = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
                for day in range(a, a + (b - a) % 7 + 1):
                    bits |= 1 << (day % 7)
        found = _TIME_RANGE.fullmatch(hours)
        if found is None:
            raise ValueError(f"{hours[:20]!r} is not a time range such as 02:00-03:30")
        h1, m1, h2, m2 = map(int, found.groups())
        start, end = h1 * 60 + m1, min(h2 * 60 + m2, 24 * 60)
        if start == end:
            raise ValueError("the window is empty: its start and end are the same")
        return cls(bits, start, end % (24 * 60) if end == 24 * 60 and start else end)

    def holds(self, t: float, tz: tzinfo) -> bool:
        local = datetime.fromtimestamp(t, tz)
        minute, day = local.hour * 60 + local.minute, local.weekday()
        if self.start < self.end:
            return bool(self.days >> day & 1) and self.start <= minute < self.end
        return (bool(self.days >> day & 1) and minute >= self.start) or (
            bool(self.days >> ((day - 1) % 7) & 1) and minute < self.end)

    def describe(self) -> str:
        """As a person wrote it: "daily 02:00-03:00", "sun 01:00-05:00", "mon,wed 22:00-06:00"."""
        names = next((name for name, bits in DAY_SETS.items() if bits == self.days), None)
        if names is None:
            names = ",".join(day for i, day in enumerate(DAY_NAMES) if self.days >> i & 1)
        return f"{names} {_clock(self.start)}-{_clock(self.end)}"

    def next_start(self, t: float, tz: tzinfo) -> float:
        """When it next begins after `t` (within a week)."""
        local = datetime.fromtimestamp(t, tz).replace(second=0, microsecond=0)
        midnight = local.replace(hour=0, minute=0)
        for offset in range(8):
            day = midnight + timedelta(days=offset)
            begin = (day + timedelta(minutes=self.start)).timestamp()
            if self.days >> day.weekday() & 1 and begin > t:
                return begin
        return t


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
