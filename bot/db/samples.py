"""Reading samples: a device's newest, the fleet's newest, charts, usual-range history, the last hours."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import peewee as pw
from peewee import fn

from agent.vocabulary import KNOWN_METRICS
from bot.db.connection import is_postgres, param
from schema.streaming import FETCH_CHUNK, streamed
from schema.tables import Aggregate, Device, KeptSample, Metric, Rejected, db


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


def _aggregated(row: Aggregate) -> StoredSample:
    """Five downsampled minutes as a sample: the means, at the start of the five minutes."""
    metrics = {name: getattr(row, name) for name in KNOWN_METRICS if getattr(row, name) is not None}
    return StoredSample(-row.id, row.device, row.bucket, metrics, row.p_stressed, None)


def _newest(*candidates: StoredSample | None) -> StoredSample | None:
    found = [c for c in candidates if c is not None]
    return max(found, key=lambda s: s.ts) if found else None


def _first(query: pw.SelectBase) -> StoredSample | None:
    row = next(iter(query.limit(1)), None)
    return _stored(row) if row is not None else None


def sample_at(metric_id: int, ts: float) -> StoredSample | None:
    """One stored sample by its id and time, or None. The time names its day's partition on PostgreSQL (an id
    alone would be looked up in every day); a sample kept past the retention (labelled, alerted, a device's newest:
    see bot/db/retention.py) is found in `metric_kept` by its id."""
    return _first(Metric.select().where((Metric.id == metric_id) & (Metric.ts == ts))
                  .union_all(KeptSample.select().where(KeptSample.id == metric_id)))


def sample_by_id(metric_id: int | None) -> StoredSample | None:
    """One stored sample by its id alone, or None: on PostgreSQL a look in every day's partition. For what carries
    no time (a button sent before buttons carried one); everything else uses `sample_at`."""
    if metric_id is None:
        return None
    return _first(Metric.select().where(Metric.id == metric_id)
                  .union_all(KeptSample.select().where(KeptSample.id == metric_id)))


def latest_sample(device: str) -> StoredSample | None:
    """The newest sample of one device, or None when the device never reported: the one its row names, found by
    its id and time (one day's partition); without that row, the newest raw or downsampled one."""
    row = Device.select(Device.last_metric, Device.last_ts).where(Device.name == device).first()
    if row is not None and row.last_metric is not None:
        found = sample_at(row.last_metric, row.last_ts)
        if found is not None:
            return found
    return _newest_stored(device)


def _newest_stored(device: str) -> StoredSample | None:
    """The newest raw sample of a device, else its newest five downsampled minutes: a read of every day."""
    raw = _first(Metric.select().where(Metric.device == device).order_by(Metric.ts.desc()))
    old = Aggregate.select().where(Aggregate.device == device).order_by(Aggregate.bucket.desc()).first()
    return _newest(raw, _aggregated(old) if old else None)


class Seen(NamedTuple):
    """A machine as its row says (the bot writes it with every batch): its newest sample's time and P(stressed)."""

    device: str
    ts: float
    p_stressed: float | None


def seen_per_device() -> list[Seen]:
    """Every machine that reported, by name, as its row says: what the fleet's /status shows. One row per machine
    whatever the samples stored: at 10,000 machines reading each one's newest sample (its partition, its JSON
    columns, a model or a tuple each) was most of the fleet's /status (docs/performance.md)."""
    query = Device.select(Device.name, Device.last_ts, Device.last_p).order_by(Device.name).tuples()
    return [Seen(*row) for row in query]


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
    # (see bot/db/retention.py) count for as many samples as they stand for; samples kept raw past the retention
    # count as themselves. Each read is bounded in time: on PostgreSQL it reads the days of the window only.
    buckets: dict[int, list] = {}
    for model, ts, weight in ((Metric, Metric.ts, None), (KeptSample, KeptSample.ts, None),
                              (Aggregate, Aggregate.bucket, Aggregate.samples)):
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
    "filesystems" (JSON text, None where downsampled) may be asked for too. Every read is bounded by the device's
    newest sample and `seconds` before it: on PostgreSQL, the days of that window only."""
    if not columns or set(columns) - {*KNOWN_METRICS, FILESYSTEMS}:
        raise ValueError(f"not metric columns: {columns}")
    tables = ((Metric, Metric.ts), (KeptSample, KeptSample.ts), (Aggregate, Aggregate.bucket))
    newest = Device.select(Device.last_ts).where(Device.name == device).scalar()
    if newest is None:  # no row for it (a store no bot wrote): its newest sample, read from every day
        newest = max((t for t in (model.select(pw.fn.MAX(ts)).where(model.device == device).scalar()
                                  for model, ts in tables) if t is not None), default=None)
    if newest is None:
        return []
    firsts = [model.select(pw.fn.MIN(ts)).where((model.device == device) & (ts >= newest - seconds) & (ts <= newest))
              .scalar() for model, ts in tables]
    if all(t is None for t in firsts):
        return []
    start = min(t for t in firsts if t is not None)
    if newest - start < min_span:
        return []
    step = (newest - start) / (points - 1)
    in_force: dict[int, tuple[float, tuple[float | None, ...]]] = {}
    for table, ts in (("metric", "ts"), ("metric_kept", "ts"), ("metric_5m", "bucket")):
        sql = _points_sql(table, ts, columns, lateral=is_postgres())
        for n, at, *values in db.execute_sql(sql, (start, step, points, device, start, newest)):
            if n not in in_force or at > in_force[n][0]:
                in_force[n] = (at, tuple(values))
    return [in_force[n][1] for n in sorted(in_force)]


FILESYSTEMS = "filesystems"  # the column of a sample's filesystems: a raw sample's only


def _points_sql(table: str, ts: str, columns: list[str], lateral: bool) -> str:
    """The sample of `table` in force at each point: the newest at or before it, within [start, newest]. PostgreSQL
    reads it whole in a LATERAL subquery (its day's partitions only); SQLite, which has no LATERAL, by its id."""
    p = param()
    values = ", ".join(f"m.{c}" if c != FILESYSTEMS or table != "metric_5m" else "NULL" for c in columns)
    newest_in_force = (f"SELECT s.{{what}} FROM {table} AS s WHERE s.device = {p} AND s.{ts} <= points.t "
                       f"AND s.{ts} >= {p} AND s.{ts} <= {p} ORDER BY s.{ts} DESC LIMIT 1")
    if lateral:
        source = f"CROSS JOIN LATERAL ({newest_in_force.format(what='*')}) AS m"
    else:
        source = f"JOIN {table} AS m ON m.id = ({newest_in_force.format(what='id')})"
    return f"""
    WITH RECURSIVE points(t, n) AS (
        SELECT CAST({p} AS DOUBLE PRECISION), 1
        UNION ALL SELECT t + {p}, n + 1 FROM points WHERE n < {p}
    )
    SELECT points.n, m.{ts}, {values} FROM points {source}
    """


# Every device's samples of its last `seconds` before its newest (its row says when): a range of the (device, ts)
# index each. On PostgreSQL in a LATERAL subquery, which reads only the partitions of those days (pruned as it
# runs; OFFSET 0 keeps the planner from turning it into a join hashed over every day).
_RECENT_PER_DEVICE = """
SELECT m.id, m.device, m.ts, m.filesystems, m.readings, {columns} FROM device AS d {source}
ORDER BY m.device, m.ts
"""
RECENT_PER_DEVICE_PG = _RECENT_PER_DEVICE.replace("{source}", (
    "CROSS JOIN LATERAL (SELECT * FROM metric AS s WHERE s.device = d.name AND s.ts >= d.last_ts - %s "
    "AND s.ts <= d.last_ts OFFSET 0) AS m"))
RECENT_PER_DEVICE_SQLITE = _RECENT_PER_DEVICE.replace("{source}", (
    "JOIN metric AS m ON m.device = d.name AND m.ts >= d.last_ts - ? AND m.ts <= d.last_ts"))


Recent = tuple[int, str, float, dict[str, float], dict[str, float] | None, dict[str, dict[str, float]] | None]


def recent_per_device(seconds: float, columns: list[str]) -> Iterator[Recent]:
    """(id, device, ts, metrics, filesystems, readings) of every device's samples in the last `seconds` before its
    newest (as its row says: the bot writes one for every device), by device and time; only the given metric
    columns, and only those present. Read as they are taken: a fleet's last hours are millions of samples, never
    held at once."""
    if set(columns) - set(KNOWN_METRICS):
        raise ValueError(f"not metric columns: {columns}")
    sql = (RECENT_PER_DEVICE_PG if is_postgres() else RECENT_PER_DEVICE_SQLITE).format(
        columns=", ".join(f"m.{c}" for c in columns))
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
