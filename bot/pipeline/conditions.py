"""Conditions of a machine's objects, decided sample by sample from their readings by the catalogue's rules
(schema/conditions.py): what the decisions of a batch (bot/pipeline/decide.py) open, keep and resolve.

For every reading a sample carries, each condition about that reading gives each object a verdict:
- OPEN: it holds and its rule lets it open (it has held for `for_s`; a `changed` fact was seen not holding
  before; a count passed its bound within the window);
- HOLDS: it holds, but could not open yet (an open incident stays open: a restart forgets how long it has held);
- CLEAR: it does not hold (or the object is gone from a reading that is whole): an open incident recovers;
- EVENT: it happened (the machine rebooted): said, and over at once.
A reading missing from a sample was not read: its conditions keep their state; so does a disk missing from its SMART
readings whose SMART could not be read this time (`unreadable`: "smart sdb"). Samples without readings cost a
dictionary look-up. State lives in memory, per device, condition and object; a restart starts the clocks again.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from agent.vocabulary import disk_source
from bot.db.samples import StoredSample
from schema.conditions import BY_READING, CONDITIONS, Condition, Count, Event, Evidence, Fact, Severity, key

UPTIME = "uptime_s"  # the machine's metric its reboots are seen in
SMART = ("smart_", "nvme_")  # the readings of a disk's SMART
SOME_DISKS = "smart"  # unreadable: smartctl could not be asked, or more disks could not be read than are named


def unread(sample: StoredSample, reading: str, obj: str) -> bool:
    """Whether a disk missing from a SMART reading of the sample could not be read, rather than left the machine: it
    is said unreadable by name, or among the disks counted unnamed."""
    unreadable = sample.unreadable
    return bool(unreadable) and reading.startswith(SMART) and (
        disk_source(obj) in unreadable or SOME_DISKS in unreadable)


class State(StrEnum):
    OPEN = "open"
    HOLDS = "holds"
    CLEAR = "clear"
    EVENT = "event"


@dataclass(frozen=True)
class Verdict:
    condition: Condition
    object: str
    state: State
    evidence: str
    severity: Severity

    @property
    def metric(self) -> str:
        """The metric of its incident."""
        return key(self.condition.name, self.object)


_Key = tuple[str, str, str]  # (device, condition, object)


class Conditions:
    """The rules' memory: since when each fact holds, which changed facts were seen clear, each count's window,
    and each machine's previous sample for its events. Thread-safe: batches are decided in worker threads."""

    def __init__(self) -> None:
        self._since: dict[_Key, float] = {}
        self._seen_clear: set[_Key] = set()
        self._counts: dict[tuple[str, str], dict[str, deque[tuple[float, float]]]] = {}  # (device, condition)
        self._before: dict[str, float] = {}  # device -> uptime of its previous sample
        self._lock = threading.Lock()

    def observe(self, sample: StoredSample) -> tuple[list[Verdict], set[str]]:
        """The verdicts of one sample (taken in time order per device), and the readings it carries whole."""
        verdicts: list[Verdict] = []
        with self._lock:
            self._event(sample, verdicts)
            readings = sample.readings
            if not readings:
                return verdicts, set()
            for reading, objects in readings.items():
                for condition in BY_READING.get(reading, ()):
                    rule = condition.rule
                    if isinstance(rule, Fact):
                        for obj in objects:
                            verdicts.append(self._fact(sample, condition, rule, obj))
                    elif isinstance(rule, Count):
                        verdicts.extend(self._count(sample, condition, rule, objects))
        return verdicts, set(readings)

    def _evidence(self, sample: StoredSample, condition: Condition, obj: str, count: float = 0.0) -> Evidence:
        readings = sample.readings or {}
        values = {name: readings[name][obj] for name in (condition.reading, *condition.reads)
                  if obj in readings.get(name, {})}
        if not obj:
            values.update(sample.metrics)
        notes = {name: (sample.notes or {})[name][obj] for name in (condition.reading, *condition.reads)
                 if obj in (sample.notes or {}).get(name, {})}
        return Evidence(obj, values, notes, count)

    def _fact(self, sample: StoredSample, condition: Condition, rule: Fact, obj: str) -> Verdict:
        evidence = self._evidence(sample, condition, obj)
        at: _Key = (sample.device, condition.name, obj)
        if not rule.holds(evidence.values):
            self._since.pop(at, None)
            self._seen_clear.add(at)
            return Verdict(condition, obj, State.CLEAR, "", condition.severity)
        since = self._since.setdefault(at, sample.ts)
        ready = sample.ts - since >= rule.for_s and (not rule.changed or at in self._seen_clear)
        severity = Severity.CRITICAL if rule.critical is not None and rule.critical(evidence.values) \
            else condition.severity
        return Verdict(condition, obj, State.OPEN if ready else State.HOLDS, condition.says(evidence), severity)

    def _count(self, sample: StoredSample, condition: Condition, rule: Count,
               objects: Mapping[str, float]) -> list[Verdict]:
        """Each object's events within the window, those of this sample added: objects that had some lately
        get a verdict too, so a window that empties recovers."""
        verdicts = []
        windows = self._counts.setdefault((sample.device, condition.name), {})
        for obj, happened in objects.items():
            if happened > 0:
                windows.setdefault(obj, deque()).append((sample.ts, happened))
        for obj, window in list(windows.items()):
            while window and window[0][0] <= sample.ts - rule.window_s:
                window.popleft()
            total = sum(n for _, n in window)
            if not window:
                del windows[obj]
            if total > rule.more_than:
                evidence = self._evidence(sample, condition, obj, total)
                verdicts.append(Verdict(condition, obj, State.OPEN, condition.says(evidence), condition.severity))
            else:
                verdicts.append(Verdict(condition, obj, State.CLEAR, "", condition.severity))
        return verdicts

    def _event(self, sample: StoredSample, verdicts: list[Verdict]) -> None:
        """The machine's events: a reboot is its uptime going back."""
        uptime = sample.metrics.get(UPTIME)
        if uptime is None:
            return
        before = self._before.get(sample.device)
        self._before[sample.device] = uptime
        condition = CONDITIONS["rebooted"]
        assert isinstance(condition.rule, Event)
        if before is not None and condition.rule.happened({UPTIME: uptime}, {UPTIME: before}):
            evidence = Evidence("", {UPTIME: uptime, "uptime_before": before}, {})
            verdicts.append(Verdict(condition, "", State.EVENT, condition.says(evidence), condition.severity))
