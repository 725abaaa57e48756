"""Incidents: a stressed stretch, a silent machine or a forecast opens one, edits it while it lasts, resolves it.

Decisions are made in the same transaction as the batch that causes them, and every message they need is
written to the outbox (`Notice`) there too: a crash between storing and sending delivers the alert after
the restart, and a restart never repeats one already delivered. The sender (bot/sender.py) delivers.

Rules (ALERT_THRESHOLD, ALERT_HYSTERESIS, RECOVER_SAMPLES):
- a device whose P(stressed) reaches the threshold, with no open incident and not muted, opens one;
- while it lasts every sample updates it (latest P, peak, drivers); the sender edits its message;
- it resolves after RECOVER_SAMPLES consecutive samples below threshold - hysteresis, so a P wobbling
  around the threshold gives one incident, not ten.
A forecast episode (bot/forecast.py) is an incident too, resolved when the forecast no longer holds; a device
that stops reporting for SILENT_AFTER opens a silence incident, resolved by its next sample.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise
from operator import attrgetter

from bot import store
from bot.baselines import Baselines
from bot.forecast import Forecast, Forecaster
from bot.store import Device, Incident, Mute, Notice, StoredSample
from bot.texts import ago
from ml.features import FEATURES, ZONES

log = logging.getLogger(__name__)
STRESSED, SILENT, FORECAST = "stressed", "silent", "forecast"
OPEN, RESOLVED, FALSE_ALARM = "open", "resolved", "false alarm"
MIN_SILENT_S = 60.0
SILENT_INTERVALS = 3  # a device is silent after this many of its usual intervals without a sample
INTERVAL_WEIGHT = 0.2  # of the newest gap in the device's usual interval (an exponential average)

Drivers = Callable[[dict[str, float]], list[str]]
SNOOZE_HOURS = {"s1": 1, "s8": 8}
ACTIONS_OF = {  # the buttons each kind of incident has (bot/texts.py incident_keyboard)
    STRESSED: {"ok", "no", "s1", "s8", "chart"},
    FORECAST: {"right", "wrong", "s1", "s8", "chart"},
    SILENT: {"s1", "s8"},
}


@dataclass(frozen=True)
class Rules:
    threshold: float
    hysteresis: float
    recover_samples: int
    repeat_s: float  # a reminder for an unacknowledged incident after this long; 0: none
    silent_after_s: float | None  # None: derived per device from its usual interval
    chat_ids: tuple[int, ...]

    def silent_after(self, interval: float | None) -> float:
        if self.silent_after_s is not None:
            return self.silent_after_s
        return max(MIN_SILENT_S, SILENT_INTERVALS * (interval or 0.0))


def _model_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {name: metrics[name] for name in FEATURES if name in metrics}


def _forecast_detail(forecast: Forecast) -> dict:
    return {"metric": forecast.metric, "ts": forecast.ts, "level": forecast.level,
            "slope_per_h": forecast.slope_per_h, "eta_s": forecast.eta_s}


class Decider:
    """Opens, updates and resolves incidents and queues their messages; every method blocks on the store."""

    def __init__(self, rules: Rules, drivers: Drivers, forecaster: Forecaster, baselines: Baselines) -> None:
        self.rules = rules
        self.drivers = drivers
        self.forecaster = forecaster
        self.baselines = baselines
        self.queued = False  # a message was queued since the sender last looked

    def notify(self, incident: Incident, kind: str, text: str | None, now: float) -> None:
        """Queue a message about the incident for every chat: the alert itself, or a reply to it."""
        rows = [{"incident": incident.id, "chat_id": chat, "kind": kind, "text": text, "created": now, "due": now}
                for chat in self.rules.chat_ids]
        if rows:
            Notice.insert_many(rows).execute()
            self.queued = True

    def open(self, device: str, kind: str, sample: StoredSample | None, opened_ts: float, detail: dict,
             now: float) -> Incident:
        incident = Incident.create(
            device=device, kind=kind, metric=detail.get("metric", ""), state=OPEN, opened_ts=opened_ts,
            last_ts=opened_ts, sample=sample.id if sample else None, last_p=sample.p_stressed if sample else None,
            peak_p=sample.p_stressed if sample else None, detail=json.dumps(detail), created=now, updated=now,
            next_reminder=now + self.rules.repeat_s if self.rules.repeat_s else None,
        )
        self.notify(incident, "alert", None, now)
        log.info("incident %d opened: %s %s", incident.id, device, kind)
        return incident

    def resolve(self, incident: Incident, state: str, resolved_ts: float, reply: str | None, now: float) -> None:
        """Close an incident; its messages are edited to say so, and `reply` (if any) notifies the chats."""
        incident.state, incident.resolved_ts, incident.updated = state, resolved_ts, now
        incident.revision += 1
        incident.save()
        if reply:
            self.notify(incident, "reply", reply, now)
        log.info("incident %d %s: %s %s", incident.id, state, incident.device, incident.kind)

    def decide(self, new: list[StoredSample], now: float | None = None) -> None:
        """Update the devices and their incidents for a batch's new samples; called inside its transaction."""
        if not new:
            return
        now = time.time() if now is None else now
        ordered = sorted(new, key=attrgetter("ts"))  # the state machines and the trends walk time forward
        by_device: dict[str, list[StoredSample]] = {}
        for sample in ordered:
            by_device.setdefault(sample.device, []).append(sample)
        _update_devices(by_device, now)
        open_incidents: dict[tuple[str, str], Incident] = {}
        # Few open incidents, many devices: ask for the open ones, then keep those of this batch's devices.
        for incident in Incident.select().where(Incident.state == OPEN):
            if incident.device in by_device:
                open_incidents[(incident.device, incident.metric or incident.kind)] = incident
        muted = _muted(now)
        for device, samples in by_device.items():
            silent = open_incidents.get((device, SILENT))
            if silent is not None:
                gap = ago(samples[0].ts - silent.last_ts)
                self.resolve(silent, RESOLVED, samples[0].ts, f"✅ {device} is reporting again after {gap} of silence",
                             now)
            self._follow(device, samples, open_incidents.get((device, STRESSED)), device in muted, now)
        self._forecasts(ordered, by_device, open_incidents, muted, now)

    def _follow(self, device: str, samples: list[StoredSample], incident: Incident | None, muted: bool,
                now: float) -> None:
        """Walk one device's new samples through the stressed state machine."""
        below = self.rules.threshold - self.rules.hysteresis
        for sample in samples:
            p = sample.p_stressed
            if p is None:
                continue
            if incident is None:
                if p >= self.rules.threshold and not muted:
                    incident = self.open(device, STRESSED, sample, sample.ts, self._detail(sample), now)
                continue
            incident.last_ts, incident.last_p, incident.updated = sample.ts, p, now
            detail = json.loads(incident.detail)
            detail["metrics"] = _model_metrics(sample.metrics)
            if p >= (incident.peak_p or 0.0):  # the worst moment: what drove it is what the message names
                incident.peak_p = p
                detail.update(self._detail(sample), peak=detail["metrics"])
            incident.detail = json.dumps(detail)
            incident.below = incident.below + 1 if p < below else 0
            incident.revision += 1
            if incident.below >= self.rules.recover_samples:
                lasted = ago(sample.ts - incident.opened_ts)
                self.resolve(incident, RESOLVED, sample.ts, f"✅ {device} recovered after {lasted}", now)
                incident = None
                continue
            incident.save()

    def _detail(self, sample: StoredSample) -> dict:
        metrics = _model_metrics(sample.metrics)
        return {"drivers": self.drivers(sample.metrics), "metrics": metrics, "peak": metrics}

    def _forecasts(self, ordered: list[StoredSample], by_device: dict[str, list[StoredSample]],
                   open_incidents: dict[tuple[str, str], Incident], muted: set[str], now: float) -> None:
        """A new forecast episode opens an incident; an open one follows its forecast and ends with it."""
        due = self.forecaster.observe((s.id, s.device, s.ts, s.metrics) for s in ordered)
        for (device, metric), incident in open_incidents.items():
            if incident.kind != FORECAST:
                continue
            current = self.forecaster.forecasts(device).get(metric)
            if not self.forecaster.holds(device, metric) or current is None:
                self.resolve(incident, RESOLVED, by_device[device][-1].ts, None, now)
                continue
            incident.last_ts, incident.updated = current.ts, now
            incident.detail = json.dumps(_forecast_detail(current))
            incident.revision += 1
            incident.save()
        for forecast in due:
            usual = self.baselines.get(forecast.device).get(forecast.metric)
            if forecast.level <= (usual.high if usual else ZONES[forecast.metric].typical):
                continue  # a machine that always runs this full and this fast: its normal, not news
            self.forecaster.mark_alerted(forecast)
            if forecast.device in muted or (forecast.device, forecast.metric) in open_incidents:
                continue
            sample = store.StoredSample(forecast.sample_id, forecast.device, forecast.ts, {}, None, None)
            self.open(forecast.device, FORECAST, sample, forecast.ts, _forecast_detail(forecast), now)

    def check_silent(self, now: float | None = None) -> int:
        """Open a silence incident for every device that has stopped reporting; returns how many opened.

        Reads the device table (one row per device), never the samples, so its cost does not grow with them.
        """
        now = time.time() if now is None else now
        opened = 0
        with store.db.atomic():
            already = {i.device for i in Incident.select(Incident.device).where(
                (Incident.state == OPEN) & (Incident.kind == SILENT))}
            muted = _muted(now)
            for device in Device.select():
                if device.name in already or device.name in muted:
                    continue
                if now - device.last_received < self.rules.silent_after(device.interval):
                    continue
                self.open(device.name, SILENT, None, device.last_ts, {}, now)
                opened += 1
        return opened

    def due_reminders(self, now: float | None = None) -> int:
        """Queue a reminder (a reply) for every open, unacknowledged, unsnoozed incident whose time has come."""
        now = time.time() if now is None else now
        count = 0
        with store.db.atomic():
            query = Incident.select().where(
                (Incident.state == OPEN) & Incident.acked_by.is_null() & (Incident.next_reminder <= now)
                & (Incident.snoozed_until.is_null() | (Incident.snoozed_until <= now)))
            for incident in query:
                what = {SILENT: "still silent", FORECAST: "still heading for its edge"}.get(incident.kind,
                                                                                           "still stressed")
                self.notify(incident, "reply", f"⏰ {incident.device} is {what} (since "
                            f"{ago(now - incident.created)} ago). ✅ acknowledges it; 🔕 snoozes it.", now)
                incident.next_reminder = now + self.rules.repeat_s
                incident.save()
                count += 1
        return count

    def end_mutes(self, now: float | None = None) -> list[str]:
        """Lift the mutes that ran out; a device still stressed then opens an incident. Returns their devices."""
        now = time.time() if now is None else now
        ended = []
        with store.db.atomic():
            for mute in Mute.select().where(Mute.until <= now):
                ended.append(mute.device)
                mute.delete_instance()
                device = Device.get_or_none(Device.name == mute.device)
                if device is None or device.last_p is None or device.last_p < self.rules.threshold:
                    continue
                if Incident.select().where((Incident.device == mute.device) & (Incident.state == OPEN)
                                           & (Incident.kind == STRESSED)).exists():
                    continue
                sample = store.sample_by_id(device.last_metric)
                if sample is not None:
                    self.open(mute.device, STRESSED, sample, sample.ts, self._detail(sample), now)
        for device in ended:
            log.info("the mute of %s ended", device)
        return ended


def press(incident_id: int, action: str, user_id: int, user_name: str, now: float) -> str:
    """What a button on an incident does, stored in one transaction; returns what the presser is told.

    ✅/❌ store a label on the sample that opened the incident and acknowledge it (no more reminders); ❌ also
    closes it as a false alarm. 🔕 snoozes its reminders. The new revision makes the sender edit every copy.
    """
    with store.db.atomic():
        incident = Incident.get_by_id(incident_id)
        if action in SNOOZE_HOURS:
            hours = SNOOZE_HOURS[action]
            incident.snoozed_until = now + hours * 3600
            answer = f"Reminders about {incident.device} snoozed for {hours} h."
        elif action in ("right", "wrong"):
            store.add_forecast_label(incident.id, int(action == "right"), user_id, user_name)
            incident.acked_by, incident.acked_at = user_name, now
            answer = f"Thanks: stored as a {action} forecast."
        else:
            value = int(action == "ok")
            if incident.sample_id is not None:
                store.add_label(incident.sample_id, value, user_id, user_name)
            incident.acked_by, incident.acked_at = user_name, now
            if value:
                answer = "Thanks: labelled stressed. No more reminders about it."
            else:
                incident.state, incident.resolved_ts = FALSE_ALARM, incident.resolved_ts or incident.last_ts
                answer = "Thanks: labelled normal, and the alert is closed as a false alarm."
        incident.revision += 1
        incident.updated = incident.acted = now
        incident.save()
    log.info("%s pressed %s on incident %d (%s)", user_name, action, incident_id, incident.device)
    return answer


def _muted(now: float) -> set[str]:
    return {m.device for m in Mute.select(Mute.device).where(Mute.until > now)}


def open_forecasts() -> Iterable[tuple[str, str]]:
    """(device, metric) of every open forecast incident: episodes a restart must not alert again."""
    return list(Incident.select(Incident.device, Incident.metric)
                .where((Incident.state == OPEN) & (Incident.kind == FORECAST)).tuples())


# One statement for a whole batch's devices: a save() per device per batch cost more than the batch's insert.
_DEVICE_CHUNK = 500
# A row whose `newer` is 0 only says the device was heard from: its newest sample stays.
_SET_DEVICES = (
    'UPDATE device SET last_received = v.last_received, '
    'last_ts = CASE WHEN v.newer = 1 THEN v.last_ts ELSE device.last_ts END, '
    'last_metric = CASE WHEN v.newer = 1 THEN v.last_metric ELSE device.last_metric END, '
    'last_p = CASE WHEN v.newer = 1 THEN v.last_p ELSE device.last_p END, '
    '"interval" = CASE WHEN v.newer = 1 THEN v.gap ELSE device."interval" END '
    'FROM {source} WHERE device.id = v.id'
)
_DEVICE_COLUMNS = "v(id, last_ts, last_received, last_metric, last_p, gap, newer)"
_SQLITE_DEVICE_ROW = "(?, ?, ?, ?, ?, ?, ?)"  # SQLite: the rows as VALUES
# PostgreSQL: one array literal per column, several times faster for it to read than rows of VALUES.
_PG_SET_DEVICES = _SET_DEVICES.format(source="unnest(%s::bigint[], %s::float8[], %s::float8[], %s::bigint[], "
                                             f"%s::float8[], %s::float8[], %s::int[]) AS {_DEVICE_COLUMNS}")


def _array(column: Iterable[object]) -> str:
    """A PostgreSQL array literal of numbers and NULLs."""
    return "{" + ",".join("NULL" if value is None else repr(value) for value in column) + "}"


def _update_devices(by_device: dict[str, list[StoredSample]], now: float) -> None:
    """One row per device: the newest sample and the usual interval, for /status and the silence check."""
    known = {name: (device_id, last_ts, interval) for device_id, name, last_ts, interval in
             _rows_of("SELECT id, name, last_ts, interval FROM device WHERE name IN ({})", list(by_device))}
    created, changed = [], []
    for name, samples in by_device.items():
        newest = samples[-1]
        if name not in known:
            created.append({"name": name, "last_ts": newest.ts, "last_received": now, "last_metric": newest.id,
                            "last_p": newest.p_stressed, "interval": _gap(samples)})
            continue
        device_id, last_ts, interval = known[name]
        if newest.ts < last_ts:  # only late samples: the device was heard from, its newest stays
            changed.append((device_id, None, now, None, None, None))
            continue
        gap = _gap(samples) if len(samples) > 1 else newest.ts - last_ts
        if gap and gap > 0:
            interval = gap if interval is None else (1 - INTERVAL_WEIGHT) * interval + INTERVAL_WEIGHT * gap
        changed.append((device_id, newest.ts, now, newest.id, newest.p_stressed, interval))
    for start in range(0, len(created), _DEVICE_CHUNK):
        Device.insert_many(created[start:start + _DEVICE_CHUNK]).execute()
    rows = [(*values, int(values[1] is not None)) for values in changed]
    if rows and store.is_postgres():
        store.db.obj.execute_sql(_PG_SET_DEVICES, [_array(column) for column in zip(*rows, strict=True)])
        return
    for start in range(0, len(rows), _DEVICE_CHUNK):
        chunk = rows[start:start + _DEVICE_CHUNK]
        values = ", ".join([_SQLITE_DEVICE_ROW] * len(chunk))
        store.db.obj.execute_sql(f"WITH {_DEVICE_COLUMNS} AS (VALUES {values}) " + _SET_DEVICES.format(source="v"),
                                 [value for row in chunk for value in row])


def _rows_of(sql: str, names: list[str]) -> list[tuple]:
    """A query with one `IN ({})` list of names, in chunks of _DEVICE_CHUNK; plain SQL, as it runs per batch."""
    param, rows = store.db.obj.param, []
    for start in range(0, len(names), _DEVICE_CHUNK):
        chunk = names[start:start + _DEVICE_CHUNK]
        rows += store.db.obj.execute_sql(sql.format(", ".join([param] * len(chunk))), chunk).fetchall()
    return rows


def _gap(samples: list[StoredSample]) -> float | None:
    """The median gap between consecutive samples of one device, or None for a single sample."""
    gaps = sorted(b.ts - a.ts for a, b in pairwise(samples) if b.ts > a.ts)
    return gaps[len(gaps) // 2] if gaps else None
