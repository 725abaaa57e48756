"""What one batch decides: a stressed stretch or a forecast opens an incident, edits it while it lasts,
resolves it; a silent machine that reports again resolves its silence.

Decisions are made in the same transaction as the batch that causes them, and every message they need is
written to the outbox there too: a crash between storing and sending delivers the alert after the restart,
and a restart never repeats one already delivered. The chat's sender delivers.

Rules (ALERT_THRESHOLD, ALERT_HYSTERESIS, RECOVER_SAMPLES):
- a device whose P(stressed) reaches the threshold, with no open incident and not muted, opens one;
- while it lasts every sample updates it (latest P, peak, drivers); the sender edits its message;
- it resolves after RECOVER_SAMPLES consecutive samples below threshold - hysteresis, so a P wobbling
  around the threshold gives one incident, not ten.
A forecast episode (bot/pipeline/forecast.py) is an incident too, resolved when the forecast no longer holds; a
forecast someone called wrong opens none until its metric is back in its usual range. So is a condition of one of
the machine's objects (bot/pipeline/conditions.py), opened and resolved as its rule says, and not opened where
someone said it is expected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from operator import attrgetter

from bot.db import Incident, StoredSample, incidents, ingest, muting, tolerances
from bot.pipeline import learnt
from bot.pipeline.baselines import Baselines
from bot.pipeline.conditions import SOME_DISKS, UPTIME, Conditions, State, Verdict, unread
from bot.pipeline.disks import HEALTH, Disk, Disks
from bot.pipeline.forecast import Forecast, Forecaster, inodes, zone
from bot.pipeline.lifecycle import Incidents
from bot.pipeline.tolerating import Tolerances
from ml.features import FEATURES
from schema.conditions import CONDITIONS, Count, Event, Evidence, Fact, Severity, key, parse_key
from schema.domain import FILESYSTEM, INODES, IncidentDetail, Kind, Muting, Reply

Drivers = Callable[[dict[str, float]], list[str]]
FAILING = CONDITIONS["disk_failing"]


def disk_evidence(disk: Disk) -> Evidence:
    """What a failing disk's alert says of it: its name, model and serial."""
    return Evidence(disk.disk, {}, {"smart_health": f"{disk.model}|{disk.serial}"})


def model_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {name: metrics[name] for name in FEATURES if name in metrics}


def drivers_of(sample: StoredSample, drivers: Drivers, tolerances: Tolerances | None) -> list[str]:
    """What drove a sample: its metrics read as the model read them, with its machine's tolerances."""
    metrics = sample.metrics if tolerances is None else tolerances.read(sample.device, sample.metrics,
                                                                         sample.filesystems)
    return drivers(metrics)


def stressed_detail(sample: StoredSample, drivers: list[str]) -> IncidentDetail:
    """What a stressed incident shows of its sample: what drove it, and its metrics, filesystems and top
    processes now and at its worst."""
    metrics = model_metrics(sample.metrics)
    filesystems, processes = sample.filesystems or {}, sample.processes or {}
    return IncidentDetail(drivers=drivers, metrics=metrics, peak=metrics, filesystems=filesystems,
                          peak_filesystems=filesystems, processes=processes, peak_processes=processes)


def _with_newest(detail: IncidentDetail, sample: StoredSample) -> IncidentDetail:
    """The detail of a lasting incident with the newest sample's metrics, filesystems and top processes."""
    return replace(detail, metrics=model_metrics(sample.metrics), filesystems=sample.filesystems or {},
                   processes=sample.processes or {})


def _forecast_detail(forecast: Forecast) -> IncidentDetail:
    return IncidentDetail(metric=forecast.metric, ts=forecast.ts, level=forecast.level,
                          slope_per_h=forecast.slope_per_h, eta_s=forecast.eta_s)


class Decider:
    """Walks a batch's new samples through the incidents' state machines; blocks on the store."""

    def __init__(self, incidents: Incidents, drivers: Drivers, forecaster: Forecaster, baselines: Baselines,
                 tolerances: Tolerances | None = None, conditions: Conditions | None = None,
                 disks: Disks | None = None) -> None:
        self.incidents = incidents
        self.rules = incidents.rules
        self.drivers = drivers
        self.forecaster = forecaster
        self.baselines = baselines
        self.tolerances = tolerances
        self.conditions = Conditions() if conditions is None else conditions
        self.disks = Disks(None) if disks is None else disks

    def _stressed(self, sample: StoredSample) -> IncidentDetail:
        return stressed_detail(sample, drivers_of(sample, self.drivers, self.tolerances))

    def decide(self, new: list[StoredSample], now: float | None = None) -> None:
        """Update the devices and their incidents for a batch's new samples; called inside its transaction."""
        if not new:
            return
        now = time.time() if now is None else now
        ordered = sorted(new, key=attrgetter("ts"))  # the state machines and the trends walk time forward
        by_device: dict[str, list[StoredSample]] = {}
        for sample in ordered:
            by_device.setdefault(sample.device, []).append(sample)
        ingest.update_devices(by_device, now)
        open_incidents = incidents.open_of(by_device)
        muted = muting(now, self.rules.tz)
        # The open conditions of each device, once per batch (a device's samples walk only its own).
        conditions: dict[str, dict[str, Incident]] = {}
        for (device, metric), incident in open_incidents.items():
            if incident.kind == Kind.CONDITION:
                conditions.setdefault(device, {})[metric] = incident
        for device, samples in by_device.items():
            silent = open_incidents.get((device, Kind.SILENT))
            if silent is not None:
                self.incidents.resolve(silent, samples[0].ts, Reply.REPORTING_AGAIN, now)
            self._follow(device, samples, open_incidents.get((device, Kind.STRESSED)), device in muted, now)
            opened = conditions.get(device, {})
            self._conditions(device, samples, opened, device in muted, now)
            self._disks(device, samples, opened, device in muted, now)
        self._forecasts(ordered, by_device, open_incidents, muted, now)
        learnt.save(self.forecaster, self.baselines, now)  # what the batch taught, kept with it

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
                    incident = self.incidents.open(device, Kind.STRESSED, sample, sample.ts, self._stressed(sample),
                                                   now)
                continue
            incident.last_ts, incident.last_p, incident.updated = sample.ts, p, now
            detail = _with_newest(incident.detail, sample)
            if p >= (incident.peak_p or 0.0):  # the worst moment: what drove it is what the message names
                incident.peak_p = p
                detail = incident.detail.renewed(self._stressed(sample))
            incident.detail = detail
            incident.below = incident.below + 1 if p < below else 0
            incident.revision += 1
            if incident.below >= self.rules.recover_samples:
                self.incidents.resolve(incident, sample.ts, Reply.RECOVERED, now)
                incident = None
                continue
            incident.save()

    def _conditions(self, device: str, samples: list[StoredSample], open_conditions: dict[str, Incident],
                    muted: bool, now: float) -> None:
        """Walk one device's new samples through its conditions: open, keep up to date, resolve (`open_conditions`,
        the device's open condition incidents by metric, is kept up to date)."""
        if not open_conditions and not any(sample.readings or UPTIME in sample.metrics for sample in samples):
            return  # the hot path: a sample of metrics alone has no condition to decide
        ruled = (Fact, Count, Event)  # a disk's incident is the disk model's: see _disks
        opened = {metric: incident for metric, incident in open_conditions.items()
                  if (found := parse_key(metric)) is not None and isinstance(found[0].rule, ruled)}
        were_open = set(opened)
        for sample in samples:
            verdicts, whole = self.conditions.observe(sample)
            for verdict in verdicts:
                self._verdict(device, sample, verdict, opened, muted, now)
            gone = [metric for metric in opened if (found := parse_key(metric)) is not None
                    and found[0].reading in whole and all(v.metric != metric for v in verdicts)
                    and not unread(sample, found[0].reading, found[1])]
            for metric in gone:  # the object is no longer in a reading that is whole: unmounted, stopped, removed
                self.incidents.resolve(opened.pop(metric), sample.ts, Reply.RECOVERED, now)
        for metric in were_open - set(opened):
            del open_conditions[metric]  # resolved
        open_conditions.update(opened)

    def _disks(self, device: str, samples: list[StoredSample], open_conditions: dict[str, Incident], muted: bool,
               now: float) -> None:
        """A disk the disk model says is likely to fail opens its incident; it stays open, kept up to date, until a
        person answers it or the disk leaves the machine: not while its SMART cannot be read."""
        for sample in samples:
            found = self.disks.observe(sample)
            if found is None:
                continue
            for disk in found:
                metric = key(FAILING.name, disk.serial)
                incident = open_conditions.get(metric)
                if incident is None and not disk.alert:
                    continue
                evidence = f"{FAILING.says(disk_evidence(disk))} (P {disk.p:.0%}): {disk.explanation}"
                verdict = Verdict(FAILING, disk.serial, State.OPEN, evidence, FAILING.severity)
                if incident is None:
                    if not muted and not (self.tolerances is not None and self.tolerances.expects(device, metric)):
                        open_conditions[metric] = self.incidents.open(
                            device, Kind.CONDITION, sample, sample.ts,
                            IncidentDetail(metric=metric, ts=sample.ts, evidence=evidence, severity=FAILING.severity),
                            now)
                    continue
                self._verdict(device, sample, verdict, {metric: incident}, muted, now)
            serials = {disk.serial for disk in found}
            for metric in list(open_conditions):
                found_key = parse_key(metric)
                if found_key is not None and found_key[0] is FAILING and found_key[1] not in serials \
                        and not self._unread(sample, found_key[1]):
                    self.incidents.resolve(open_conditions.pop(metric), sample.ts, Reply.RECOVERED, now)

    def _unread(self, sample: StoredSample, serial: str) -> bool:
        """Whether the disk of this serial, missing from the sample's SMART, could not be read rather than left: a disk
        not known by name is given the benefit of the doubt while any disk of the sample could not be read."""
        if not sample.unreadable:
            return False  # the usual case: every disk was read
        name = self.disks.name_of(serial)
        if name is None:
            return any(source.startswith(SOME_DISKS) for source in sample.unreadable)
        return unread(sample, HEALTH, name)

    def _verdict(self, device: str, sample: StoredSample, verdict: Verdict, opened: dict[str, Incident],
                 muted: bool, now: float) -> None:
        incident = opened.get(verdict.metric)
        if verdict.state == State.CLEAR:
            if incident is not None:
                self.incidents.resolve(opened.pop(verdict.metric), sample.ts, Reply.RECOVERED, now)
            return
        detail = IncidentDetail(metric=verdict.metric, ts=sample.ts, evidence=verdict.evidence,
                                severity=verdict.severity)
        if incident is None:
            if verdict.state in (State.OPEN, State.EVENT) and not muted and not (
                    self.tolerances is not None and self.tolerances.expects(device, verdict.metric)):
                incident = self.incidents.open(device, Kind.CONDITION, sample, sample.ts, detail, now,
                                               remind=verdict.severity != Severity.INFO)
                if verdict.state == State.EVENT:  # said, and over at once: no recovery to tell
                    self.incidents.resolve(incident, sample.ts, None, now)
                else:
                    opened[verdict.metric] = incident
            return
        incident.last_ts, incident.updated = sample.ts, now
        changed = (verdict.evidence, verdict.severity) != (incident.detail.evidence, incident.detail.severity)
        incident.detail = replace(incident.detail, ts=sample.ts, evidence=verdict.evidence, severity=verdict.severity)
        if changed:
            incident.revision += 1
        incident.save()

    def _forecasts(self, ordered: list[StoredSample], by_device: dict[str, list[StoredSample]],
                   open_incidents: dict[tuple[str, str], Incident], muted: Muting, now: float) -> None:
        """A new forecast episode opens an incident; an open one follows its forecast and ends with it."""
        due = self.forecaster.observe((s.id, s.device, s.ts, s.metrics, s.filesystems, inodes(s.readings))
                                      for s in ordered)
        self._release_holds(by_device)
        for (device, metric), incident in open_incidents.items():
            if incident.kind != Kind.FORECAST or not self.forecaster.back(device):
                continue  # a device whose trends are still being restored after a start keeps its forecast
            current = self.forecaster.forecasts(device).get(metric)
            if not self.forecaster.holds(device, metric) or current is None:
                self.incidents.resolve(incident, by_device[device][-1].ts, None, now)
                continue
            incident.last_ts, incident.updated = current.ts, now
            incident.detail = incident.detail.renewed(_forecast_detail(current))
            incident.revision += 1
            incident.save()
        for forecast in due:
            usual = self.baselines.get(forecast.device).get(forecast.metric)
            # A metric (a young filesystem) with no usual range yet: its typical level.
            if forecast.level <= (usual.high if usual else zone(forecast.metric).typical):
                continue  # a machine that always runs this full and this fast: its normal, not news
            self.forecaster.mark_alerted(forecast)
            if forecast.device in muted or (forecast.device, forecast.metric) in open_incidents:
                continue
            if self.tolerances is not None and self.tolerances.on_hold(forecast.device, forecast.metric):
                continue  # called wrong, and not back in its usual range since: the same fill
            sample = StoredSample(forecast.sample_id, forecast.device, forecast.ts, {}, None, None)
            self.incidents.open(forecast.device, Kind.FORECAST, sample, forecast.ts, _forecast_detail(forecast), now)

    def _release_holds(self, by_device: dict[str, list[StoredSample]]) -> None:
        """A forecast on hold alerts again once its metric is back in its usual range (a filesystem without one of
        its own yet: the disk's; without either, at or below its typical level)."""
        if self.tolerances is None:
            return
        for device in self.tolerances.held_devices() & by_device.keys():
            newest = by_device[device][-1]
            usual = self.baselines.get(device)
            for metric in self.tolerances.held(device):
                if metric.startswith(INODES):
                    value, name = (inodes(newest.readings) or {}).get(metric.removeprefix(INODES)), metric
                elif metric.startswith(FILESYSTEM):
                    value = (newest.filesystems or {}).get(metric.removeprefix(FILESYSTEM))
                    name = metric if metric in usual else "disk_percent"
                else:
                    value, name = newest.metrics.get(metric), metric
                bound = usual[name].high if name in usual else zone(metric).typical
                if value is not None and value <= bound:
                    tolerances.release(device, metric)
