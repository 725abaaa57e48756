"""Machine tolerances: what a ❌ taught one machine, applied to that machine's samples only.

The model is additive: log-odds = intercept + Σ fᵢ(metricᵢ) + …, with fᵢ the fleet's shape function of metric i.
On a machine that tolerates metric i up to t, fᵢ is read shifted: fᵢ(v - s) with s = t - healthyᵢ (the fleet's
busiest healthy value, ml/features.py), so the tolerated value counts as much as a busy but healthy machine's and
every other value of that metric on that machine moves by the same s. At or above the metric's hard ceiling
there is no shift: the fleet's own fᵢ decides, whatever anyone pressed. Exact, and it explains itself: the
machine's value is read as if the fleet's limits sat s higher on it. Forecasts of the metric aim at the edge
shifted the same way, capped by the ceiling.

The tolerances (and the forecasts on hold, see `Tolerances.on_hold`, and the conditions expected on a machine, see
`Tolerances.expects`) are cached in memory; every batch asks the
database whether any changed (one cheap statement), so a ❌ pressed in another process holds from the next
sample of its machine too.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from agent.wire import Sample
from bot.db import tolerances
from ml.features import FEATURES, ZONES
from schema.conditions import INODES_EDGE
from schema.domain import FILESYSTEM, INODES, IncidentDetail

log = logging.getLogger(__name__)


def shift(metric: str, tolerance: float) -> float:
    """How far the machine's values of the metric are moved down before the fleet's shape function reads them."""
    return max(0.0, tolerance - ZONES[metric].healthy)


def read(metric: str, value: float, tolerance: float) -> float:
    """The value as the model reads it on a machine with this tolerance: shifted below the hard ceiling."""
    ceiling = ZONES[metric].ceiling
    if ceiling is None or math.isnan(value) or value >= ceiling:
        return value
    return value - shift(metric, tolerance)


def edge(metric: str, tolerance: float | None) -> float:
    """Where a forecast of the metric aims on a machine with this tolerance: the fleet's edge shifted, capped by
    the hard ceiling."""
    zone = ZONES[metric]
    if tolerance is None or zone.ceiling is None:
        return zone.edge
    return min(zone.ceiling, zone.edge + shift(metric, tolerance))


DISK = "disk_percent"


def metric_of(name: str) -> str:
    """The model metric a tolerance is of: a filesystem's ("disk:<mount point>") is the disk's."""
    return DISK if name.startswith(FILESYSTEM) else name


def _pushed(detail: IncidentDetail) -> dict[str, float]:
    """Every model metric that pushed the incident toward stressed at its worst: past the fleet's healthy limit,
    where each shape function rises. Not only the drivers its message names (the strongest three): on a machine
    where every metric sits at its edge, tolerating three left P at 100 %. The disk is each filesystem that
    pushed (`disk:<mount point>`), when the sample named them: a full /var/log says nothing of /."""
    values = detail.peak or detail.metrics
    pushed = {metric: float(value) for metric, value in values.items()
              if (zone := ZONES.get(metric)) is not None and value > zone.healthy}
    filesystems = detail.peak_filesystems or detail.filesystems
    if DISK in pushed and filesystems:
        del pushed[DISK]
        pushed.update({FILESYSTEM + mount: float(used) for mount, used in filesystems.items()
                       if used > ZONES[DISK].healthy})
    return pushed


def wanted(detail: IncidentDetail) -> dict[str, float]:
    """What a ❌ on a stressed incident makes its machine tolerate: each metric that pushed it, at its value at
    the incident's worst, below the metric's hard ceiling."""
    return {metric: value for metric, value in _pushed(detail).items()
            if (ceiling := ZONES[metric_of(metric)].ceiling) is not None and value < ceiling}


def untolerable(detail: IncidentDetail) -> dict[str, float]:
    """What pushed the incident past its metric's hard ceiling: no ❌ makes a machine tolerate that. (CPU takes no
    tolerance at all: its edge is only reached with load's, which does.)"""
    return {metric: value for metric, value in _pushed(detail).items()
            if (ceiling := ZONES[metric_of(metric)].ceiling) is not None and value >= ceiling}


@dataclass(frozen=True)
class _Known:
    """One consistent view of the database's tolerances and holds; replaced whole, so readers need no lock."""

    by_device: dict[str, dict[str, float]] = field(default_factory=dict)
    holds: frozenset[tuple[str, str]] = frozenset()
    expected: frozenset[tuple[str, str]] = frozenset()  # (device, condition metric)


class Tolerances:
    """The tolerances of every machine, and the forecasts on hold, as the database has them."""

    def __init__(self) -> None:
        self._known = _Known()
        self._signature: tuple[object, ...] | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Read them again when the database says any changed; blocks on the store (one small statement)."""
        with self._lock:
            signature = tolerances.signature()
            if signature == self._signature:
                return
            by_device: dict[str, dict[str, float]] = {}
            for row in tolerances.tolerances():
                if metric_of(row.metric) in FEATURES:
                    by_device.setdefault(row.device, {})[row.metric] = row.value
            expected = frozenset((row.device, row.metric) for row in tolerances.expected())
            self._known = _Known(by_device, frozenset(tolerances.holds()), expected)
            self._signature = signature
        log.debug("tolerances of %d machines, %d forecasts on hold", len(by_device), len(self._known.holds))

    def of(self, device: str) -> dict[str, float]:
        """metric -> tolerance of one machine; empty for most."""
        return self._known.by_device.get(device, {})

    def read(self, device: str, metrics: Mapping[str, float],
             filesystems: Mapping[str, float] | None = None) -> dict[str, float]:
        """A sample's metrics as the model reads them on its machine. The disk, with filesystems tolerated one by
        one, is the fullest filesystem as read with its own tolerance (or the disk's, for a filesystem without)."""
        tolerated = self.of(device)
        if not tolerated:
            return dict(metrics)
        read_now = {name: read(name, value, tolerated[name]) if name in tolerated else value
                    for name, value in metrics.items()}
        if filesystems and DISK in read_now and any(name.startswith(FILESYSTEM) for name in tolerated):
            read_now[DISK] = max(read(DISK, used, tolerated[FILESYSTEM + mount]) if FILESYSTEM + mount in tolerated
                                 else read(DISK, used, tolerated[DISK]) if DISK in tolerated else used
                                 for mount, used in filesystems.items())
        return read_now

    def apply(self, frame: pd.DataFrame, samples: Sequence[Sample]) -> pd.DataFrame:
        """The model's frame (ml.features) of a batch, row i being samples[i], with the rows of machines that have
        tolerances read as `read` does; the frame itself when no row is one of theirs."""
        by_device = self._known.by_device
        if not by_device:
            return frame
        rows = [i for i, sample in enumerate(samples) if sample.device in by_device]
        if not rows:
            return frame
        values = frame.to_numpy(dtype=float, copy=True)
        names = list(frame.columns)
        for i in rows:
            sample = samples[i]
            shown = {name: values[i, column] for column, name in enumerate(names) if not math.isnan(values[i, column])}
            for name, value in self.read(sample.device, shown, sample.filesystems).items():
                values[i, names.index(name)] = value
        return pd.DataFrame(values, columns=frame.columns, index=frame.index)

    def edge(self, device: str, metric: str) -> float:
        """Where a forecast of the machine's metric ("disk:<mount point>" for a filesystem) aims."""
        if metric.startswith(INODES):  # no tolerance: inodes run out where they run out
            return INODES_EDGE
        tolerated = self.of(device)
        return edge(metric_of(metric), tolerated.get(metric, tolerated.get(metric_of(metric))))

    def on_hold(self, device: str, metric: str) -> bool:
        """Whether someone said "❌ Wrong forecast" of this machine's metric and it has not been back in its
        usual range since."""
        return (device, metric) in self._known.holds

    def expects(self, device: str, metric: str) -> bool:
        """Whether someone said a condition of this machine (its incident's metric) is expected there."""
        return (device, metric) in self._known.expected

    def held_devices(self) -> set[str]:
        return {device for device, _metric in self._known.holds}

    def held(self, device: str) -> list[str]:
        return [metric for d, metric in self._known.holds if d == device]

