"""The on-call loop's declared data, pure: who is on call when (shifts), what happens when nobody answers
(escalation steps), and which machines stand behind which (dependencies). Parsed from what people type in the
chat or deploy in DEPENDENCIES; nothing here touches the database or Telegram.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from schema.domain import PATTERN_RE, Window, matches

DELAY_RE = re.compile(r"(\d{1,4})(m|min|h)", re.IGNORECASE)
MIN_DELAY_S = 60
MAX_DELAY_S = 24 * 3600
MAX_STEPS = 8
USER_RE = re.compile(r"@([A-Za-z0-9_]{1,32})|(\d{1,19})")
CHAT_RE = re.compile(r"(-?\d{1,19})(?:/(\d{1,19}))?")


class StepKind:
    MENTION = "mention"  # a reply in the chat that mentions them (a mention notifies in a muted group)
    DM = "dm"  # a direct message with the alert and its buttons
    CHAT = "chat"  # the alert, with its buttons, in another chat or topic


@dataclass(frozen=True)
class Step:
    """One step of a chain: after `after_s` without an answer, call the on-call person (`user` None) or a named
    one (`user`, `name`), by a mention or a direct message, or send the alert to another chat or topic."""

    after_s: int
    kind: str
    user: int | None = None
    name: str = ""  # as typed: "@carol"; the stored user id is what counts
    chat_id: int | None = None
    thread_id: int | None = None

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}

    @classmethod
    def from_json(cls, data: dict) -> Step:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @property
    def on_call(self) -> bool:
        return self.kind in (StepKind.MENTION, StepKind.DM) and self.user is None and not self.name

    def describe(self) -> str:
        """As a person would type it: "10m oncall", "20m dm @carol", "60m -100123/7"."""
        delay = f"{self.after_s // 3600}h" if self.after_s % 3600 == 0 else f"{self.after_s // 60}m"
        if self.kind == StepKind.CHAT:
            return f"{delay} {self.chat_id}" + (f"/{self.thread_id}" if self.thread_id else "")
        who = "oncall" if self.on_call else self.name or str(self.user)
        return f"{delay} {'dm ' if self.kind == StepKind.DM else ''}{who}"


def parse_steps(text: str, here: int) -> list[Step]:
    """"10m oncall, 20m dm oncall, 40m @carol, 60m -100123/7" (`topic 7` is a topic of this chat, `here`); raises
    ValueError saying what is wrong. A named person comes back with `name` only: the caller finds their id."""
    parts = [part.split() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError("no steps")
    if len(parts) > MAX_STEPS:
        raise ValueError(f"at most {MAX_STEPS} steps")
    steps: list[Step] = []
    for words in parts:
        delay = DELAY_RE.fullmatch(words[0])
        if delay is None or len(words) < 2:
            raise ValueError(f"{' '.join(words)[:30]!r} is not a step such as 10m oncall")
        after = int(delay[1]) * (3600 if delay[2].lower() == "h" else 60)
        if not MIN_DELAY_S <= after <= MAX_DELAY_S:
            raise ValueError(f"{words[0]}: a step comes after 1 minute to 24 hours")
        if steps and after <= steps[-1].after_s:
            raise ValueError(f"{words[0]}: each step comes later than the one before")
        steps.append(_target(after, words[1:], here))
    return steps


def _target(after: int, words: list[str], here: int) -> Step:
    dm = words[0].lower() == "dm"
    who = words[1:] if dm else words
    if len(who) == 1 and who[0].lower() == "oncall":
        return Step(after, StepKind.DM if dm else StepKind.MENTION)
    if len(who) == 1 and who[0].startswith("@") and USER_RE.fullmatch(who[0]):
        return Step(after, StepKind.DM if dm else StepKind.MENTION, name=who[0])
    if not dm and len(who) == 2 and who[0].lower() == "topic" and who[1].isdigit():
        return Step(after, StepKind.CHAT, chat_id=here, thread_id=int(who[1]))
    if not dm and len(who) == 1 and (chat := CHAT_RE.fullmatch(who[0])):
        return Step(after, StepKind.CHAT, chat_id=int(chat[1]), thread_id=int(chat[2]) if chat[2] else None)
    raise ValueError(f"{' '.join(words)[:30]!r}: say oncall, dm oncall, @name, dm @name, a chat id "
                     "(-100123, or -100123/7 for its topic 7) or topic 7")


@dataclass(frozen=True)
class Shift:
    """Someone on call: in a recurring window, or (`window` None) whenever nobody else's window holds."""

    user: int
    name: str
    window: Window | None

    def describe(self) -> str:
        return self.window.describe() if self.window else "other"


def on_call(shifts: list[Shift], t: float, tz: tzinfo) -> Shift | None:
    """Who is on call at `t`: the first shift whose window holds, else the first "other" shift."""
    for shift in shifts:
        if shift.window is not None and shift.window.holds(t, tz):
            return shift
    return next((shift for shift in shifts if shift.window is None), None)


def next_change(shifts: list[Shift], t: float, tz: tzinfo) -> tuple[float, Shift | None] | None:
    """When the person on call next changes after `t` (within a week), and who takes over; None: never."""
    now = on_call(shifts, t, tz)
    edges = sorted({edge for shift in shifts if shift.window is not None for edge in _edges(shift.window, t, tz)})
    for edge in edges:
        then = on_call(shifts, edge, tz)
        if then != now:
            return edge, then
    return None


def _edges(window: Window, t: float, tz: tzinfo) -> list[float]:
    """The times a window starts or ends within the week after `t`, on the wall clock of `tz` (the window of the
    day before may still hold at `t`)."""
    midnight = datetime.fromtimestamp(t, tz).replace(hour=0, minute=0, second=0, microsecond=0)
    edges = []
    for offset in range(-1, 8):
        day = midnight + timedelta(days=offset)
        if window.days >> day.weekday() & 1:
            end_day = day + timedelta(days=1) if window.end <= window.start else day
            edges += [(day + timedelta(minutes=window.start)).timestamp(),
                      (end_day + timedelta(minutes=window.end)).timestamp()]
    return [edge for edge in edges if edge > t]


@dataclass(frozen=True)
class Dependency:
    """The machines matching `pattern` stand behind `parent` (a switch, a hypervisor): while it is silent or
    stressed, their silence is its."""

    pattern: str
    parent: str

    def covers(self, device: str) -> bool:
        return device != self.parent and matches(self.pattern, device)


def parse_dependencies(text: str) -> list[Dependency]:
    """"rack1-* on sw-rack1; rack2-* on sw-rack2" (or one per line; # starts a comment); raises ValueError
    naming the rule that is wrong."""
    found = []
    for raw in re.split(r"[;\n]", text):
        rule = raw.split("#", 1)[0].strip()
        if not rule:
            continue
        words = rule.split()
        if len(words) != 3 or words[1].lower() != "on" or not PATTERN_RE.fullmatch(words[0]) \
                or not PATTERN_RE.fullmatch(words[2]) or any(c in words[2] for c in "*?[]!"):
            raise ValueError(f"{rule[:60]!r} is not a dependency such as: rack1-* on sw-rack1")
        found.append(Dependency(words[0], words[2]))
    return found


def parents_of(device: str, dependencies: list[Dependency]) -> list[str]:
    """The machines `device` stands behind, in the order declared."""
    return list(dict.fromkeys(d.parent for d in dependencies if d.covers(device)))
