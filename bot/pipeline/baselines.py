"""Each device's usual range of every model metric: what "normal" looks like on that machine.

The 10th to 90th percentile over the device's last 7 days, read from at most POINTS evenly spaced moments
(a bounded query, whatever the sampling rate), computed when a device is first needed and then at most
hourly, and kept in the database so that a restart does not compute it again. Blocking: call it through
``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import peewee as pw

from bot import db
from bot.db import learnt
from bot.db.samples import FILESYSTEMS
from ml.features import FEATURES
from schema.domain import FILESYSTEM

DAYS = 7
POINTS = 1000  # moments sampled over the history: one seek each
MIN_SPAN_S = 3600.0  # less history than an hour has no usual range yet
MIN_PRESENT = 0.5  # a metric needs a value at half the moments at least
log = logging.getLogger(__name__)
REFRESH_S = 3600.0
REFRESH_EMPTY_S = 600.0  # a young device gets its range soon after it has an hour of history
LOW_PERCENTILE, HIGH_PERCENTILE = 10, 90


@dataclass(frozen=True)
class Usual:
    low: float
    high: float


def usual_ranges(device: str) -> dict[str, Usual]:
    """The usual range of each model metric with enough history on this device, and of each of its filesystems
    (`disk:<mount point>`: a half-full /data beside a nearly full / has a range of its own); blocks on the
    store."""
    rows = db.history_points(device, DAYS * 86400.0, POINTS, [*FEATURES, FILESYSTEMS], MIN_SPAN_S)
    if not rows:
        return {}
    values = np.array([row[:-1] for row in rows], dtype=float)  # NULL comes back as None, which becomes NaN
    columns = {name: values[:, column] for column, name in enumerate(FEATURES)}
    by_mount: dict[str, list[float]] = {}
    for *_metrics, text in rows:
        for mount, used in (json.loads(text) if text else {}).items():
            by_mount.setdefault(mount, []).append(used)
    columns.update({FILESYSTEM + mount: np.array(used, dtype=float) for mount, used in by_mount.items()})
    ranges = {}
    for name, column in columns.items():
        present = column[~np.isnan(column)]
        if len(present) >= MIN_PRESENT * len(values):
            low, high = np.percentile(present, [LOW_PERCENTILE, HIGH_PERCENTILE])
            ranges[name] = Usual(float(low), float(high))
    return ranges


class Baselines:
    """Usual ranges per device, cached: a device's history is read at most once an hour. What is worked out is
    kept in the database (`unsaved`, written with a batch), so after a restart a device's ranges are read back
    from one small query, not from its history. A command does not wait for a history read when it can help it
    (`known`): it shows the ranges last worked out, however old, and has them worked out again in the background."""

    def __init__(self, refresh_s: float = REFRESH_S) -> None:
        self.refresh_s = refresh_s
        self._cache: dict[str, tuple[float, dict[str, Usual]]] = {}  # device -> (monotonic when, ranges)
        self._unsaved: list[tuple[str, float, dict[str, tuple[float, float]]]] = []
        self._refreshing: set[str] = set()
        self._background: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _fresh(self, remembered: tuple[float, dict[str, Usual]]) -> bool:
        at, ranges = remembered
        return time.monotonic() - at < (self.refresh_s if ranges else min(self.refresh_s, REFRESH_EMPTY_S))

    def _remembered(self, device: str) -> tuple[float, dict[str, Usual]] | None:
        """(when, ranges) last worked out of the device, however old: cached, or kept in the database before a
        restart (one small query); None when they never were."""
        with self._lock:
            cached = self._cache.get(device)
        if cached is not None:
            return cached
        kept = learnt.usual_of(device)
        if kept is None:
            return None
        computed, stored = kept
        remembered = (time.monotonic() - max(0.0, time.time() - computed),
                      {name: Usual(low, high) for name, (low, high) in stored.items()})
        with self._lock:
            return self._cache.setdefault(device, remembered)

    def get(self, device: str) -> dict[str, Usual]:
        """The device's usual ranges; blocks on the store when they are missing or over an hour old."""
        remembered = None
        try:
            remembered = self._remembered(device)
            if remembered is not None and self._fresh(remembered):
                return remembered[1]
            ranges = usual_ranges(device)
        except pw.PeeweeException as exc:  # an alert without its ranges beats no alert
            log.warning("usual ranges of %s unavailable: %s", device, exc)
            return remembered[1] if remembered else {}
        with self._lock:
            self._cache[device] = (time.monotonic(), ranges)
            self._unsaved.append((device, time.time(), {name: (u.low, u.high) for name, u in ranges.items()}))
        return ranges

    def known(self, device: str) -> dict[str, Usual] | None:
        """The device's usual ranges as last worked out, however old, without reading its history (one small query
        at most); an old one is worked out again in the background for the next question. None when they never
        were: then only `get` has them. Blocking: call it through ``asyncio.to_thread``."""
        remembered = self._remembered(device)
        if remembered is None:
            return None
        if not self._fresh(remembered):
            with self._lock:
                start = device not in self._refreshing
                self._refreshing.add(device)
                if start and self._background is None:
                    self._background = ThreadPoolExecutor(1, thread_name_prefix="usual-ranges")
            if start:
                self._background.submit(self._refresh, device)
        return remembered[1]

    def _refresh(self, device: str) -> None:
        try:
            self.get(device)
        finally:
            with self._lock:
                self._refreshing.discard(device)

    def unsaved(self) -> list[tuple[str, float, dict[str, tuple[float, float]]]]:
        """(device, when, metric -> (low, high)) worked out since the last call: what to write
        (bot/db/learnt.py `save_usual`)."""
        with self._lock:
            unsaved, self._unsaved = self._unsaved, []
        return unsaved
