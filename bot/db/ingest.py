"""Batch ingest: a batch of samples and rejected messages stored in one transaction, and its devices updated.

The hot path of the bot. Raw SQL where peewee's query builder measured slower than the insert itself: SQLite's
executemany of plain tuples, PostgreSQL's COPY into a staging table, and the devices' UPDATE from VALUES or
array literals (docs/performance.md, the hot path, has the figures).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

import orjson
import peewee as pw

from agent.vocabulary import KNOWN_METRICS
from agent.wire import Sample
from bot.db.connection import is_postgres, param
from bot.db.samples import StoredSample
from schema.tables import Device, Heartbeat, Rejected, db

log = logging.getLogger(__name__)
INSERT_CHUNK = 1000  # rejected rows per INSERT: well under SQLite's limit of bound variables
INTERVAL_WEIGHT = 0.2  # of the newest gap in the device's usual interval (an exponential average)


@dataclass(frozen=True)
class Rejection:
    source: str
    reason: str
    payload: bytes | None
    sent_ms: int | None = None  # the Kafka message timestamp, when there is one


class Origin(NamedTuple):
    """Where a sample came from: what it is recorded as if the database refuses it. A tuple: one is made per
    message (docs/performance.md, the hot path)."""

    source: str
    payload: bytes | None
    sent_ms: int | None = None


# What a database driver raises for a value it cannot hold (and peewee for a value it cannot convert). A
# lost connection or a missing table raises something else, and fails the whole batch so it is read again.
REFUSED = (pw.DataError, pw.IntegrityError, ValueError, TypeError, OverflowError)


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
        for chunk in pw.chunked(rows, INSERT_CHUNK):
            Rejected.insert_many(chunk).on_conflict_ignore().execute()
        if on_stored is not None:
            on_stored(new)
    for r in refused:
        log.warning("rejected message %s: %s", r.source, r.reason)
    return new


# The columns of a stored sample, in the order of the row tuples handed to the driver. A batch with filesystems,
# top processes or readings in a sample has three columns more in every row (WIDE_COLUMNS); a batch without them,
# as many senders' are, is written as before.
COLUMNS = ("device", "ts", "received", "extra", "p_stressed", "model_version", *KNOWN_METRICS)
WIDE_COLUMNS = (*COLUMNS, "filesystems", "processes", "readings")
_KNOWN = frozenset(KNOWN_METRICS)
_NO_EXTRAS = (None, None, None)


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
    wide = False
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
        row = (*key, now, extra, p, version if p is not None else None, *known)
        if sample.filesystems is not None or sample.processes is not None or sample.readings is not None \
                or sample.unreadable is not None:
            wide = True
            row = (*row, _json(sample.filesystems), _json(sample.processes), readings_json(sample))
        items[key] = (row, sample, index)
    if not wide:
        return list(items.values())
    narrow = len(COLUMNS)
    return [(row + _NO_EXTRAS if len(row) == narrow else row, sample, index) for row, sample, index in items.values()]


def readings_json(sample: Sample) -> str | None:
    """A sample's readings, their notes and what its sender could not read, as the JSON text stored."""
    if sample.readings is None and sample.unreadable is None:
        return None
    return orjson.dumps({name: value for name, value in (("readings", sample.readings), ("notes", sample.notes),
                                                         ("unreadable", sample.unreadable)) if value}).decode()


def _json(value: object) -> str | None:
    """Filesystems or processes as the JSON text stored: the wire format checked them, so orjson writes them."""
    return None if value is None else orjson.dumps(value).decode()


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
    return [StoredSample(metric_id, row[0], row[1], sample.metrics, row[4], row[5],  # type: ignore[arg-type]
                         sample.filesystems, sample.processes, sample.readings, sample.notes, sample.unreadable)
            for metric_id, (row, sample, _index) in inserted]


def _matched(inserted: list[tuple[int, str, float]], items: list[_Item]) -> list[tuple[int, _Item]]:
    """(id, item) of each inserted (id, device, ts), in the order of the ids."""
    by_key = {item[0][:2]: item for item in items}
    return [(metric_id, by_key[(device, ts)]) for metric_id, device, ts in sorted(inserted)]


def _sqlite_insert(columns: tuple[str, ...]) -> str:
    return (f"INSERT INTO metric ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            "ON CONFLICT (device, ts) DO NOTHING")


_SQLITE_INSERT = {len(c): _sqlite_insert(c) for c in (COLUMNS, WIDE_COLUMNS)}  # by the length of the rows


def _insert_sqlite(items: list[_Item]) -> list[tuple[int, _Item]]:
    """executemany of plain tuples, not peewee's query builder (docs/performance.md, the hot path).

    SQLite's executemany returns no RETURNING rows; but the write lock is held until commit, so the rows
    inserted here got consecutive rowids ending at last_insert_rowid(), in the order of the items. When
    every item was new, that says which id each got; otherwise the new rows are read back.
    """
    connection = db.connection()
    inserted = connection.executemany(_SQLITE_INSERT[len(items[0][0])], [item[0] for item in items]).rowcount
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
    f"{', '.join(f'{name} DOUBLE PRECISION' for name in KNOWN_METRICS)}, filesystems TEXT, processes TEXT, "
    "readings TEXT) "
    "ON COMMIT DELETE ROWS"
)


def _pg_statements(columns: tuple[str, ...]) -> tuple[str, str, str]:
    """(COPY as CSV, COPY of JSON arrays, INSERT from the staging table) for rows of these columns."""
    names = ", ".join(columns)
    return (
        # An empty device is text, not NULL: only an unquoted empty field is NULL.
        f"COPY {_STAGE} ({names}) FROM STDIN WITH (FORMAT csv, FORCE_NOT_NULL (device))",
        # The same rows as JSON arrays are CSV lines too, when no string in them needed a JSON escape.
        f"COPY {_STAGE} ({names}) FROM STDIN WITH (FORMAT csv, NULL 'null')",
        f"INSERT INTO metric ({names}) SELECT {names} FROM {_STAGE} ON CONFLICT (device, ts) DO NOTHING "
        "RETURNING id, device, ts",
    )


_PG = {len(c): _pg_statements(c) for c in (COLUMNS, WIDE_COLUMNS)}  # by the length of the rows


def _copy_data(rows: list[tuple[object, ...]], copy_csv: str, copy_json: str) -> tuple[str, bytes]:
    """The COPY statement and its data for the rows.

    orjson writes a batch faster than the csv module (docs/performance.md, the hot path):
    `[["pc1",1.5,null],["pc2",…]]` without its outer brackets is CSV with one line per row, as long as no string
    needed a JSON escape (a quote, a backslash, a control character) or holds `],[`. Anything else (unknown
    metrics, kept as JSON text) goes through the csv module. (orjson would write a non-finite number as null; the
    wire format refuses them.)
    """
    try:
        data = orjson.dumps(rows)
    except TypeError:  # a type orjson does not write, or a lone surrogate
        data = b"\\"
    if b"\\" not in data and data.count(b"],[") == len(rows) - 1:
        return copy_json, data[2:-2].replace(b"],[", b"\n")
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    return copy_csv, text.getvalue().encode("utf-8")  # a lone surrogate is refused here


def _insert_postgres(items: list[_Item]) -> list[tuple[int, _Item]]:
    """COPY into a per-session staging table, then one INSERT … ON CONFLICT DO NOTHING RETURNING."""
    copy_csv, copy_json, insert = _PG[len(items[0][0])]
    copy, data = _copy_data([item[0] for item in items], copy_csv, copy_json)
    cursor = db.cursor()
    cursor.execute(_PG_STAGE_TABLE)
    cursor.execute(f"DELETE FROM {_STAGE}")  # rows of an earlier savepoint of this transaction (bisecting)
    cursor.copy_expert(copy, io.BytesIO(data))
    cursor.execute(insert)
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


# One statement for a whole batch's devices: a save() per device per batch cost more than the batch's insert.
_DEVICE_CHUNK = 500
# A row whose `newer` is 0 only says the device was heard from: its newest sample stays.
_SET_DEVICES = (
    'UPDATE device SET last_received = v.last_received, '
    'last_ts = CASE WHEN v.newer = 1 THEN v.last_ts ELSE device.last_ts END, '
    'last_metric = CASE WHEN v.newer = 1 THEN v.last_metric ELSE device.last_metric END, '
    'last_p = CASE WHEN v.newer = 1 THEN v.last_p ELSE device.last_p END, '
    '"interval" = CASE WHEN v.newer = 1 THEN v.gap ELSE device."interval" END '
    'FROM {source} WHERE device.id = v.id'
)
_DEVICE_COLUMNS = "v(id, last_ts, last_received, last_metric, last_p, gap, newer)"
_SQLITE_DEVICE_ROW = "(?, ?, ?, ?, ?, ?, ?)"  # SQLite: the rows as VALUES
# PostgreSQL: one array literal per column, faster for it to read than rows of VALUES (docs/performance.md, the
# hot path).
_PG_SET_DEVICES = _SET_DEVICES.format(source="unnest(%s::bigint[], %s::float8[], %s::float8[], %s::bigint[], "
                                             f"%s::float8[], %s::float8[], %s::int[]) AS {_DEVICE_COLUMNS}")


def _array(column: Iterable[object]) -> str:
    """A PostgreSQL array literal of numbers and NULLs."""
    return "{" + ",".join("NULL" if value is None else repr(value) for value in column) + "}"


def update_devices(by_device: dict[str, list[StoredSample]], now: float) -> None:
    """One row per device: the newest sample and the usual interval, for /status and the silence check."""
    known = {name: (device_id, last_ts, interval) for device_id, name, last_ts, interval in
             _rows_of("SELECT id, name, last_ts, interval FROM device WHERE name IN ({})", list(by_device))}
    created, changed = [], []
    for name, samples in by_device.items():
        newest = samples[-1]
        if name not in known:
            created.append({"name": name, "last_ts": newest.ts, "last_received": now, "last_metric": newest.id,
                            "last_p": newest.p_stressed, "interval": _gap(samples)})
            continue
        device_id, last_ts, interval = known[name]
        if newest.ts < last_ts:  # only late samples: the device was heard from, its newest stays
            changed.append((device_id, None, now, None, None, None))
            continue
        gap = _gap(samples) if len(samples) > 1 else newest.ts - last_ts
        if gap and gap > 0:
            interval = gap if interval is None else (1 - INTERVAL_WEIGHT) * interval + INTERVAL_WEIGHT * gap
        changed.append((device_id, newest.ts, now, newest.id, newest.p_stressed, interval))
    for chunk in pw.chunked(created, _DEVICE_CHUNK):
        Device.insert_many(chunk).execute()
    rows = [(*values, int(values[1] is not None)) for values in changed]
    if rows and is_postgres():
        db.obj.execute_sql(_PG_SET_DEVICES, [_array(column) for column in zip(*rows, strict=True)])
        return
    for chunk in pw.chunked(rows, _DEVICE_CHUNK):
        values = ", ".join([_SQLITE_DEVICE_ROW] * len(chunk))
        db.obj.execute_sql(f"WITH {_DEVICE_COLUMNS} AS (VALUES {values}) " + _SET_DEVICES.format(source="v"),
                           [value for row in chunk for value in row])


def _rows_of(sql: str, names: list[str]) -> list[tuple]:
    """A query with one `IN ({})` list of names, in chunks of _DEVICE_CHUNK; plain SQL, as it runs per batch."""
    rows = []
    for chunk in pw.chunked(names, _DEVICE_CHUNK):
        rows += db.obj.execute_sql(sql.format(", ".join([param()] * len(chunk))), chunk).fetchall()
    return rows


def _gap(samples: list[StoredSample]) -> float | None:
    """The median gap between consecutive samples of one device, or None for a single sample."""
    gaps = sorted(b.ts - a.ts for a, b in pairwise(samples) if b.ts > a.ts)
    return gaps[len(gaps) // 2] if gaps else None


INTAKE_FORGOTTEN_S = 3600.0  # an intake silent this long no longer holds silences back (turned off, or long gone)


def beat(name: str, now: float, gap_s: float) -> None:
    """The intake `name` received (or could have: a healthy, empty poll counts): extend its stretch, or begin
    a new one when its last beat is older than `gap_s` (it was down meanwhile). Processes share the rows."""
    updated = (Heartbeat.update(since=pw.Case(None, [(Heartbeat.at < now - gap_s, now)], Heartbeat.since), at=now)
               .where(Heartbeat.name == name).execute())
    if not updated:
        Heartbeat.insert(name=name, since=now, at=now).on_conflict_ignore().execute()


def receiving_stretch(now: float) -> tuple[float, float] | None:
    """(since, at) of the time every intake of the bot has been receiving without a gap: since the latest of
    their stretches began, up to the earliest of their last beats. None before the first beat."""
    rows = list(Heartbeat.select().where(Heartbeat.at >= now - INTAKE_FORGOTTEN_S))
    if not rows:
        return None
    return max(r.since for r in rows), min(r.at for r in rows)
