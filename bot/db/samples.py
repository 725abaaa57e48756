"""Reading samples: a device's newest, the fleet's newest, charts, usual-range history, the last hours."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import peewee as pw
from peewee import fn

from agent.vocabulary import KNOWN_METRICS
from bot.db.connection import param
from schema.streaming import FETCH_CHUNK, streamed
from schema.tables import Aggregate, Device, Metric, Rejected, db


@dataclass(slots=True)  # not frozen: one is made per stored message (docs/performance.md, the hot path)
class StoredSample:
    id: int
    device: str
    ts: float
    metrics: dict[str, float]
    p_stressed: float | None
    model_version: int | None
    filesystems: dict[str, float] | None = None  # percent used by mount point, as the wire format has them
    processes: dict[str, list[tuple[str, int, float]]] | None = None  # "cpu"/"memory" -> top (name, pid, percent)
    readings: dict[str, dict[str, float]] | None = None  # reading -> object -> value, as the wire format has them
    notes: dict[str, dict[str, str]] | None = None
    unreadable: dict[str, str] | None = None


def _processes(text: str | None) -> dict[str, list[tuple[str, int, float]]] | None:
    if not text:
        return None
    return {kind: [(name, pid, percent) for name, pid, percent in top] for kind, top in json.loads(text).items()}


def _stored(row: Metric) -> StoredSample:
    metrics = {name: getattr(row, name) for name in KNOWN_METRICS if getattr(row, name) is not None}
    metrics.update(json.loads(row.extra) if row.extra else {})
    readings = json.loads(row.readings) if row.readings else {}
    return StoredSample(row.id, row.device, row.ts, metrics, row.p_stressed, row.model_version,
                        json.loads(row.filesystems) if row.filesystems else None, _processes(row.processes),
                        readings.get("readings"), readings.get("notes"), readings.get("unreadable"))


# A loose index scan: one index seek per device instead of reading the whole (device, ts) index, so the
# cost grows with the number of devices, not with the number of stored samples (SQLite and Postgres).
DEVICES_CTE = """
WITH RECURSIVE devices(device) AS (
    SELECT MIN(device) FROM {table}
    UNION ALL
    SELECT (SELECT MIN(m.device) FROM {table} AS m WHERE m.device > devices.device) FROM devices
    WHERE devices.device IS NOT NULL
)"""
_LATEST_PER_DEVICE_SQL = DEVICES_CTE + """
SELECT * FROM {table} WHERE id IN (
    SELECT (SELECT m.id FROM {table} AS m WHERE m.device = devices.device ORDER BY m.{ts} DESC LIMIT 1)
    FROM devices WHERE devices.device IS NOT NULL
) ORDER BY device
"""
LATEST_PER_DEVICE_SQL = _LATEST_PER_DEVICE_SQL.format(table="metric", ts="ts")
LATEST_AGGREGATE_PER_DEVICE_SQL = _LATEST_PER_DEVICE_SQL.format(table="metric_5m", ts="bucket")


def _aggregated(row: Aggregate) -> StoredSample:
    """Five downsampled minutes as a sample: the means, at the start of the five minutes."""
    metrics = {name: getattr(row, name) for name in KNOWN_METRICS if getattr(row, name) is not None}
    return StoredSample(-row.id, row.device, row.bucket, metrics, row.p_stressed, None)


def _newest(*candidates: StoredSample | None) -> StoredSample | None:
    found = [c for c in candidates if c is not None]
    return max(found, key=lambda s: s.ts) if found else None


def latest_per_device() -> list[StoredSample]:
    """The newest sample of every device, by device name; a device silent for longer than the retention
    has only downsampled five minutes left, and shows the newest of those."""
    raw = {row.device: _stored(row) for row in Metric.raw(LATEST_PER_DEVICE_SQL)}
    old = {row.device: _aggregated(row) for row in Aggregate.raw(LATEST_AGGREGATE_PER_DEVICE_SQL)}
    return [_newest(raw.get(d), old.get(d)) for d in sorted(raw.keys() | old.keys())]  # type: ignore[misc]


def sample_by_id(metric_id: int | None) -> StoredSample | None:
    """One stored sample, or None."""
    row = Metric.get_or_none(Metric.id == metric_id) if metric_id is not None else None
    return _stored(row) if row else None


def latest_sample(device: str) -> StoredSample | None:
    """The newest sample of one device (raw, else downsampled), or None when the device never reported."""
    row = Metric.select().where(Metric.device == device).order_by(Metric.ts.desc()).first()
    old = Aggregate.select().where(Aggregate.device == device).order_by(Aggregate.bucket.desc()).first()
    return _newest(_stored(row) if row else None, _aggregated(old) if old else None)


CHART_POINTS = 600  # per series, whatever the window: enough for a phone screen, small enough to draw fast


@dataclass(frozen=True)
class ChartPoint:
    """One time bucket of a device's samples: when its first and last samples were taken, the mean of each
    metric (a metric no sample in the bucket had is absent) and the highest P(stressed)."""

    first_ts: float
    last_ts: float
    metrics: dict[str, float]
    p_stressed: float | None


@dataclass(frozen=True)
class ChartSeries:
    bucket_s: int
    points: list[ChartPoint]


def chart_bucket_s(start_ts: float, end_ts: float, max_points: int = CHART_POINTS) -> int:
    """Whole seconds per bucket so that [start_ts, end_ts] falls into at most `max_points` buckets."""
    return max(1, math.ceil((end_ts - start_ts) / max(1, max_points - 1)))


def chart_series(
    device: str, start_ts: float, end_ts: float, metrics: list[str], max_points: int = CHART_POINTS
) -> ChartSeries:
    """A device's samples in [start_ts, end_ts], downsampled in the database to at most `max_points` buckets:
    the query returns as many rows for a month as for an hour."""
    unknown = set(metrics) - set(KNOWN_METRICS)
    if unknown:
        raise ValueError(f"not a metric column: {sorted(unknown)}")
    bucket_s = chart_bucket_s(start_ts, end_ts, max_points)
    # Per bucket: [first, last, highest P, then the sum and the count of each metric]. Downsampled five minutes
    # (see bot/db/retention.py) count for as many samples as they stand for.
    buckets: dict[int, list] = {}
    for model, ts, weight in ((Metric, Metric.ts, None), (Aggregate, Aggregate.bucket, Aggregate.samples)):
        scaled = ts / bucket_s
        # SQLite has floor() only when built with its math functions; ts is after 2000 (the wire format says
        # so), and truncating a positive number is its floor.
        bucket = scaled.cast("INTEGER") if isinstance(db.obj, pw.SqliteDatabase) else fn.FLOOR(scaled)
        sums: list[pw.Node] = []
        for column in (getattr(model, name) for name in metrics):
            if weight is None:
                sums += [fn.SUM(column), fn.COUNT(column)]
            else:
                sums += [fn.SUM(column * weight), fn.SUM(pw.Case(None, [(column.is_null(False), weight)], 0))]
        query = (
            model.select(bucket, fn.MIN(ts), fn.MAX(ts), fn.MAX(model.p_stressed), *sums)
            .where((model.device == device) & (ts >= start_ts) & (ts <= end_ts))
            .group_by(bucket)
            .tuples()
        )
        for key, first, last, p, *figures in query:
            if key not in buckets:
                buckets[key] = [first, last, p, *figures]
                continue
            seen = buckets[key]
            seen[0], seen[1] = min(seen[0], first), max(seen[1], last)
            seen[2] = max((x for x in (seen[2], p) if x is not None), default=None)
            seen[3:] = [(a or 0) + (b or 0) for a, b in zip(seen[3:], figures, strict=True)]
    points = []
    for first, last, p, *figures in sorted(buckets.values(), key=lambda b: b[0]):
        means = {name: float(figures[2 * i]) / figures[2 * i + 1] for i, name in enumerate(metrics)
                 if figures[2 * i + 1]}
        points.append(ChartPoint(first, last, means, None if p is None else float(p)))
    return ChartSeries(bucket_s, points)


def rejected(limit: int = 10) -> list[Rejected]:
    """The most recent rejected messages, newest first."""
    return list(Rejected.select().order_by(Rejected.id.desc()).limit(limit))


def history_points(device: str, seconds: float, points: int, columns: list[str],
                   min_span: float) -> list[tuple[float | None, ...]]:
    """`columns` of the device at `points` evenly spaced moments over its last `seconds` (the sample in force at
    each moment), or nothing when its history spans less than `min_span`. Bounded: one index seek per point,
    whatever the sampling rate, and time-weighted: a burst of samples counts for the time it lasted. Where
    only downsampled five minutes are left (see bot/db/retention.py), their means are in force. The column
    "filesystems" (JSON text, None where downsampled) may be asked for too."""
    if not columns or set(columns) - {*KNOWN_METRICS, FILESYSTEMS}:
        raise ValueError(f"not metric columns: {columns}")
    tables = ((Metric, Metric.ts), (Aggregate, Aggregate.bucket))
    newest = max((t for t in (model.select(pw.fn.MAX(ts)).where(model.device == device).scalar()
                              for model, ts in tables) if t is not None), default=None)
    if newest is None:
        return []
    start = min(t for t in (model.select(pw.fn.MIN(ts)).where((model.device == device) & (ts >= newest - seconds))
                            .scalar() for model, ts in tables) if t is not None)
    if newest - start < min_span:
        return []
    step = (newest - start) / (points - 1)
    in_force: dict[int, tuple[float, tuple[float | None, ...]]] = {}
    for table, ts in (("metric", "ts"), ("metric_5m", "bucket")):
        for n, at, *values in db.execute_sql(_points_sql(table, ts, columns), (start, step, points, device)):
            if n not in in_force or at > in_force[n][0]:
                in_force[n] = (at, tuple(values))
    return [in_force[n][1] for n in sorted(in_force)]


FILESYSTEMS = "filesystems"  # the column of a sample's filesystems: a raw sample's only


def _points_sql(table: str, ts: str, columns: list[str]) -> str:
    p = param()
    return f"""
    WITH RECURSIVE points(t, n) AS (
        SELECT CAST({p} AS DOUBLE PRECISION), 1
        UNION ALL SELECT t + {p}, n + 1 FROM points WHERE n < {p}
    )
    SELECT points.n, m.{ts}, {", ".join(f"m.{c}" if c != FILESYSTEMS or table == "metric" else "NULL" for c in columns)}
    FROM points JOIN {table} AS m ON m.id = (
        SELECT s.id FROM {table} AS s WHERE s.device = {p} AND s.{ts} <= points.t ORDER BY s.{ts} DESC LIMIT 1
    )
    """


# Every device's samples of its last `seconds`: a walk over the devices (as above), then a range of the
# (device, ts) index each.
RECENT_PER_DEVICE_SQL = DEVICES_CTE.format(table="metric") + """, newest(device, ts) AS (
    SELECT device, (SELECT MAX(m.ts) FROM metric AS m WHERE m.device = devices.device) FROM devices
    WHERE devices.device IS NOT NULL
)
SELECT m.id, m.device, m.ts, m.filesystems, m.readings, {columns} FROM newest
JOIN metric AS m ON m.device = newest.device AND m.ts >= newest.ts - {p}
ORDER BY m.device, m.ts
"""


Recent = tuple[int, str, float, dict[str, float], dict[str, float] | None, dict[str, dict[str, float]] | None]


def recent_per_device(seconds: float, columns: list[str]) -> Iterator[Recent]:
    """(id, device, ts, metrics, filesystems, readings) of every device's samples in the last `seconds` before its
    newest, by device and time; only the given metric columns, and only those present. Read as they are taken: a
    fleet's last hours are millions of samples, never held at once."""
    if set(columns) - set(KNOWN_METRICS):
        raise ValueError(f"not metric columns: {columns}")
    sql = RECENT_PER_DEVICE_SQL.format(columns=", ".join(f"m.{c}" for c in columns), p=param())
    # A machine's filesystems change little from one sample to the next, and many send no readings: each text is
    # read once while it stays the same.
    fs_text, filesystems, readings_text, readings = None, None, None, None
    with streamed(sql, (seconds,)) as cursor:
        while rows := cursor.fetchmany(FETCH_CHUNK):  # type: ignore[attr-defined]
            for metric_id, device, ts, stored_fs, stored_readings, *values in rows:
                if stored_fs != fs_text:
                    fs_text, filesystems = stored_fs, json.loads(stored_fs) if stored_fs else None
                if stored_readings != readings_text:
                    readings_text = stored_readings
                    readings = json.loads(stored_readings).get("readings") if stored_readings else None
                yield (metric_id, device, ts, {c: v for c, v in zip(columns, values, strict=True) if v is not None},
                       filesystems, readings)


def device_count() -> int:
    """How many machines have reported."""
    return Device.select().count()


def devices() -> list[Device]:
    """Every device that ever reported, with its newest sample and usual interval."""
    return list(Device.select())


def device(name: str) -> Device | None:
    return Device.get_or_none(Device.name == name)
