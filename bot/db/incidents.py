"""Incidents, labels and mutes: what the incident decisions and the buttons read and write."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from datetime import tzinfo

import peewee as pw

from bot.db import disks, events, tolerances
from bot.db.connection import is_postgres
from schema.conditions import Predicted, parse_key
from schema.domain import SNOOZE_HOURS, Action, IncidentDetail, Kind, Muting, NoticeKind, State, Window, metric_key
from schema.tables import Expected, ForecastLabel, Incident, Label, Mute, Notice, Tolerance, db

# What a ❌ on a stressed incident makes its machine tolerate: metric -> value, from the incident's detail.
Tolerate = Callable[[IncidentDetail], dict[str, float]]

log = logging.getLogger(__name__)


def create(device: str, kind: Kind, sample_id: int | None, p: float | None, opened_ts: float, detail: IncidentDetail,
           now: float, next_reminder: float | None) -> Incident:
    """A new open incident."""
    return Incident.create(
        device=device, kind=kind, metric=metric_key(detail.metric), state=State.OPEN, opened_ts=opened_ts,
        last_ts=opened_ts, sample_id=sample_id, last_p=p, peak_p=p, detail=detail, created=now, updated=now,
        next_reminder=next_reminder,
    )


def for_update(query: pw.ModelSelect) -> pw.ModelSelect:
    """Incidents read to be changed: on PostgreSQL their rows are locked, in id order, until the transaction
    ends, so a concurrent writer (a batch, the watch, a button) waits and then reads what this one wrote instead
    of undoing it. SQLite needs nothing: a transaction that writes takes the database's lock when it begins."""
    query = query.order_by(Incident.id)
    return query.for_update() if is_postgres() else query


def locked(ids: Collection[int]) -> dict[int, Incident]:
    """These incidents as they are now, for a change (see for_update)."""
    if not ids:
        return {}
    return {i.id: i for i in for_update(Incident.select().where(Incident.id.in_(list(ids))))}


def open_of(devices: Collection[str]) -> dict[tuple[str, str], Incident]:
    """The open incidents of these devices, by (device, its metric or else its kind); the whole metric, from
    its detail (the column holds a long one cut: see metric_key)."""
    # Few open incidents, many devices: ask for the open ones, then keep those of these devices.
    ids = [i.id for i in Incident.select(Incident.id, Incident.device).where(Incident.state == State.OPEN)
           if i.device in devices]
    return {(i.device, i.detail.metric or i.metric or i.kind): i for i in locked(ids).values()
            if i.state == State.OPEN}


def has_open(device: str, kind: Kind) -> bool:
    return Incident.select().where((Incident.device == device) & (Incident.state == State.OPEN)
                                   & (Incident.kind == kind)).exists()


def open_forecasts() -> list[tuple[str, str]]:
    """(device, metric) of every open forecast incident: episodes a restart must not alert again."""
    query = Incident.select(Incident.device, Incident.metric, Incident.detail).where(
        (Incident.state == State.OPEN) & (Incident.kind == Kind.FORECAST))
    return [(i.device, i.detail.metric or i.metric) for i in query]


def reminders_due(now: float) -> list[Incident]:
    """Open, unacknowledged, unsnoozed incidents whose reminder is due."""
    return list(for_update(Incident.select().where(
        (Incident.state == State.OPEN) & Incident.acked_by.is_null() & (Incident.next_reminder <= now)
        & (Incident.snoozed_until.is_null() | (Incident.snoozed_until <= now)))))


def ended_mutes(since: float, now: float, tz: tzinfo) -> list[str]:
    """The patterns whose mute ended: one-off mutes that ran out (deleted here), and recurring windows that
    held at `since` and no longer do at `now`."""
    ended = [m.pattern for m in Mute.select(Mute.pattern).where(Mute.until <= now)]
    Mute.delete().where(Mute.until <= now).execute()
    return ended + [m.pattern for m in Mute.select().where(Mute.until.is_null())
                    if m.holds(since, tz) and not m.holds(now, tz)]


def press(incident_id: int, action: Action, user_id: int, user_name: str, now: float,
          tolerate: Tolerate | None = None) -> Incident:
    """What a button on an incident does, stored in one transaction; returns the incident as it is now.

    ✅/❌ store a label on the sample that opened the incident and acknowledge it (no more reminders); ❌ also
    closes it as a false alarm and raises its machine's tolerances to what `tolerate` says of the incident (the
    label is marked as one that became a tolerance). "❌ Wrong forecast" puts that forecast of the machine on
    hold. On a condition ✅/❌ are verdicts on the incident, not labels of its sample (a degraded array says
    nothing of how loaded the machine was), and ❌ makes that condition of that object expected on the machine.
    🔕 snoozes its reminders; 👀 takes it (no more reminders; its verdict buttons stay). Any press is an answer:
    escalation stops. The new revision makes the sender edit every copy.
    """
    with db.atomic():
        incident = locked([incident_id])[incident_id]
        if action == Action.ON_IT:
            incident.detail = replace(incident.detail, taken_by=user_name[:200], taken_at=now)
            incident.next_reminder = None
        elif action in SNOOZE_HOURS:
            incident.snoozed_until = now + SNOOZE_HOURS[action] * 3600
        elif action in (Action.RIGHT_FORECAST, Action.WRONG_FORECAST):
            add_forecast_label(incident.id, int(action == Action.RIGHT_FORECAST), user_id, user_name)
            incident.acked_by, incident.acked_at = user_name, now
            if action == Action.WRONG_FORECAST:
                tolerances.hold(incident.device, incident.detail.metric or incident.metric, incident.id, user_id,
                                user_name, now)
        elif incident.kind == Kind.CONDITION:
            add_forecast_label(incident.id, int(action == Action.CORRECT), user_id, user_name)
            incident.acked_by, incident.acked_at = user_name, now
            found = parse_key(incident.detail.metric)
            if found is not None and isinstance(found[0].rule, Predicted):  # a disk: ✅ replaced, ❌ it was fine
                disks.label(found[1], incident.device, int(action == Action.CORRECT), user_id, user_name)
                if action == Action.CORRECT:
                    incident.state, incident.resolved_ts = State.RESOLVED, now
            if action == Action.EXPECTED:
                tolerances.expect(incident.device, incident.detail.metric, incident.id, user_id, user_name, now)
                incident.state, incident.resolved_ts = State.FALSE_ALARM, incident.resolved_ts or incident.last_ts
                incident.detail = replace(incident.detail, expected_by=user_name[:200])
        else:
            value = int(action == Action.CORRECT)
            label = add_label(incident.sample_id, value, user_id, user_name) if incident.sample_id else None
            incident.acked_by, incident.acked_at = user_name, now
            if not value:
                incident.state, incident.resolved_ts = State.FALSE_ALARM, incident.resolved_ts or incident.last_ts
                wanted = tolerate(incident.detail) if tolerate and incident.kind == Kind.STRESSED else {}
                if wanted:
                    raised = tolerances.tolerate(incident.device, wanted, incident.id, label.id if label else None,
                                                 user_id, user_name, now)
                    incident.detail = replace(incident.detail, tolerated=raised)
                    if label is not None:
                        label.tolerance = True
                        label.save()
        incident.revision += 1
        incident.updated = incident.acted = now
        incident.save()
        events.happened(incident_id, now, "pressed", f"{user_name} pressed {action.name.lower().replace('_', ' ')}")
    log.info("%s pressed %s on incident %d (%s)", user_name, action, incident_id, incident.device)
    return incident


def undo_tolerance(incident_id: int, user_id: int, user_name: str, admin: bool,
                   now: float) -> tuple[Incident, list[str] | None]:
    """Undo on a ❌'d incident: remove the tolerances (or the expected condition) its ❌ set and still owns; (the
    incident, the metrics removed), or None for them when the presser is neither who set them nor an admin (nothing
    changes)."""
    with db.atomic():
        incident = locked([incident_id])[incident_id]
        table = Expected if incident.kind == Kind.CONDITION else Tolerance
        setters = {row.user_id for row in table.select(table.user_id).where(table.incident == incident_id)}
        if not admin and setters - {user_id}:
            return incident, None
        if incident.kind == Kind.CONDITION:
            removed = tolerances.unexpect(incident.device, incident_id=incident_id)
        else:
            removed = tolerances.untolerate(incident.device, incident_id=incident_id)
        if removed:
            incident.detail = replace(incident.detail, undone_by=user_name[:200])
            incident.revision += 1
            incident.updated = incident.acted = now
            incident.save()
            events.happened(incident_id, now, "pressed", f"{user_name} pressed undo")
    log.info("%s undid the tolerances %s of incident %d (%s)", user_name, removed, incident_id, incident.device)
    return incident, removed


def incident_for_button(incident_id: int, chat_id: int) -> Incident | None:
    """The incident a button is about, when an incident message went (or goes) to this chat; None if forged."""
    return (Incident.select().join(Notice)
            .where((Incident.id == incident_id) & (Notice.chat_id == chat_id) & (Notice.kind == NoticeKind.ALERT))
            .first())


def add_label(metric_id: int, value: int, user_id: int, user_name: str) -> Label:
    """Store a person's label for a sample."""
    return Label.create(metric=metric_id, value=value, user_id=user_id, user_name=user_name[:200], created=time.time())


def add_forecast_label(incident_id: int, value: int, user_id: int, user_name: str) -> None:
    """Store a person's verdict on a forecast."""
    ForecastLabel.create(incident=incident_id, value=value, user_id=user_id, user_name=user_name[:200],
                         created=time.time())


def mute(pattern: str, until: float | None, window: Window | None, reason: str, user_id: int,
         user_name: str) -> None:
    """Mute the devices matching `pattern` until `until`, or in a recurring `window`, replacing an earlier
    mute of the same pattern and kind (the same window, for a recurring one); who and why are kept."""
    same = Mute.pattern == pattern
    same &= (Mute.until.is_null(False) if window is None else
             (Mute.until.is_null() & (Mute.days == window.days) & (Mute.start == window.start)
              & (Mute.end == window.end)))
    days, start, end = (window.days, window.start, window.end) if window else (0, 0, 0)
    with db.atomic():
        Mute.delete().where(same).execute()
        Mute.create(pattern=pattern, until=until, days=days, start=start, end=end, reason=reason[:200],
                    user_id=user_id, user_name=user_name[:200], created=time.time())


def unmute(pattern: str) -> int:
    """End every mute of exactly this pattern, one-off or recurring; how many there were."""
    return Mute.delete().where(Mute.pattern == pattern).execute()


def mutes(now: float) -> list[Mute]:
    """The one-off mutes in force (ending soonest first), then the recurring windows."""
    return list(Mute.select().where(Mute.until > now).order_by(Mute.until)) + list(
        Mute.select().where(Mute.until.is_null()).order_by(Mute.pattern, Mute.id))


def count_mutes() -> int:
    return Mute.select().count()


def incident_spans(device: str, start: float, end: float) -> list[tuple[float, float]]:
    """(from, to) of the device's stressed and silent incidents that overlap [start, end], for a chart."""
    query = Incident.select(Incident.opened_ts, Incident.resolved_ts, Incident.last_ts).where(
        (Incident.device == device) & (Incident.kind != Kind.FORECAST) & (Incident.opened_ts <= end)
        & (Incident.resolved_ts.is_null() | (Incident.resolved_ts >= start)))
    return [(i.opened_ts, i.resolved_ts or max(i.last_ts, end)) for i in query]


def open_conditions(device: str | None = None) -> dict[str, list[Incident]]:
    """The open condition incidents of one device (or of all), by device, oldest first."""
    query = Incident.select().where((Incident.state == State.OPEN) & (Incident.kind == Kind.CONDITION))
    if device is not None:
        query = query.where(Incident.device == device)
    found: dict[str, list[Incident]] = {}
    for incident in query.order_by(Incident.opened_ts):
        found.setdefault(incident.device, []).append(incident)
    return found


def still_behind(parent_id: int) -> set[str]:
    """The machines whose silence behind this incident's machine is still open."""
    return {i.device for i in Incident.select(Incident.device, Incident.detail).where(
        (Incident.state == State.OPEN) & (Incident.kind == Kind.SILENT)) if i.detail.parent_id == parent_id}


def behind_parents() -> list[tuple[Incident, Incident | None]]:
    """The open silences that wait behind a parent's incident and have not been released, with that incident."""
    waiting = [i for i in Incident.select(Incident.id, Incident.detail).where(
        (Incident.state == State.OPEN) & (Incident.kind == Kind.SILENT))
        if i.detail.parent_id is not None and not i.detail.released]
    children = [c for c in locked([c.id for c in waiting]).values() if c.state == State.OPEN]
    parents = {i.id: i for i in Incident.select().where(Incident.id.in_([c.detail.parent_id for c in children]))}
    return [(child, parents.get(child.detail.parent_id)) for child in children]


def open_of_kinds(devices: Collection[str], kinds: Collection[Kind]) -> dict[str, Incident]:
    """The open incident of one of these kinds of each of these devices (the first found)."""
    if not devices:
        return {}
    found: dict[str, Incident] = {}
    for incident in for_update(Incident.select().where((Incident.state == State.OPEN) & Incident.kind.in_(list(kinds))
                                                       & Incident.device.in_(list(devices)))):
        found.setdefault(incident.device, incident)
    return found


def silent_devices() -> set[str]:
    """The devices with an open silence incident."""
    return {i.device for i in Incident.select(Incident.device).where(
        (Incident.state == State.OPEN) & (Incident.kind == Kind.SILENT))}


def muting(now: float, tz: tzinfo) -> Muting:
    """What is muted now: `device in muting(now, tz)`."""
    return Muting([m.pattern for m in mutes(now) if m.holds(now, tz)])
