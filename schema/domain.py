"""The values an incident and its messages take, as types: what is stored is what the code compares."""

from __future__ import annotations

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
    worst (`peak`). A forecast: the metric and where its trend stood (`ts`, `level`, `slope_per_h`, `eta_s`).
    Stored as one flat JSON object (`to_json`), read back by `from_json`: the one writer and the one reader.
    """

    drivers: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)
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
        return json.dumps({"drivers": self.drivers, "metrics": self.metrics, "peak": self.peak})

    @classmethod
    def from_json(cls, text: str | None) -> IncidentDetail:
        known = {name: value for name, value in json.loads(text or "{}").items() if name in _FIELDS}
        return cls(**known)


_FIELDS = frozenset(IncidentDetail.__dataclass_fields__)


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
