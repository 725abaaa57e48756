"""Storage of metrics, predictions, labels, alerts and rejected messages (peewee; SQLite or Postgres).

Every function here blocks: the bot calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import orjson
import pandas as pd
import peewee as pw
from peewee import fn
from playhouse.db_url import register_database
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase
from playhouse.shortcuts import ReconnectMixin

from agent.wire import KNOWN_METRICS, Sample
from ml import data

log = logging.getLogger(__name__)
db = pw.DatabaseProxy()
INSERT_CHUNK = 1000  # rejected rows per INSERT: well under SQLite's limit of bound variables


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


class Device(BaseModel):
    """One row per device that ever reported: its newest sample and usual interval (for /status and silence)."""

    name = pw.CharField(max_length=64, unique=True)
    last_ts = pw.DoubleField()  # sample time of the newest sample
    last_received = pw.DoubleField()  # when the bot last stored one: a silence is measured on the bot's clock
    last_metric = pw.BigIntegerField(null=True)  # id of the newest sample
    last_p = pw.DoubleField(null=True)
    interval = pw.DoubleField(null=True)  # the usual seconds between samples


class Incident(BaseModel):
    """A stressed stretch, a silence or a forecast of one device: opened once, updated, resolved.

    `revision` grows with every change, so the newest state wins over any stale message edit.
    """

    device = pw.CharField(max_length=64, index=True)
    kind = pw.CharField(max_length=16)  # stressed | silent | forecast
    metric = pw.CharField(max_length=32, default="")  # a forecast's metric; "" for the others
    state = pw.CharField(max_length=16, index=True)  # open | resolved | false alarm
    opened_ts = pw.DoubleField()  # sample time it started
    last_ts = pw.DoubleField()
    resolved_ts = pw.DoubleField(null=True)
    sample = pw.ForeignKeyField(Metric, null=True, on_delete="SET NULL")  # what a label on it is about
    last_p = pw.DoubleField(null=True)
    peak_p = pw.DoubleField(null=True)
    below = pw.IntegerField(default=0)  # consecutive samples under threshold - hysteresis
    detail = pw.TextField(default="{}")  # JSON: the drivers, a forecast's numbers
    acked_by = pw.CharField(max_length=200, null=True)
    acked_at = pw.DoubleField(null=True)
    snoozed_until = pw.DoubleField(null=True)
    acted = pw.DoubleField(null=True)  # when a person last pressed one of its buttons
    next_reminder = pw.DoubleField(null=True)
    revision = pw.IntegerField(default=1)
    created = pw.DoubleField()
    updated = pw.DoubleField()


# One open incident per device and kind (and metric), however many processes decide: a second one fails
# its batch's transaction, which is read again and then finds the first.
Incident.add_index(Incident.device, Incident.kind, Incident.metric, unique=True, where=(Incident.state == "open"))


class Notice(BaseModel):
    """The outbox: one message to one chat about an incident, written in the transaction that decided it.

    kind "alert" is the incident's own message, rendered from its newest state and edited while it lasts;
    kind "reply" (recovered, reminder) is a short reply to it with a fixed text. A row exists before its
    message is sent, so its buttons are valid from the first moment.
    """

    incident = pw.ForeignKeyField(Incident, on_delete="CASCADE", index=True)
    chat_id = pw.BigIntegerField()
    kind = pw.CharField(max_length=8)
    text = pw.TextField(null=True)
    created = pw.DoubleField()
    due = pw.DoubleField(index=True)  # next try
    attempts = pw.IntegerField(default=0)
    sent = pw.DoubleField(null=True)
    failed = pw.TextField(null=True)  # why it can never be delivered (bot blocked, chat gone)
    message_id = pw.BigIntegerField(null=True)
    shown_revision = pw.IntegerField(default=0)  # the incident revision the message shows
    edited = pw.DoubleField(null=True)
    claimed_until = pw.DoubleField(null=True)  # a sender working on it: others keep off until then


class Mute(BaseModel):
    """A device under maintenance: stored and predicted, but no incident opens until `until`."""

    device = pw.CharField(max_length=64, unique=True)
    until = pw.DoubleField()
    reason = pw.CharField(max_length=200)
    user_id = pw.BigIntegerField()
    user_name = pw.CharField(max_length=200)
    created = pw.DoubleField()


class Rejected(BaseModel):
    """A message that did not follow the wire format, kept with the reason for an operator."""

    received = pw.DoubleField()
    source = pw.CharField(max_length=300)  # topic[partition]@offset
    # SHA-256 of the source, the Kafka timestamp and the whole payload: a redelivery adds nothing, while a
    # new message at a reused offset (the topic was recreated) is recorded too.
    fingerprint = pw.CharField(max_length=64, unique=True)
    reason = pw.TextField()
    size = pw.IntegerField()
    payload = pw.TextField()  # the first bytes only: enough to recognise the sender

    class Meta:
        # Not "rejected": that table, unique on source alone, has no fingerprint; a new table is created
        # next to it instead of failing every insert into it.
        table_name = "rejected_message"


class ForecastLabel(BaseModel):
    """A person's verdict on a forecast: 1 = it was right, 0 = it was wrong. Apart from `Label`: the
    classifier never trains on these."""

    incident = pw.ForeignKeyField(Incident, on_delete="CASCADE", index=True)
    value = pw.SmallIntegerField()
    user_id = pw.BigIntegerField()
    user_name = pw.CharField(max_length=200)
    created = pw.DoubleField()


class Aggregate(BaseModel):
    """Five minutes of one device's samples older than RETENTION_DAYS (see bot/retention.py): per metric the
    minimum (`<name>_min`), the mean (`<name>`, the same column name as a raw sample's) and the maximum."""

    device = pw.CharField(max_length=64)
    bucket = pw.DoubleField()  # start of the five minutes, Unix seconds
    samples = pw.IntegerField()  # how many raw samples it stands for
    p_stressed = pw.DoubleField(null=True)  # the highest of them

    class Meta:
        table_name = "metric_5m"
        indexes = ((("device", "bucket"), True),)


for _name in KNOWN_METRICS:
    Aggregate._meta.add_field(f"{_name}_min", pw.DoubleField(null=True))
    Aggregate._meta.add_field(_name, pw.DoubleField(null=True))
    Aggregate._meta.add_field(f"{_name}_max", pw.DoubleField(null=True))


TABLES = [Metric, Label, Rejected, Device, Incident, Notice, Mute, ForecastLabel, Aggregate]


@dataclass(frozen=True)
class Rejection:
    source: str
    reason: str
    payload: bytes | None
    sent_ms: int | None = None  # the Kafka message timestamp, when there is one


class Origin(NamedTuple):
    """Where a sample came from: what it is recorded as if the database refuses it. A tuple: one is made per
    message, and a frozen dataclass costs several times as much to make."""

    source: str
    payload: bytes | None
    sent_ms: int | None = None


# What a database driver raises for a value it cannot hold (and peewee for a value it cannot convert). A
# lost connection or a missing table raises something else, and fails the whole batch so it is read again.
REFUSED = (pw.DataError, pw.IntegrityError, ValueError, TypeError, OverflowError)


@dataclass(slots=True)  # not frozen: one is made per stored message, and a frozen one costs twice as much
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
    database = data.connect(url)
    db.initialize(database)
    database.create_tables(TABLES, safe=True)
    return database


# SQLite copies its write-ahead log into the database file (a checkpoint) inside the commit that grows the log
# past wal_autocheckpoint pages: by default 1,000 (4 MiB), every few batches, and the batch waits for it. The bot
# checkpoints every CHECKPOINT_S beside ingestion instead (as SQLite's documentation suggests for busy writers),
# and a commit checkpoints only what is left past WAL_PAGES: the log cannot grow without bound.
CHECKPOINT_S = 1.0
WAL_PAGES = 10_000


def checkpoint_in_background() -> bool:
    """SQLite: commits leave the checkpoints to `checkpoint`, to be called every CHECKPOINT_S beside
    ingestion; False (nothing to do) on PostgreSQL."""
    if is_postgres():
        return False
    db.pragma("wal_autocheckpoint", WAL_PAGES, permanent=True)
    return True


def checkpoint() -> None:
    """Copy what SQLite's write-ahead log holds into the database file, neither waiting for nor holding up
    readers and writers (PASSIVE)."""
    db.execute_sql("PRAGMA wal_checkpoint(PASSIVE)")


def reachable() -> bool:
    """Whether the last attempt to connect to the database worked: False during an outage that something
    (the poller, a command) ran into, True again once a connection works."""
    return getattr(db.obj, "reachable", True)


def store_batch(
    samples: list[Sample], predictions: list[float | None], version: int | None, rejects: list[Rejection],
    origins: Sequence[Origin] | None = None, on_stored: Callable[[list[StoredSample]], None] | None = None,
    values: list[tuple[float | None, ...]] | None = None,
) -> list[StoredSample]:
    """Store a batch in one transaction; return the samples that were new (not redelivered), in batch order.
    `values` are the samples' `known_values`, when the caller has them already.

    `on_stored` gets the new samples inside that transaction: what it decides (incidents, their messages)
    is stored together with the batch, or not at all.

    A sample the database refuses does not fail the batch: the batch is split in halves until the refused
    sample is alone, and that one is recorded as rejected, with the database's reason, under its origin.
    """
    now = time.time()
    refused: list[Rejection] = []
    items = _items(samples, predictions, known_values(samples) if values is None else values, origins, version, now,
                   refused)
    with db.atomic():
        new = _insert(items, refused, origins)
        rows = [_rejected_row(r, now) for r in [*rejects, *refused]]
        for start in range(0, len(rows), INSERT_CHUNK):
            Rejected.insert_many(rows[start:start + INSERT_CHUNK]).on_conflict_ignore().execute()
        if on_stored is not None:
            on_stored(new)
    for r in refused:
        log.warning("rejected message %s: %s", r.source, r.reason)
    return new


# The columns of a stored sample, in the order of the row tuples handed to the driver.
COLUMNS = ("device", "ts", "received", "extra", "p_stressed", "model_version", *KNOWN_METRICS)
_KNOWN = frozenset(KNOWN_METRICS)


def known_values(samples: Sequence[Sample]) -> list[tuple[float | None, ...]]:
    """Each sample's known metrics in the order of KNOWN_METRICS, None where it has none."""
    return [sample.known if sample.known is not None else tuple(map(sample.metrics.get, KNOWN_METRICS))
            for sample in samples]


# (row: the values of COLUMNS, the sample, its index in the batch); a plain tuple, as one is made per message.
_Item = tuple[tuple[object, ...], Sample, int]


def _refusal(item: _Item, exc: Exception, origins: Sequence[Origin] | None) -> Rejection:
    """The rejection of a refused item; without an origin it is named by its device and time."""
    _row, sample, index = item
    if origins is not None:
        origin = origins[index]
    else:
        origin = Origin(f"{sample.device}@{sample.ts!r}", repr(sample).encode("utf-8", "backslashreplace"))
    return Rejection(origin.source, f"the database refused it: {type(exc).__name__}: {exc}", origin.payload,
                     origin.sent_ms)


def _items(
    samples: list[Sample], predictions: list[float | None], values: list[tuple[float | None, ...]],
    origins: Sequence[Origin] | None, version: int | None, now: float, refused: list[Rejection],
) -> list[_Item]:
    """One plain row tuple per distinct (device, ts); the first of duplicates in a batch is the one stored."""
    if origins is not None and len(origins) != len(samples):
        raise ValueError("an origin for each sample")
    items: dict[tuple[str, float], _Item] = {}
    for index, (sample, p, known) in enumerate(zip(samples, predictions, values, strict=True)):
        key = (sample.device, sample.ts)
        if key in items:
            continue
        extra = None
        if sample.known is None and not sample.metrics.keys() <= _KNOWN:  # known: every metric is a known one
            try:
                extra = json.dumps({k: v for k, v in sample.metrics.items() if k not in _KNOWN}, allow_nan=False)
            except ValueError as exc:  # an infinite unknown metric: no database can hold it as JSON
                refused.append(_refusal(((), sample, index), exc, origins))
                continue
        items[key] = ((*key, now, extra, p, version if p is not None else None, *known), sample, index)
    return list(items.values())


def _insert(items: list[_Item], refused: list[Rejection], origins: Sequence[Origin] | None) -> list[StoredSample]:
    """Insert the items in a savepoint; when the database refuses it, bisect down to the refused items."""
    if not items:
        return []
    try:
        # A savepoint: a refused part is undone alone, the rest of the batch stays. The driver's errors are
        # turned into peewee's, as for any peewee query.
        with db.atomic(), pw.__exception_wrapper__:
            inserted = _insert_postgres(items) if is_postgres() else _insert_sqlite(items)
    except REFUSED as exc:
        if len(items) == 1:
            refused.append(_refusal(items[0], exc, origins))
            return []
        middle = len(items) // 2
        return _insert(items[:middle], refused, origins) + _insert(items[middle:], refused, origins)
    return [StoredSample(metric_id, row[0], row[1], sample.metrics, row[4], row[5])  # type: ignore[arg-type]
            for metric_id, (row, sample, _index) in inserted]


def _matched(inserted: list[tuple[int, str, float]], items: list[_Item]) -> list[tuple[int, _Item]]:
    """(id, item) of each inserted (id, device, ts), in the order of the ids."""
    by_key = {item[0][:2]: item for item in items}
    return [(metric_id, by_key[(device, ts)]) for metric_id, device, ts in sorted(inserted)]


def is_postgres() -> bool:
    """Whether the store is PostgreSQL (else SQLite)."""
    return isinstance(db.obj, pw.PostgresqlDatabase)


_SQLITE_INSERT = (f"INSERT INTO metric ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                  "ON CONFLICT (device, ts) DO NOTHING")


def _insert_sqlite(items: list[_Item]) -> list[tuple[int, _Item]]:
    """executemany of plain tuples: peewee's query builder costs far more than SQLite's insert itself.

    SQLite's executemany returns no RETURNING rows; but the write lock is held until commit, so the rows
    inserted here got consecutive rowids ending at last_insert_rowid(), in the order of the items. When
    every item was new, that says which id each got; otherwise the new rows are read back.
    """
    connection = db.connection()
    inserted = connection.executemany(_SQLITE_INSERT, [item[0] for item in items]).rowcount
    if inserted <= 0:
        return []
    (last,) = connection.execute("SELECT last_insert_rowid()").fetchone()
    if inserted == len(items):
        return list(zip(range(last - inserted + 1, last + 1), items, strict=True))
    return _matched(connection.execute("SELECT id, device, ts FROM metric WHERE id > ? AND id <= ?",
                                       (last - inserted, last)).fetchall(), items)


_STAGE = "metric_stage"
_PG_STAGE_TABLE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (device TEXT, ts DOUBLE PRECISION, received DOUBLE PRECISION, "
    f"extra TEXT, p_stressed DOUBLE PRECISION, model_version INTEGER, "
    f"{', '.join(f'{name} DOUBLE PRECISION' for name in KNOWN_METRICS)}) ON COMMIT DELETE ROWS"
)
# An empty device is text, not NULL: only an unquoted empty field is NULL.
_PG_COPY = f"COPY {_STAGE} ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv, FORCE_NOT_NULL (device))"
# The same rows as JSON arrays are CSV lines too, when no string in them needed a JSON escape.
_PG_COPY_JSON = f"COPY {_STAGE} ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv, NULL 'null')"
_PG_INSERT = (f"INSERT INTO metric ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM {_STAGE} "
              "ON CONFLICT (device, ts) DO NOTHING RETURNING id, device, ts")


def _copy_data(rows: list[tuple[object, ...]]) -> tuple[str, bytes]:
    """The COPY statement and its data for the rows.

    orjson writes a batch several times faster than the csv module: `[["pc1",1.5,null],["pc2",…]]` without its
    outer brackets is CSV with one line per row, as long as no string needed a JSON escape (a quote, a
    backslash, a control character) or holds `],[`. Anything else (unknown metrics, kept as JSON text) goes
    through the csv module. (orjson would write a non-finite number as null; the wire format refuses them.)
    """
    try:
        data = orjson.dumps(rows)
    except TypeError:  # a type orjson does not write, or a lone surrogate
        data = b"\\"
    if b"\\" not in data and data.count(b"],[") == len(rows) - 1:
        return _PG_COPY_JSON, data[2:-2].replace(b"],[", b"\n")
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    return _PG_COPY, text.getvalue().encode("utf-8")  # a lone surrogate is refused here


def _insert_postgres(items: list[_Item]) -> list[tuple[int, _Item]]:
    """COPY into a per-session staging table, then one INSERT … ON CONFLICT DO NOTHING RETURNING."""
    copy, data = _copy_data([item[0] for item in items])
    cursor = db.cursor()
    cursor.execute(_PG_STAGE_TABLE)
    cursor.execute(f"DELETE FROM {_STAGE}")  # rows of an earlier savepoint of this transaction (bisecting)
    cursor.copy_expert(copy, io.BytesIO(data))
    cursor.execute(_PG_INSERT)
    return _matched(cursor.fetchall(), items)


def _text(text: str) -> str:
    """Text any database holds: no lone surrogates (UTF-8 cannot encode them), no NUL (Postgres refuses it)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _rejected_row(rejection: Rejection, now: float) -> dict[str, object]:
    payload = rejection.payload or b""
    source = _text(rejection.source)[:300]
    digest = hashlib.sha256(f"{source}\x00{rejection.sent_ms}\x00".encode())
    digest.update(payload)
    return {
        "received": now, "source": source, "fingerprint": digest.hexdigest(), "reason": _text(rejection.reason)[:1000],
        "size": len(payload),
        # A binary payload must not block the batch: the first bytes, as text.
        "payload": _text(payload[:512].decode("utf-8", "replace")),
    }


def _stored(row: Metric) -> StoredSample:
    metrics = {name: getattr(row, name) for name in KNOWN_METRICS if getattr(row, name) is not None}
    metrics.update(json.loads(row.extra) if row.extra else {})
    return StoredSample(row.id, row.device, row.ts, metrics, row.p_stressed, row.model_version)


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
    # (see bot/retention.py) count for as many samples as they stand for.
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


def incident_for_button(incident_id: int, chat_id: int) -> Incident | None:
    """The incident a button is about, when an incident message went (or goes) to this chat; None if forged."""
    return (Incident.select().join(Notice)
            .where((Incident.id == incident_id) & (Notice.chat_id == chat_id) & (Notice.kind == "alert")).first())


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
    whatever the sampling rate, and time-weighted: a burst of samples counts for the time it lasted. Where
    only downsampled five minutes are left (see bot/retention.py), their means are in force."""
    if not columns or set(columns) - set(KNOWN_METRICS):
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


def _points_sql(table: str, ts: str, columns: list[str]) -> str:
    p = _param()
    return f"""
    WITH RECURSIVE points(t, n) AS (
        SELECT CAST({p} AS DOUBLE PRECISION), 1
        UNION ALL SELECT t + {p}, n + 1 FROM points WHERE n < {p}
    )
    SELECT points.n, m.{ts}, {", ".join(f"m.{c}" for c in columns)} FROM points JOIN {table} AS m ON m.id = (
        SELECT s.id FROM {table} AS s WHERE s.device = {p} AND s.{ts} <= points.t ORDER BY s.{ts} DESC LIMIT 1
    )
    """


# Every device's samples of its last `seconds`: a walk over the devices (as above), then a range of the
# (device, ts) index each.
RECENT_PER_DEVICE_SQL = DEVICES_CTE.format(table="metric") + """, newest(device, ts) AS (
    SELECT device, (SELECT MAX(m.ts) FROM metric AS m WHERE m.device = devices.device) FROM devices
    WHERE devices.device IS NOT NULL
)
SELECT m.id, m.device, m.ts, {columns} FROM newest
JOIN metric AS m ON m.device = newest.device AND m.ts >= newest.ts - {p}
ORDER BY m.device, m.ts
"""


def recent_per_device(seconds: float, columns: list[str]) -> Iterator[tuple[int, str, float, dict[str, float]]]:
    """(id, device, ts, metrics) of every device's samples in the last `seconds` before its newest, by device
    and time; only the given metric columns, and only those present. Read as they are taken: a fleet's last
    hours are millions of samples, never held at once."""
    if set(columns) - set(KNOWN_METRICS):
        raise ValueError(f"not metric columns: {columns}")
    sql = RECENT_PER_DEVICE_SQL.format(columns=", ".join(f"m.{c}" for c in columns), p=_param())
    with data.streamed(db.obj, sql, (seconds,)) as cursor:
        while rows := cursor.fetchmany(data.FETCH_CHUNK):  # type: ignore[attr-defined]
            for metric_id, device, ts, *values in rows:
                yield metric_id, device, ts, {c: v for c, v in zip(columns, values, strict=True) if v is not None}


def add_forecast_label(incident_id: int, value: int, user_id: int, user_name: str) -> None:
    """Store a person's verdict on a forecast."""
    ForecastLabel.create(incident=incident_id, value=value, user_id=user_id, user_name=user_name[:200],
                         created=time.time())


def mute(device: str, until: float, reason: str, user_id: int, user_name: str) -> None:
    """Mute a device until `until`, replacing an earlier mute of it; who and why are kept."""
    with db.atomic():
        Mute.delete().where(Mute.device == device).execute()
        Mute.create(device=device, until=until, reason=reason[:200], user_id=user_id, user_name=user_name[:200],
                    created=time.time())


def unmute(device: str) -> bool:
    """End a device's mute; whether it had one."""
    return Mute.delete().where(Mute.device == device).execute() > 0


def mutes(now: float) -> list[Mute]:
    """The mutes in force, ending soonest first."""
    return list(Mute.select().where(Mute.until > now).order_by(Mute.until))


def device_count() -> int:
    """How many machines have reported."""
    return Device.select().count()


def incident_spans(device: str, start: float, end: float) -> list[tuple[float, float]]:
    """(from, to) of the device's stressed and silent incidents that overlap [start, end], for a chart."""
    query = Incident.select(Incident.opened_ts, Incident.resolved_ts, Incident.last_ts).where(
        (Incident.device == device) & (Incident.kind != "forecast") & (Incident.opened_ts <= end)
        & (Incident.resolved_ts.is_null() | (Incident.resolved_ts >= start)))
    return [(i.opened_ts, i.resolved_ts or max(i.last_ts, end)) for i in query]


def silent_devices() -> set[str]:
    """The devices with an open silence incident."""
    return {i.device for i in Incident.select(Incident.device).where(
        (Incident.state == "open") & (Incident.kind == "silent"))}


def muted_devices(now: float) -> set[str]:
    return {m.device for m in mutes(now)}
