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
over at most WINDOW_BUCKETS medians. The state is kept in the database as it is learnt and taken back at start
(bot/pipeline/learnt.py), with the samples stored after it was written; a machine with none kept is rebuilt from
the store's last window of samples. Either way the forecasts are those the state built live gives.

A machine's daily cycle: a trend remembers when it fell back (a sustained drop: logs rotated, a backup shipped
off). One that fell back at the same time of day on each of its last CYCLE_DAYS days is expected to fall back
then again, so it is not heading for the edge when that comes first; it alerts when the edge comes before it
(the logs grow faster than usual) or when the day's drop does not come. A few floats per trend, looked at only
when an interval closes, and kept with the rest of the trend, so a restart does not forget the cycle.
"""

from __future__ import annotations

import heapq
import math
import statistics
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import orjson

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
SAVE_EVERY_S = 120.0  # a device's state is written at most this often (bot/pipeline/learnt.py)


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

    def dump(self) -> tuple:
        """Everything the trend learnt, as JSON can hold it; `Trend.load` makes the same trend again."""
        return (self.open_index, *self.latest, self.open_values, list(self.medians), self.slope, self.ref_ts,
                self.ref_level, list(self.drops))

    @classmethod
    def load(cls, edge: float, dumped: Sequence) -> Trend:
        trend = cls(edge)
        open_index, sample_id, ts, open_values, medians, trend.slope, trend.ref_ts, trend.ref_level, drops = dumped
        trend.open_index, trend.latest, trend.open_values = open_index, (sample_id, ts), list(open_values)
        trend.medians.extend(map(tuple, medians))
        trend.drops.extend(drops)
        return trend

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

    def __init__(self, horizon_s: float, edge_of: Callable[[str, str], float] | None = None,
                 save_every_s: float = SAVE_EVERY_S) -> None:
        self.horizon_s = horizon_s
        # Where (device, metric) is heading to: the fleet's edge, or a machine's own (its tolerance, capped).
        self.edge_of = edge_of
        self.trends: dict[str, dict[str, Trend]] = {}  # device -> metric -> trend
        self.slots: dict[str, float] = {}  # device -> the slot (ts // SLOT_S) of its last sample taken
        self.alerted: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        # Saving: the devices that took a sample since their state was last handed out, each once in a heap by
        # when it may be handed out again (SAVE_EVERY_S after the last time), so a batch pays only for those due.
        self.save_every_s = save_every_s
        self._unsaved: set[str] = set()
        self._due: list[tuple[float, str]] = []
        self._saved_at: dict[str, float] = {}
        # Restoring after a start: until a device's state is back, its samples wait here (see `restore`).
        self._restoring = False
        self._back: set[str] = set()
        self._held: dict[str, list[Observed]] = {}
        self._was_alerted: dict[str, set[str]] = {}

    def observe(self, samples: Iterable[Observed]) -> list[Forecast]:
        """Feed (id, device, ts, metrics, filesystems) samples in the order they were taken; return the forecasts that
        reach the edge within the horizon in an episode not alerted yet (the newest per device and metric).

        Only the first sample of each slot of a device is taken; a late one, of a slot before the last one
        taken, is left out, so live and rebuilt states see the same data. While the states are restored after a
        start, the samples of a device whose state is not back yet are held until it is.
        """
        due: dict[tuple[str, str], Forecast] = {}
        with self._lock:
            self._take(self._hold(samples) if self._restoring else samples, due)
        return list(due.values())

    def _hold(self, samples: Iterable[Observed]) -> Iterator[Observed]:
        for sample in samples:
            if sample[1] in self._back:
                yield sample
            else:
                self._held.setdefault(sample[1], []).append(sample)

    def _take(self, samples: Iterable[Observed], due: dict[tuple[str, str], Forecast]) -> None:
        """Take samples into the trends (see `observe`), holding the lock."""
        slots = self.slots
        unsaved = self._unsaved
        for sample_id, device, ts, metrics, filesystems, inodes_used in samples:
            slot = ts // SLOT_S
            if slot <= slots.get(device, -1.0):  # its slot is taken: 3 samples of 4 at one per 5 s
                continue
            slots[device] = slot
            if device not in unsaved:
                self._changed(device)
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

    def _changed(self, device: str) -> None:
        self._unsaved.add(device)
        heapq.heappush(self._due, (self._saved_at.get(device, -math.inf) + self.save_every_s, device))

    # Kept in the database: written as it is learnt, read back at start (bot/pipeline/learnt.py).

    def unsaved(self, now: float, most: int | None = None, early: bool = False) -> list[tuple[str, float, str]]:
        """(device, ts, state) of the devices that learnt something since their state was last handed out here, at
        most `save_every_s` before `now` (or later, when `early`: the bot stops), and at most `most` of them (those
        waiting longest first): what to write. Their samples before `ts` are in `state`; `Forecaster.restore` takes
        it back."""
        states = []
        with self._lock:
            while self._due and (early or self._due[0][0] <= now) and (most is None or len(states) < most):
                _, device = heapq.heappop(self._due)
                self._unsaved.discard(device)
                self._saved_at[device] = now
                states.append(self._state_of(device))
        return states

    def _state_of(self, device: str) -> tuple[str, float, str]:
        slot = self.slots.get(device, -1.0)
        trends = {name: trend.dump() for name, trend in self.trends.get(device, {}).items()}
        return device, (slot + 1) * SLOT_S, orjson.dumps({"slot": slot, "trends": trends}).decode()

    def begin_restoring(self) -> None:
        """From now until `finish_restoring`, a device's samples are held until its state is restored."""
        with self._lock:
            self._restoring = True

    def expect_alerted(self, keys: Iterable[tuple[str, str]]) -> None:
        """While restoring: the (device, metric) episodes alerted before the restart (its open forecast incidents);
        each stays alerted once its device is back, when its forecast still holds."""
        with self._lock:
            for device, metric in keys:
                if device not in self._back:
                    self._was_alerted.setdefault(device, set()).add(metric)
                    self.alerted.add((device, metric))

    @property
    def restoring(self) -> bool:
        """Whether the states kept before the start are still being taken back."""
        return self._restoring

    def back(self, device: str) -> bool:
        """Whether the device's forecasts are what it learnt: always, but while its state is being restored."""
        return not self._restoring or device in self._back

    def restore(self, device: str, state: str | bytes | None, samples: Iterable[Observed] = (),
                saved_at: float | None = None) -> bool:
        """While restoring: the device's state as `unsaved` handed it out at `saved_at` (None: none, start from
        `samples`), then `samples`, those stored after it (from its `ts` on), then those that arrived since the
        start. False (and nothing changes) when the device is back already."""
        with self._lock:
            if not self._restoring or device in self._back:
                return False
            self._restore(device, state, samples, saved_at)
            return True

    def _restore(self, device: str, state: str | bytes | None, samples: Iterable[Observed],
                 saved_at: float | None) -> None:
        was_alerted = self._was_alerted.pop(device, set())
        self.alerted.difference_update((device, metric) for metric in was_alerted)
        if state is not None:
            kept = orjson.loads(state)
            self.trends[device] = {name: Trend.load(zone(name).edge, dumped) for name, dumped in kept["trends"].items()}
            self.slots[device] = kept["slot"]
            if saved_at is not None:
                self._saved_at[device] = saved_at
        else:
            self.trends.setdefault(device, {})
            if device not in self._unsaved:  # rebuilt from its history: saved, so the next start reads none
                self._changed(device)
        self._take(samples, {})
        self._take(self._held.pop(device, ()), {})
        self._back.add(device)
        for metric in was_alerted:  # still alerted when its episode holds, as before the restart
            if metric in self.trends[device] and not self._ended(self._forecast((device, metric))):
                self.alerted.add((device, metric))

    def finish_restoring(self, complete: bool = True) -> None:
        """Every state that was kept is back: devices without one start from the samples they sent since. Not
        `complete` (the bot stops): the devices not back are left out, so that nothing of theirs is saved."""
        with self._lock:
            for device in list(self._held):
                if complete:
                    self._restore(device, None, (), None)
                else:
                    del self._held[device]
            for device, metrics in self._was_alerted.items():
                self.alerted.difference_update((device, metric) for metric in metrics)
            self._was_alerted.clear()
            self._restoring = False
            self._back.clear()

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
