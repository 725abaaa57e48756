"""Digests: each chat's (or forum topic's) schedule, its periods claimed one by one so that a period's digest goes
out once across restarts and processes, and what a digest tells of a period: the incidents opened in it and how
fast they were answered and recovered, what is still open, and what people taught the bot meanwhile."""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass
from datetime import tzinfo

from peewee import fn

from bot.db.routing import GENERAL
from schema.domain import Kind, State
from schema.schedule import Schedule
from schema.tables import Digest, DiskLabel, Event, Expected, ForecastLabel, Incident, Label, Tolerance

CLAIM_S = 300.0  # a period is claimed for longer than drawing and sending its digest can take


def set_schedule(chat_id: int, thread_id: int | None, schedule: Schedule, user_id: int, user_name: str,
                 tz: tzinfo) -> None:
    """Give the chat's topic a digest on `schedule` (replacing its earlier one). The period that began before now
    counts as sent: a new schedule waits for its next moment instead of sending a late digest at once."""
    now = time.time()
    values = {Digest.weekday: schedule.weekday, Digest.minute: schedule.minute, Digest.user_id: user_id,
              Digest.user_name: user_name[:200], Digest.created: now,
              Digest.last_due: schedule.last_due(now, tz), Digest.failed: None}
    Digest.insert({Digest.chat_id: chat_id, Digest.thread_id: thread_id or GENERAL, **values}).on_conflict(
        conflict_target=[Digest.chat_id, Digest.thread_id], update=values).execute()


def remove(chat_id: int, thread_id: int | None) -> bool:
    """Stop the digest of the chat's topic; whether it had one."""
    return Digest.delete().where((Digest.chat_id == chat_id) & (Digest.thread_id == (thread_id or GENERAL))
                                 ).execute() > 0


def schedule_of(chat_id: int, thread_id: int | None) -> Digest | None:
    return Digest.get_or_none((Digest.chat_id == chat_id) & (Digest.thread_id == (thread_id or GENERAL)))


def every() -> list[Digest]:
    """Every chat's and topic's digest."""
    return list(Digest.select().order_by(Digest.id))


def claim(digest_id: int, due: float) -> Digest | None:
    """Take the period due at `due` for this process: only when no process sent it (or a newer one) and none is
    sending it now. The one conditional UPDATE decides, so two processes never both win. The schedule as it is
    now (where the last digest ended), or None when another process has the period."""
    now = time.time()
    free = Digest.claimed_until.is_null() | (Digest.claimed_until < now)
    unsent = Digest.last_due.is_null() | (Digest.last_due < due)
    if Digest.update(claimed_until=now + CLAIM_S).where((Digest.id == digest_id) & free & unsent).execute() != 1:
        return None
    return Digest.get_by_id(digest_id)


def release(digest_id: int) -> None:
    """Let the period go unsent, for the next try of any process."""
    Digest.update(claimed_until=None).where(Digest.id == digest_id).execute()


def record_sent(digest_id: int, due: float, covered_until: float) -> None:
    """The period due at `due` went out, covering up to `covered_until`."""
    Digest.update(last_due=due, covered_until=covered_until, sent=time.time(), failed=None,
                  claimed_until=None).where(Digest.id == digest_id).execute()


def record_failed(digest_id: int, due: float, error: str) -> None:
    """The period due at `due` can never be delivered (the bot was removed, the chat is gone): it is not tried
    again, and the next digest covers it too."""
    Digest.update(last_due=due, failed=error[:500], claimed_until=None).where(Digest.id == digest_id).execute()


@dataclass(frozen=True)
class Period:
    """What happened from `start` to `end`, and what stands at its end."""

    start: float
    end: float
    opened: list[tuple[Kind, str]]  # (kind, device) of each incident opened in it
    answers: list[float]  # seconds from opening to the first button pressed, of those answered
    recoveries: list[float]  # seconds from opening to recovery, of those recovered
    still_open: list[Incident]  # every open incident, oldest first
    tolerances: list[Tolerance]  # added in it
    expected: list[Expected]  # added in it
    labels: list[tuple[int, str]]  # (value, who) of every label given in it: ✅ 1, ❌ 0

    def worst_by(self, kind: Kind, count: int) -> list[tuple[str, int]]:
        """The machines with the most incidents of `kind`, and how many each had."""
        return Counter(device for k, device in self.opened if k == kind).most_common(count)


def period(start: float, end: float) -> Period:
    """Read what a digest says of the period from `start` to `end`."""
    opened_in = (Incident.created >= start) & (Incident.created < end)
    opened = list(Incident.select(Incident.id, Incident.kind, Incident.device, Incident.state, Incident.opened_ts,
                                  Incident.resolved_ts, Incident.acked_at, Incident.created).where(opened_in))
    pressed = dict(Event.select(Event.incident, fn.MIN(Event.at)).where(
        (Event.what == "pressed") & Event.incident.in_(Incident.select(Incident.id).where(opened_in)))
        .group_by(Event.incident).tuples())
    answers = []
    for incident in opened:
        first = min((t for t in (pressed.get(incident.id), incident.acked_at) if t is not None), default=None)
        if first is not None:
            answers.append(max(0.0, first - incident.created))
    recoveries = [i.resolved_ts - i.opened_ts for i in opened if i.state == State.RESOLVED and i.resolved_ts]
    labels = []
    for table in (Label, ForecastLabel, DiskLabel):
        labels += list(table.select(table.value, table.user_name).where(
            (table.created >= start) & (table.created < end)).tuples())
    return Period(
        start, end, [(i.kind, i.device) for i in opened], answers, recoveries,
        list(Incident.select().where(Incident.state == State.OPEN).order_by(Incident.opened_ts, Incident.id)),
        list(Tolerance.select().where((Tolerance.created >= start) & (Tolerance.created < end))
             .order_by(Tolerance.created)),
        list(Expected.select().where((Expected.created >= start) & (Expected.created < end))
             .order_by(Expected.created)),
        labels,
    )


def per_day(starts: list[float], end: float) -> list[Counter[Kind]]:
    """How many incidents of each kind opened on each day that begins at one of `starts` (the last ends at
    `end`)."""
    days: list[Counter[Kind]] = [Counter() for _ in starts]
    rows = Incident.select(Incident.created, Incident.kind).where(
        (Incident.created >= starts[0]) & (Incident.created < end)).tuples()
    for created, kind in rows:
        days[bisect.bisect_right(starts, created) - 1][kind] += 1
    return days
