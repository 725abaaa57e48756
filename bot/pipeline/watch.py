"""The periodic watch, for what no sample announces: a machine that stopped reporting opens a silence incident,
an incident nobody acknowledged gets its reminder, a mute that ran out lets a stressed machine alert.

A silence is the machine's, not the bot's: while the bot's intake receives nothing at all (the broker is down,
the consumer has no partitions, Prometheus stopped writing) no machine is silent, and when it receives again,
every machine gets its SILENT_AFTER of grace, measured from then.

Reads the device table (one row per device), never the samples, so its cost does not grow with them.
Every method blocks on the store: the bot runs them in a thread.
"""

from __future__ import annotations

import logging
import time

from bot.db import (
    Device,
    incidents,
    muting,
    oncall,
    receiving_stretch,
    sample_at,
    samples,
    silent_devices,
    transaction,
)
from bot.pipeline.decide import Drivers, drivers_of, stressed_detail
from bot.pipeline.escalation import Escalator
from bot.pipeline.lifecycle import Incidents
from bot.pipeline.tolerating import Tolerances
from schema.domain import IncidentDetail, Kind, State, matches
from schema.oncall import parents_of

log = logging.getLogger(__name__)


class Watch:
    def __init__(self, incidents: Incidents, drivers: Drivers, tolerances: Tolerances | None = None,
                 escalator: Escalator | None = None) -> None:
        self.incidents = incidents
        self.rules = incidents.rules
        self.drivers = drivers
        self.tolerances = tolerances
        self.escalator = escalator
        self._mutes_seen: float | None = None  # windows that closed are looked for since then

    def run(self, now: float | None = None) -> bool:
        """One round of them all; whether it queued a message."""
        now = time.time() if now is None else now
        self.check_silent(now)
        self.release_behind(now)
        self.due_reminders(now)
        self.end_mutes(now)
        if self.escalator is not None:
            with transaction():
                self.escalator.run(now)
        return self.incidents.take_queued()

    def check_silent(self, now: float | None = None) -> int:
        """Open a silence incident for every device that has stopped reporting; returns how many opened.

        A machine behind a parent (DEPENDENCIES, /depends) that is silent or stressed goes silent quietly: the
        parent's alert names it. While its parent is late but not yet silent, its own silence waits for it.
        """
        now = time.time() if now is None else now
        opened = 0
        with transaction():
            stretch = receiving_stretch(now)
            if stretch is None:
                return 0
            since, received = stretch
            heard_until = min(now, received)  # the intake's last sign of life: a device is silent up to there
            already, muted = silent_devices(), muting(now, self.rules.tz)
            rules = [*self.rules.dependencies, *oncall.dependencies()]
            devices = {device.name: device for device in samples.devices()}
            parents = {rule.parent for rule in rules}
            down = incidents.open_of_kinds(parents, (Kind.SILENT, Kind.STRESSED))

            def unheard(device: Device) -> float:
                return heard_until - max(device.last_received, since)

            def late(name: str) -> bool:
                """Not heard for a third of its silence time, not silent yet: it may be about to be."""
                device = devices.get(name)
                limit = self.rules.silent_after(device.interval) if device else 0.0
                return device is not None and limit / 3 <= unheard(device) < limit

            # Parents first: a switch and the machines behind it that stop together are one outage.
            for device in sorted(devices.values(), key=lambda d: d.name not in parents):
                if device.name in already or device.name in muted:
                    continue
                if unheard(device) < self.rules.silent_after(device.interval):
                    continue
                behind = parents_of(device.name, rules) if rules else []
                parent = next((p for p in behind if p in down), None)
                if parent is None and any(late(p) for p in behind):
                    continue  # its silence waits to see whether its parent's explains it
                detail = IncidentDetail(parent=parent, parent_id=down[parent].id) if parent else IncidentDetail()
                incident = self.incidents.open(device.name, Kind.SILENT, None, device.last_ts, detail, now)
                if detail.parent:
                    self.incidents.adopt(down[detail.parent], device.name, now)
                elif device.name in parents:
                    down[device.name] = incident
                opened += 1
        return opened

    def release_behind(self, now: float | None = None) -> int:
        """A machine still silent SILENT_AFTER after its parent's incident ended alerts on its own; how many."""
        now = time.time() if now is None else now
        released = 0
        with transaction():
            for child, parent in incidents.behind_parents():
                if parent is not None and parent.state == State.OPEN:
                    continue
                ended = parent.resolved_ts or parent.last_ts if parent is not None else child.created
                device = samples.device(child.device)
                if now - max(ended, child.created) >= self.rules.silent_after(device.interval if device else None):
                    self.incidents.release(child, now)
                    released += 1
        return released

    def due_reminders(self, now: float | None = None) -> int:
        """Queue a reminder (a reply) for every open, unacknowledged, unsnoozed incident whose time has come."""
        now = time.time() if now is None else now
        with transaction():
            due = incidents.reminders_due(now)
            for incident in due:
                self.incidents.remind(incident, now)
        return len(due)

    def end_mutes(self, now: float | None = None) -> list[str]:
        """Lift the mutes that ran out and see the windows that closed since the last look; a device they
        covered that is still stressed (and not muted otherwise) opens an incident. Returns those devices."""
        now = time.time() if now is None else now
        since, self._mutes_seen = self._mutes_seen or now, now
        with transaction():
            patterns = incidents.ended_mutes(since, now, self.rules.tz)
            if not patterns:
                return []
            still = muting(now, self.rules.tz)
            ended = [d.name for d in samples.devices() if d.name not in still and any(
                matches(p, d.name) for p in patterns)]
            for name in ended:
                device = samples.device(name)
                if device is None or device.last_p is None or device.last_p < self.rules.threshold:
                    continue
                if incidents.has_open(name, Kind.STRESSED):
                    continue
                sample = sample_at(device.last_metric, device.last_ts) if device.last_metric is not None else None
                if sample is not None:
                    detail = stressed_detail(sample, drivers_of(sample, self.drivers, self.tolerances))
                    self.incidents.open(name, Kind.STRESSED, sample, sample.ts, detail, now)
        for pattern in patterns:
            log.info("the mute of %s ended", pattern)
        return ended
