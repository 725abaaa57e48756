"""Forecasts: when will a filling filesystem, memory or swap reach its edge, from the device's recent trend.

A device that reports its filesystems has a trend per mount point (metric `disk:<mount point>`); one that
reports only `disk_percent` has a trend of that. A writable filesystem's inodes have one too (`inodes:<mount
point>`, heading for 100 % used), which alerts only once past INODES_PAST used: the node-mixin's three-part rule
(schema/conditions.py, `inodes_filling`).

Like Prometheus' predict_linear over the last hours, but robust: samples are reduced to the median of each
10-minute interval, the trend is the Theil-Sen line through those medians, and "now" is the median of the last
three intervals projected to the newest sample. One wild sample moves neither. A sustained jump (a cleanup, a
big copy) restarts the trend instead of bending it. Time is the samples' own `ts`, never the wall clock.

An interval's median is of one sample per 20-second slot of the device (the first to arrive), so a device
that reports every second costs no more than one that reports every 20 seconds, and most samples cost one
comparison. A taken sample goes into the current interval; the line is refit only when an interval closes,
over at most WINDOW_BUCKETS medians. The state is rebuilt at start from the store's last window of samples,
and feeding it the same samples gives the same forecasts as building it live.

A machine's daily cycle: a trend remembers when it fell back (a sustained drop: logs rotated, a backup shipped
off). One that fell back at the same time of day on each of its last CYCLE_DAYS days is expected to fall back
then again, so it is not heading for the edge when that comes first; it alerts when the edge comes before it
(the logs grow faster than usual) or when the day's drop does not come. A few floats per trend, looked at only
when an interval closes.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ml.features import ZONES, Zone
from schema.conditions import INODES_EDGE, INODES_PAST
from schema.domain import FILESYSTEM, INODES

TRENDED = ("disk_percent", "mem_percent", "swap_percent")
_BESIDE_FILESYSTEMS = ("mem_percent", "swap_percent")  # disk_percent is one of them, the fullest
BUCKET_S = 600.0  # one median per 10 minutes
WINDOW_BUCKETS = 18  # the trend looks back 3 hours
REBUILD_S = (WINDOW_BUCKETS + 2) * BUCKET_S  # reaches back to the start of the oldest interval kept
MIN_BUCKETS = 4  # 40 minutes of data before any forecast
SLOTS_PER_BUCKET = 30  # at most one sample per 20 s goes into an interval's median
SLOT_S = BUCKET_S / SLOTS_PER_BUCKET
LEVEL_BUCKETS = 3  # "now" is the median of this many projected interval medians
SHIFT_MIN = 3.0  # percentage points: a smaller jump is noise, not a new level
MIN_SLOPE_PER_S = 0.01 / 3600  # flatter than 0.01 points an hour is no trend at all
END_FACTOR = 1.5  # an alerted episode ends when the edge moves this far beyond the horizon (no flapping)
DAY_S = 86400.0
CYCLE_DAYS = 3  # a drop at the same time of day on each of this many days in a row is the machine's daily cycle
CYCLE_SLACK_S = 3600.0  # "the same time of day": within an hour
KEPT_DROPS = 8 * CYCLE_DAYS  # room for a few drops a day besides the daily one
DROP_SEEN_S = 2 * BUCKET_S  # a drop is recorded when its second interval closes


@dataclass(frozen=True)
class Forecast:
    """Where one metric of one device is heading, as of the sample `sample_id` taken at `ts`."""

    device: str
    metric: str
    sample_id: int
    ts: float
    level: float  # the metric now, robust to an outlier
    slope_per_h: float  # percentage points per hour
    eta_s: float | None  # seconds until the edge at this pace; None when not heading toward it

    def within(self, horizon_s: float) -> bool:
        """The edge is reached within the horizon."""
        return self.eta_s is not None and self.eta_s <= horizon_s


def theil_sen(times: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """(slope, intercept) of the Theil-Sen line: the median of the slopes between every two points, and the
    median intercept at that slope (scipy's theilslopes with method="joint", without the confidence interval
    it also works out, at five times the cost of the line: docs/performance.md, the hot path)."""
    pairs = range(len(times))
    slope = statistics.median([(values[j] - values[i]) / (times[j] - times[i])
                               for i in pairs for j in pairs[i + 1:] if times[j] != times[i]])
    return slope, statistics.median([v - slope * t for t, v in zip(times, values, strict=True)])


class Trend:
    """The recent course of one metric of one device."""

    def __init__(self, edge: float) -> None:
        self.edge = edge
        self.medians: deque[tuple[float, float]] = deque()  # (interval centre, median), oldest first
        self.open_index: int | None = None  # the interval samples go into; an earlier one's are late
        self.latest: tuple[int, float] = (0, 0.0)  # (sample id, ts) of the newest sample taken
        self.open_values: list[float] = []  # at most SLOTS_PER_BUCKET
        self.slope = 0.0  # per second, as of the last closed interval
        self.ref_ts = 0.0
        self.ref_level: float | None = None  # the level at ref_ts; None until there is a trend
        self.drops: deque[float] = deque(maxlen=KEPT_DROPS)  # when the metric fell to a new level, oldest first

    def add(self, index: int, value: float) -> bool:
        """Take one sample of interval `index` (not an interval already closed); True when it closed an
        interval and the line was refit."""
        closed = self.open_index is not None and index > self.open_index
        if closed:
            self._close()
        if self.open_index != index:
            self.open_index = index
            self.open_values.clear()
        self.open_values.append(value)
        return closed

    def _close(self) -> None:
        assert self.open_index is not None
        self.medians.append(((self.open_index + 0.5) * BUCKET_S, statistics.median(self.open_values)))
        while self.medians and self.medians[0][0] < self.medians[-1][0] - WINDOW_BUCKETS * BUCKET_S:
            self.medians.popleft()
        self._restart_after_a_shift()
        self._fit()

    def _restart_after_a_shift(self) -> None:
        """When the last two intervals both sit far off the line of the ones before, on the same side, the
        metric moved to a new level: the old intervals say nothing about where it goes from there."""
        if len(self.medians) < 5:
            return
        times, values = zip(*self.medians, strict=True)
        slope, intercept = theil_sen(times[:-2], values[:-2])
        residuals = [v - (intercept + slope * t) for t, v in self.medians]
        tolerance = max(SHIFT_MIN, 4 * statistics.median(abs(r) for r in residuals[:-2]))
        last = residuals[-2:]
        fell = all(r < -tolerance for r in last)
        if fell or all(r > tolerance for r in last):
            for _ in range(len(self.medians) - 2):
                self.medians.popleft()
            if fell:
                self.drops.append(self.medians[0][0])  # the first interval at the new level

    def next_daily_drop(self, ts: float) -> float | None:
        """When the metric is expected to fall back next, as of `ts`: a day after its latest drop (plus the
        day-to-day jitter seen), when it fell at that time of day on each of the CYCLE_DAYS days up to it. None:
        no daily cycle, or the drop it expected did not come."""
        if not self.drops:
            return None
        latest, late = self.drops[-1], 0.0
        for days in range(1, CYCLE_DAYS):
            then = latest - days * DAY_S
            jitter = min((abs(drop - then) for drop in self.drops), default=math.inf)
            if jitter > CYCLE_SLACK_S:
                return None
            late = max(late, jitter)
        expected = latest + DAY_S + late
        # A drop is seen two intervals after it began: later than that, the day's drop did not come.
        return expected if ts <= expected + DROP_SEEN_S else None

    def _fit(self) -> None:
        if len(self.medians) < MIN_BUCKETS:
            self.ref_level = None
            return
        times, values = zip(*self.medians, strict=True)
        self.slope = theil_sen(times, values)[0]
        self.ref_ts = times[-1]
        self.ref_level = statistics.median(
            v + self.slope * (self.ref_ts - t) for t, v in list(self.medians)[-LEVEL_BUCKETS:]
        )

    def at(self, ts: float, edge: float | None = None) -> tuple[float, float, float | None] | None:
        """(level, slope per hour, seconds to the edge (or to `edge`) or None) at `ts`; None without enough data."""
        if self.ref_level is None:
            return None
        level = self.ref_level + self.slope * (ts - self.ref_ts)
        if self.slope < MIN_SLOPE_PER_S:
            return level, self.slope * 3600, None
        eta = max(0.0, ((self.edge if edge is None else edge) - level) / self.slope)
        drop = self.next_daily_drop(ts)
        if drop is not None and drop <= ts + eta:  # the day's drop comes first: not heading for the edge
            return level, self.slope * 3600, None
        return level, self.slope * 3600, eta


# A filesystem's inodes: "typical" is the level below which a forecast of them says nothing (decide.py).
INODE_ZONE = Zone(typical=INODES_PAST, healthy=INODES_PAST, edge=INODES_EDGE, top=100.0)


def zone(metric: str) -> Zone:
    """The zone of a trended metric: a filesystem's is the disk's; its inodes have their own."""
    if metric.startswith(INODES):
        return INODE_ZONE
    return ZONES["disk_percent" if metric.startswith(FILESYSTEM) else metric]


# (id, device, ts, metrics, filesystems or None, writable filesystems' inodes used or None) of one sample, as a
# forecaster takes it.
Observed = tuple[int, str, float, dict[str, float], dict[str, float] | None, dict[str, float] | None]


def inodes(readings: dict[str, dict[str, float]] | None) -> dict[str, float] | None:
    """The inodes used (%) of a sample's writable filesystems, from its readings."""
    if not readings or "inodes_percent" not in readings:
        return None
    readonly = readings.get("readonly", {})
    return {mount: used for mount, used in readings["inodes_percent"].items() if readonly.get(mount) != 1}


class Forecaster:
    """Trends of every device's filesystems (or disk), memory and swap, and which forecast episodes were alerted.

    An episode starts when a forecast reaches the edge within the horizon and is alerted once; it ends when
    the forecast no longer holds (the trend flattened, the metric was cleaned up), so a new fill alerts again.
    Thread-safe: the poller feeds it from a worker thread while /status reads it.
    """

    def __init__(self, horizon_s: float, edge_of: Callable[[str, str], float] | None = None) -> None:
        self.horizon_s = horizon_s
        # Where (device, metric) is heading to: the fleet's edge, or a machine's own (its tolerance, capped).
        self.edge_of = edge_of
        self.trends: dict[str, dict[str, Trend]] = {}  # device -> metric -> trend
        self.slots: dict[str, float] = {}  # device -> the slot (ts // SLOT_S) of its last sample taken
        self.alerted: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def observe(self, samples: Iterable[Observed]) -> list[Forecast]:
        """Feed (id, device, ts, metrics, filesystems) samples in the order they were taken; return the forecasts that
        reach the edge within the horizon in an episode not alerted yet (the newest per device and metric).

        Only the first sample of each slot of a device is taken; a late one, of a slot before the last one
        taken, is left out, so live and rebuilt states see the same data.
        """
        due: dict[tuple[str, str], Forecast] = {}
        slots = self.slots
        with self._lock:
            for sample_id, device, ts, metrics, filesystems, inodes_used in samples:
                slot = ts // SLOT_S
                if slot <= slots.get(device, -1.0):  # its slot is taken: 3 samples of 4 at one per 5 s
                    continue
                slots[device] = slot
                trends = self.trends.get(device)
                if trends is None:
                    trends = self.trends[device] = {}
                index = int(ts // BUCKET_S)
                if filesystems:
                    trends.pop("disk_percent", None)  # a device that began to report its filesystems
                    values = [(FILESYSTEM + mount, used) for mount, used in filesystems.items()]
                    values += [(name, metrics[name]) for name in _BESIDE_FILESYSTEMS if name in metrics]
                else:
                    values = [(name, metrics[name]) for name in TRENDED if name in metrics]
                if inodes_used:
                    values += [(INODES + mount, used) for mount, used in inodes_used.items()]
                for name, value in values:
                    trend = trends.get(name)
                    if trend is None:
                        trend = trends[name] = Trend(zone(name).edge)
                    elif trend.open_index == index:  # most samples taken: into the interval already open
                        trend.open_values.append(value)
                        trend.latest = (sample_id, ts)
                        continue
                    trend.latest = (sample_id, ts)
                    if not trend.add(index, value):
                        continue
                    key = (device, name)
                    forecast = self._forecast(key)
                    if key in self.alerted and self._ended(forecast):
                        self.alerted.discard(key)
                    if forecast is not None and forecast.within(self.horizon_s) and key not in self.alerted:
                        due[key] = forecast
                    else:
                        due.pop(key, None)
        return list(due.values())

    def devices(self) -> int:
        """How many devices have a trend."""
        with self._lock:
            return len(self.trends)

    def _forecast(self, key: tuple[str, str]) -> Forecast | None:
        trend = self.trends[key[0]][key[1]]
        sample_id, ts = trend.latest
        now = trend.at(ts, self.edge_of(*key) if self.edge_of is not None else None)
        if now is None:
            return None
        level, slope_per_h, eta_s = now
        return Forecast(key[0], key[1], sample_id, ts, level, slope_per_h, eta_s)

    def _ended(self, forecast: Forecast | None) -> bool:
        return forecast is None or forecast.eta_s is None or forecast.eta_s > END_FACTOR * self.horizon_s

    def mark_alerted(self, forecast: Forecast) -> None:
        """The forecast's episode was alerted: it alerts no more until it ends."""
        with self._lock:
            self.alerted.add((forecast.device, forecast.metric))

    def holds(self, device: str, metric: str) -> bool:
        """Whether the alerted episode of this device and metric still holds."""
        with self._lock:
            return (device, metric) in self.alerted

    def restore_alerted(self, keys: Iterable[tuple[str, str]]) -> None:
        """After a rebuild: the episodes alerted before the restart that still hold stay alerted."""
        with self._lock:
            for key in keys:
                if key[1] in self.trends.get(key[0], {}) and not self._ended(self._forecast(key)):
                    self.alerted.add(key)

    def reaching(self, within_s: float) -> list[Forecast]:
        """The forecasts of every device that reach their edge within `within_s`: what the digest names."""
        with self._lock:
            return [forecast for device, trends in self.trends.items() for metric in trends
                    if (forecast := self._forecast((device, metric))) is not None and forecast.within(within_s)]

    def forecasts(self, device: str) -> dict[str, Forecast | None]:
        """The current forecast of each trended metric the device reports (filesystems by mount point, then
        memory and swap); None while there is too little data."""
        with self._lock:
            trends = self.trends.get(device, {})
            order = sorted(name for name in trends if name.startswith(FILESYSTEM))
            order += [name for name in TRENDED if name in trends]
            order += sorted(name for name in trends if name.startswith(INODES))
            return {name: self._forecast((device, name)) for name in order}
