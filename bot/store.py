"""Storage of metrics, predictions, labels, alerts and rejected messages (peewee; SQLite or Postgres).

Every function here blocks: the bot calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pandas as pd
import peewee as pw

from agent.wire import KNOWN_METRICS, Sample
from ml import data

db = pw.DatabaseProxy()
INSERT_CHUNK = 1000  # rows per INSERT: well under SQLite's limit of bound variables


class BaseModel(pw.Model):
    class Meta:
        database = db


class Metric(BaseModel):
    """One sample of one device; unique on (device, ts) so a redelivered message changes nothing."""

    device = pw.CharField(max_length=64)
    ts = pw.DoubleField()
    received = pw.DoubleField()
    extra = pw.TextField(null=True)  # JSON of metric names the model does not know
    p_stressed = pw.DoubleField(null=True)
    model_version = pw.IntegerField(null=True)

    class Meta:
        indexes = ((("device", "ts"), True),)


# One nullable column per known metric: a missing metric is NULL, never 0.
for _name in KNOWN_METRICS:
    Metric._meta.add_field(_name, pw.DoubleField(null=True))


class Label(BaseModel):
    """A person's verdict on a sample: 1 = stressed, 0 = normal. The latest label of a sample wins."""

    metric = pw.ForeignKeyField(Metric, on_delete="CASCADE", index=True)
    value = pw.SmallIntegerField()
    user_id = pw.BigIntegerField()
    user_name = pw.CharField(max_length=200)
    created = pw.DoubleField()


class Alert(BaseModel):
    """An alert message sent to a chat; a button press is valid only on a message listed here."""

    metric = pw.ForeignKeyField(Metric, on_delete="CASCADE")
    chat_id = pw.BigIntegerField()
    message_id = pw.BigIntegerField()
    sent = pw.DoubleField()

    class Meta:
        indexes = ((("chat_id", "message_id"), True),)


class Rejected(BaseModel):
    """A message that did not follow the wire format, kept with the reason for an operator."""

    received = pw.DoubleField()
    source = pw.CharField(max_length=300, unique=True)  # topic[partition]@offset: a redelivery adds nothing
    reason = pw.TextField()
    size = pw.IntegerField()
    payload = pw.TextField()  # the first bytes only: enough to recognise the sender


class ForecastAlert(BaseModel):
    """A forecast alert ("disk will be full in about 3 h") sent to a chat, with the numbers it said."""

    metric = pw.ForeignKeyField(Metric, on_delete="CASCADE")  # the sample the forecast was made at
    name = pw.CharField(max_length=64)  # the metric forecast, e.g. disk_percent
    level = pw.DoubleField()
    slope_per_h = pw.DoubleField()
    eta_s = pw.DoubleField()
    usual_low = pw.DoubleField(null=True)
    usual_high = pw.DoubleField(null=True)
    chat_id = pw.BigIntegerField()
    message_id = pw.BigIntegerField()
    sent = pw.DoubleField()

    class Meta:
        indexes = ((("chat_id", "message_id"), True),)


class ForecastLabel(BaseModel):
    """A person's verdict on a forecast: 1 = it was right, 0 = it was wrong. Apart from `Label`: the
    classifier never trains on these."""

    alert = pw.ForeignKeyField(ForecastAlert, on_delete="CASCADE", index=True)
    value = pw.SmallIntegerField()
    user_id = pw.BigIntegerField()
    user_name = pw.CharField(max_length=200)
    created = pw.DoubleField()


TABLES = [Metric, Label, Alert, Rejected, ForecastAlert, ForecastLabel]


@dataclass(frozen=True)
class Rejection:
    source: str
    reason: str
    payload: bytes | None


@dataclass(frozen=True)
class StoredSample:
    id: int
    device: str
    ts: float
    metrics: dict[str, float]
    p_stressed: float | None
    model_version: int | None


def open_database(url: str) -> pw.Database:
    """Connect the models to DATABASE_URL and create the tables; SQLite's folder is created."""
    database = data.connect(url)
    db.initialize(database)
    database.create_tables(TABLES, safe=True)
    return database


def store_batch(
    samples: list[Sample], predictions: list[float | None], version: int | None, rejects: list[Rejection]
) -> list[StoredSample]:
    """Store a batch in one transaction; return the samples that were new (not redelivered)."""
    now = time.time()
    rows = []
    for sample, p in zip(samples, predictions, strict=True):
        # Every row names every column: insert_many takes its columns from the first row.
        known = {name: sample.metrics.get(name) for name in KNOWN_METRICS}
        extra = {k: v for k, v in sample.metrics.items() if k not in KNOWN_METRICS}
        rows.append({
            "device": sample.device, "ts": sample.ts, "received": now,
            "extra": json.dumps(extra) if extra else None,
            "p_stressed": p, "model_version": version if p is not None else None, **known,
        })
    by_key: dict[tuple[str, float], tuple[Sample, float | None]] = {}
    for sample, p in zip(samples, predictions, strict=True):
        by_key.setdefault((sample.device, sample.ts), (sample, p))  # the first of duplicates is the one stored
    new: list[StoredSample] = []
    with db.atomic():
        for start in range(0, len(rows), INSERT_CHUNK):
            query = (
                Metric.insert_many(rows[start:start + INSERT_CHUNK])
                .on_conflict_ignore()
                .returning(Metric.id, Metric.device, Metric.ts)
            )
            for metric_id, device, ts in query.tuples().execute():
                sample, p = by_key[(device, ts)]
                new.append(StoredSample(metric_id, device, ts, sample.metrics, p, version if p is not None else None))
        if rejects:
            Rejected.insert_many([
                {"received": now, "source": r.source[:300], "reason": r.reason, "size": len(r.payload or b""),
                 # Postgres text cannot hold NUL, and a binary payload must not block the batch.
                 "payload": (r.payload or b"")[:512].decode("utf-8", "replace").replace("\x00", "\\x00")}
                for r in rejects
            ]).on_conflict_ignore().execute()
    return new


def _stored(row: Metric) -> StoredSample:
    metrics = {name: getattr(row, name) for name in KNOWN_METRICS if getattr(row, name) is not None}
    metrics.update(json.loads(row.extra) if row.extra else {})
    return StoredSample(row.id, row.device, row.ts, metrics, row.p_stressed, row.model_version)


# A loose index scan: one index seek per device instead of reading the whole (device, ts) index, so the
# cost grows with the number of devices, not with the number of stored samples (SQLite and Postgres).
LATEST_PER_DEVICE_SQL = """
WITH RECURSIVE devices(device) AS (
    SELECT MIN(device) FROM metric
    UNION ALL
    SELECT (SELECT MIN(m.device) FROM metric AS m WHERE m.device > devices.device) FROM devices
    WHERE devices.device IS NOT NULL
)
SELECT * FROM metric WHERE id IN (
    SELECT (SELECT m.id FROM metric AS m WHERE m.device = devices.device ORDER BY m.ts DESC LIMIT 1)
    FROM devices WHERE devices.device IS NOT NULL
) ORDER BY device
"""


def latest_per_device() -> list[StoredSample]:
    """The newest sample of every device, by device name."""
    return [_stored(row) for row in Metric.raw(LATEST_PER_DEVICE_SQL)]


def latest_sample(device: str) -> StoredSample | None:
    """The newest sample of one device, or None when the device never reported."""
    row = Metric.select().where(Metric.device == device).order_by(Metric.ts.desc()).first()
    return _stored(row) if row else None


def record_alert(metric_id: int, chat_id: int, message_id: int) -> None:
    """Remember that an alert for this sample is message `message_id` in `chat_id`."""
    Alert.insert(metric=metric_id, chat_id=chat_id, message_id=message_id, sent=time.time()).execute()


def alerted_sample(metric_id: int, chat_id: int, message_id: int) -> StoredSample | None:
    """The sample of the alert at (chat, message) when it is about `metric_id`; None for anything forged."""
    alert = (
        Alert.select(Alert, Metric)
        .join(Metric)
        .where((Alert.chat_id == chat_id) & (Alert.message_id == message_id) & (Alert.metric == metric_id))
        .first()
    )
    return _stored(alert.metric) if alert else None


def add_label(metric_id: int, value: int, user_id: int, user_name: str) -> None:
    """Store a person's label for a sample."""
    Label.create(metric=metric_id, value=value, user_id=user_id, user_name=user_name[:200], created=time.time())


def rejected(limit: int = 10) -> list[Rejected]:
    """The most recent rejected messages, newest first."""
    return list(Rejected.select().order_by(Rejected.id.desc()).limit(limit))


def latest_labels() -> dict[int, int]:
    """Sample id -> the value of its latest label."""
    return data.latest_labels(db.obj)


def training_frame(features: list[str]) -> pd.DataFrame:
    """Every sample's features and latest label (see ml.data.training_frame)."""
    unknown = set(features) - set(KNOWN_METRICS)
    if unknown:
        raise ValueError(f"not a metric column: {sorted(unknown)}")
    return data.training_frame(db.obj, features)


def _param() -> str:
    return db.obj.param  # "?" for SQLite, "%s" for Postgres


def history_points(device: str, seconds: float, points: int, columns: list[str],
                   min_span: float) -> list[tuple[float | None, ...]]:
    """`columns` of the device at `points` evenly spaced moments over its last `seconds` (the sample in force at
    each moment), or nothing when its history spans less than `min_span`. Bounded: one index seek per point,
    whatever the sampling rate, and time-weighted: a burst of samples counts for the time it lasted."""
    if not columns or set(columns) - set(KNOWN_METRICS):
        raise ValueError(f"not metric columns: {columns}")
    newest = Metric.select(pw.fn.MAX(Metric.ts)).where(Metric.device == device).scalar()
    if newest is None:
        return []
    oldest = Metric.select(pw.fn.MIN(Metric.ts)).where((Metric.device == device) & (Metric.ts >= newest - seconds))
    start = oldest.scalar()
    if newest - start < min_span:
        return []
    p = _param()
    sql = f"""
    WITH RECURSIVE points(t, n) AS (
        SELECT CAST({p} AS DOUBLE PRECISION), 1
        UNION ALL SELECT t + {p}, n + 1 FROM points WHERE n < {p}
    )
    SELECT {", ".join(f"m.{c}" for c in columns)} FROM points JOIN metric AS m ON m.id = (
        SELECT s.id FROM metric AS s WHERE s.device = {p} AND s.ts <= points.t ORDER BY s.ts DESC LIMIT 1
    )
    """
    step = (newest - start) / (points - 1)
    return list(db.execute_sql(sql, (start, step, points, device)).fetchall())


# Every device's samples of its last `seconds`: a walk over the devices (as above), then a range of the
# (device, ts) index each.
RECENT_PER_DEVICE_SQL = """
WITH RECURSIVE devices(device) AS (
    SELECT MIN(device) FROM metric
    UNION ALL
    SELECT (SELECT MIN(m.device) FROM metric AS m WHERE m.device > devices.device) FROM devices
    WHERE devices.device IS NOT NULL
), newest(device, ts) AS (
    SELECT device, (SELECT MAX(m.ts) FROM metric AS m WHERE m.device = devices.device) FROM devices
    WHERE devices.device IS NOT NULL
)
SELECT m.id, m.device, m.ts, {columns} FROM newest
JOIN metric AS m ON m.device = newest.device AND m.ts >= newest.ts - {p}
ORDER BY m.device, m.ts
"""


def recent_per_device(seconds: float, columns: list[str]) -> list[tuple[int, str, float, dict[str, float]]]:
    """(id, device, ts, metrics) of every device's samples in the last `seconds` before its newest, by device
    and time; only the given metric columns, and only those present."""
    if set(columns) - set(KNOWN_METRICS):
        raise ValueError(f"not metric columns: {columns}")
    sql = RECENT_PER_DEVICE_SQL.format(columns=", ".join(f"m.{c}" for c in columns), p=_param())
    return [
        (metric_id, device, ts, {c: v for c, v in zip(columns, values, strict=True) if v is not None})
        for metric_id, device, ts, *values in db.execute_sql(sql, (seconds,)).fetchall()
    ]


def record_forecast_alert(metric_id: int, name: str, level: float, slope_per_h: float, eta_s: float,
                          usual: tuple[float, float] | None, chat_id: int, message_id: int) -> None:
    """Remember that a forecast for this sample and metric is message `message_id` in `chat_id`."""
    low, high = usual if usual else (None, None)
    ForecastAlert.insert(metric=metric_id, name=name, level=level, slope_per_h=slope_per_h, eta_s=eta_s,
                         usual_low=low, usual_high=high, chat_id=chat_id, message_id=message_id,
                         sent=time.time()).execute()


def forecast_alert(metric_id: int, name: str, chat_id: int, message_id: int) -> ForecastAlert | None:
    """The forecast alert at (chat, message) when it is about this sample and metric; None for anything forged."""
    return (
        ForecastAlert.select(ForecastAlert, Metric)
        .join(Metric)
        .where((ForecastAlert.chat_id == chat_id) & (ForecastAlert.message_id == message_id)
               & (ForecastAlert.metric == metric_id) & (ForecastAlert.name == name))
        .first()
    )


def add_forecast_label(alert_id: int, value: int, user_id: int, user_name: str) -> None:
    """Store a person's verdict on a forecast."""
    ForecastLabel.create(alert=alert_id, value=value, user_id=user_id, user_name=user_name[:200],
                         created=time.time())


def forecasts_alerted_since(seconds: float) -> list[tuple[str, str]]:
    """(device, metric) of the forecasts alerted within `seconds` before their device's newest sample."""
    latest = list(
        ForecastAlert.select(Metric.device, ForecastAlert.name, pw.fn.MAX(Metric.ts))
        .join(Metric).group_by(Metric.device, ForecastAlert.name).tuples()
    )
    if not latest:
        return []
    newest = {s.device: s.ts for s in latest_per_device()}
    return [(device, name) for device, name, ts in latest if ts >= newest.get(device, float("inf")) - seconds]
