"""The values an incident and its messages take, as types: what is stored is what the code compares."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """What an incident is about."""

    STRESSED = "stressed"
    SILENT = "silent"
    FORECAST = "forecast"


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
    `slope_per_h`, `eta_s`). Stored as one flat JSON object (`to_json`), read back by `from_json`: the one writer
    and the one reader; JSON written before a field existed reads as that field's default.
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

    def to_json(self) -> str:
        if self.metric:
            return json.dumps({"metric": self.metric, "ts": self.ts, "level": self.level,
                               "slope_per_h": self.slope_per_h, "eta_s": self.eta_s})
        if not (self.drivers or self.metrics or self.peak):
            return "{}"
        stored: dict[str, object] = {"drivers": self.drivers, "metrics": self.metrics, "peak": self.peak}
        for name in ("filesystems", "peak_filesystems", "processes", "peak_processes"):
            if value := getattr(self, name):  # left out when empty: the JSON of a machine without them is as before
                stored[name] = value
        return json.dumps(stored)

    @classmethod
    def from_json(cls, text: str | None) -> IncidentDetail:
        known = {name: value for name, value in json.loads(text or "{}").items() if name in _FIELDS}
        return cls(**known)


_FIELDS = frozenset(IncidentDetail.__dataclass_fields__)

FILESYSTEM = "disk:"  # the metric of a filesystem's forecast is "disk:<mount point>"
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


SNOOZE_HOURS = {Action.SNOOZE_1H: 1, Action.SNOOZE_8H: 8}
ACTIONS_OF = {  # the buttons each kind of incident has
    Kind.STRESSED: {Action.CORRECT, Action.WRONG_PREDICTION, Action.SNOOZE_1H, Action.SNOOZE_8H, Action.CHART},
    Kind.FORECAST: {Action.RIGHT_FORECAST, Action.WRONG_FORECAST, Action.SNOOZE_1H, Action.SNOOZE_8H, Action.CHART},
    Kind.SILENT: {Action.SNOOZE_1H, Action.SNOOZE_8H},
}


class Reply(StrEnum):
    """A short reply to an incident's message: a machine reporting again, recovered, or a reminder."""

    REPORTING_AGAIN = "reporting again"
    RECOVERED = "recovered"
    REMINDER = "reminder"
