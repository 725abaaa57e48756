"""Storage of metrics, predictions, labels, alerts and rejected messages (peewee; SQLite or Postgres).

Every function here blocks: the bot calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import peewee as pw
from playhouse.db_url import connect, register_database
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase
from playhouse.shortcuts import ReconnectMixin

from agent.wire import KNOWN_METRICS, Sample

db = pw.DatabaseProxy()
INSERT_CHUNK = 1000  # rows per INSERT: well under SQLite's limit of bound variables
FETCH_CHUNK = 10_000  # rows turned into an array at a time: bounds the memory of Python tuples


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


TABLES = [Metric, Label, Alert, Rejected]


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


class _Reconnecting(ReconnectMixin):
    """Opens a new connection when a statement outside a transaction, or the BEGIN of one, finds the old
    connection dropped (the server restarted, a proxy cut it, it was closed under us): the next batch or
    command heals instead of failing until the bot restarts. Inside a transaction it never reconnects
    silently; that batch fails, is read again, and the next BEGIN reconnects."""

    reconnect_errors = (
        (pw.OperationalError, "server closed the connection"),  # psycopg2
        (pw.OperationalError, "terminating connection"),  # psycopg2 and psycopg 3
        (pw.OperationalError, "the connection is closed"),  # psycopg 3
        (pw.OperationalError, "connection is lost"),  # psycopg 3
        (pw.InterfaceError, "connection already closed"),  # psycopg2, after a failure like the above
        (pw.ProgrammingError, "cannot operate on a closed database"),  # sqlite3
    )
    reachable = True  # False from a connection attempt that failed until one that works

    def connect(self, reuse_if_open: bool = False) -> bool:
        try:
            opened = super().connect(reuse_if_open)
        except pw.OperationalError:
            self.reachable = False
            raise
        self.reachable = True
        return opened


class ReconnectingPostgresqlDatabase(_Reconnecting, pw.PostgresqlDatabase):
    """postgres:// and postgresql://"""


class ReconnectingPooledPostgresqlDatabase(_Reconnecting, PooledPostgresqlDatabase):
    """postgres+pool:// and postgresql+pool://"""


class ReconnectingSqliteDatabase(_Reconnecting, pw.SqliteDatabase):
    """sqlite://"""


class ReconnectingPooledSqliteDatabase(_Reconnecting, PooledSqliteDatabase):
    """sqlite+pool://"""


# playhouse.db_url picks the class by scheme: DATABASE_URL and the ml command line both get these.
register_database(ReconnectingPostgresqlDatabase, "postgres", "postgresql")
register_database(ReconnectingPooledPostgresqlDatabase, "postgres+pool", "postgresql+pool")
register_database(ReconnectingSqliteDatabase, "sqlite")
register_database(ReconnectingPooledSqliteDatabase, "sqlite+pool")


def open_database(url: str) -> pw.Database:
    """Connect the models to DATABASE_URL and create the tables; SQLite's folder is created."""
    parsed = urlparse(url)
    if parsed.scheme.startswith("sqlite"):
        path = url.split("://", 1)[1][1:]  # sqlite:///rel/path and sqlite:////abs/path
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # WAL lets /status read while the poller writes; busy_timeout waits out a writer.
        database = connect(url, returning_clause=True, pragmas={"journal_mode": "wal", "busy_timeout": 10000})
    else:
        database = connect(url)
    db.initialize(database)
    database.create_tables(TABLES, safe=True)
    return database


def reachable() -> bool:
    """Whether the last attempt to connect to the database worked: False during an outage that something
    (the poller, a command) ran into, True again once a connection works."""
    return getattr(db.obj, "reachable", True)


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
    query = Label.select(Label.metric, Label.value).order_by(Label.created, Label.id).tuples()
    return dict(query)


def training_frame(features: list[str]) -> pd.DataFrame:
    """The features of every sample, indexed by sample id, plus `label`: the latest human label, NaN where
    nobody labelled it. NULL metrics are NaN.

    Read with a plain cursor in chunks: a million peewee objects would cost seconds and gigabytes.
    """
    unknown = set(features) - set(KNOWN_METRICS)
    if unknown:
        raise ValueError(f"not a metric column: {sorted(unknown)}")  # the names go into the SQL text
    cursor = db.execute_sql(f"SELECT id, {', '.join(features)} FROM metric ORDER BY id")
    chunks = []
    while rows := cursor.fetchmany(FETCH_CHUNK):
        chunks.append(np.array(rows, dtype=float))
    values = np.vstack(chunks) if chunks else np.empty((0, len(features) + 1))
    frame = pd.DataFrame(values[:, 1:], columns=features, index=pd.Index(values[:, 0].astype(np.int64), name="id"))
    frame["label"] = pd.Series(latest_labels(), dtype=float).reindex(frame.index)
    return frame
