"""When a recurring message is due: daily, or weekly on one day, at a time of day in the bot's time zone.

Every moment is a wall-clock time turned into a timestamp by the time zone (zoneinfo), never a count of 86400 s,
so a day of 23 or 25 hours (daylight saving) moves nothing: a digest due at 09:00 stays due at 09:00. A time the
clocks skip (02:30 on the night they spring forward) is read with the offset before the change, so it falls an
hour later on the wall clock; a time they repeat (the night they fall back) is its first."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from schema.domain import DAY_NAMES

DAILY, WEEKLY = "daily", "weekly"
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True)
class Schedule:
    """Due every day (`weekday` None) or every week on `weekday` (0 Monday), at minute `minute` of the day."""

    weekday: int | None
    minute: int

    @classmethod
    def parse(cls, words: list[str]) -> Schedule:
        """From "daily 09:00" or "weekly mon 09:00"; raises ValueError saying what is wrong."""
        if not words or words[0].lower() not in (DAILY, WEEKLY):
            raise ValueError("Say daily or weekly")
        weekly = words[0].lower() == WEEKLY
        if len(words) != (3 if weekly else 2):
            raise ValueError("Weekly takes a day and a time" if weekly else "Daily takes a time")
        weekday = None
        if weekly:
            if words[1].lower() not in DAY_NAMES:
                raise ValueError(f"{words[1][:20]!r} is not a day: mon … sun")
            weekday = DAY_NAMES.index(words[1].lower())
        clock = _CLOCK.fullmatch(words[-1])
        if clock is None:
            raise ValueError(f"{words[-1][:20]!r} is not a time of day such as 09:00")
        return cls(weekday, int(clock[1]) * 60 + int(clock[2]))

    def describe(self) -> str:
        """As a person wrote it: "daily 09:00", "weekly mon 09:00"."""
        clock = f"{self.minute // 60:02d}:{self.minute % 60:02d}"
        return f"{DAILY} {clock}" if self.weekday is None else f"{WEEKLY} {DAY_NAMES[self.weekday]} {clock}"

    def last_due(self, t: float, tz: tzinfo) -> float:
        """The newest moment it was due, at or before `t`."""
        today = datetime.fromtimestamp(t, tz).date()
        days = (today - timedelta(days=back) for back in range(8))
        return next(at for day in days if self._on(day) and (at := self._at(day, tz)) <= t)

    def next_due(self, t: float, tz: tzinfo) -> float:
        """The first moment it is due after `t`."""
        today = datetime.fromtimestamp(t, tz).date()
        days = (today + timedelta(days=ahead) for ahead in range(9))
        return next(at for day in days if self._on(day) and (at := self._at(day, tz)) > t)

    def previous_due(self, due: float, tz: tzinfo) -> float:
        """The moment it was due one period before `due`: where the first digest's period starts."""
        return self.last_due(due - 1, tz)

    def _on(self, day: date) -> bool:
        return self.weekday is None or day.weekday() == self.weekday

    def _at(self, day: date, tz: tzinfo) -> float:
        return datetime.combine(day, time(self.minute // 60, self.minute % 60), tzinfo=tz).timestamp()


def day_starts(t: float, tz: tzinfo, days: int) -> list[tuple[date, float]]:
    """The last `days` days up to the one of `t` (oldest first), each with the moment it began (its midnight)."""
    today = datetime.fromtimestamp(t, tz).date()
    out = []
    for back in range(days - 1, -1, -1):
        day = today - timedelta(days=back)
        out.append((day, datetime.combine(day, time(0), tzinfo=tz).timestamp()))
    return out
