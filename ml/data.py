"""Reading training data from the bot's database: the one data-access module that ml/ and the bot share.

Plain SQL on the `metric` and `label` tables (their schema lives in bot/store.py), read with a cursor in
chunks: a million ORM objects would cost seconds and gigabytes.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import peewee as pw
from playhouse.db_url import connect as connect_url

FETCH_CHUNK = 10_000  # rows turned into an array at a time: bounds the memory of Python tuples
METRIC_COLUMN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
AGGREGATE_TABLE = "metric_5m"  # five-minute aggregates of old samples (bot/store.py Aggregate)


def connect(url: str) -> pw.Database:
    """A connection to DATABASE_URL; SQLite's folder is created and a busy writer is waited out."""
    if url.startswith("sqlite"):
        path = url.split("://", 1)[1][1:]  # sqlite:///rel/path and sqlite:////abs/path
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # WAL lets readers read while the poller writes; busy_timeout waits out a writer. Every transaction
        # takes the write lock when it begins (IMMEDIATE): one that read first and wrote later would fail at
        # once with "database is locked" when another connection wrote in between, busy_timeout or not.
        # Incremental auto-vacuum (it only takes on a new file) lets retention give freed pages back.
        return connect_url(url, returning_clause=True, lock_type="IMMEDIATE", pragmas={
            "auto_vacuum": "incremental", "journal_mode": "wal", "busy_timeout": 10000,
        })
    return connect_url(url)


def latest_labels(database: pw.Database) -> dict[int, int]:
    """Sample id -> the value of its latest label."""
    cursor = database.execute_sql("SELECT metric_id, value FROM label ORDER BY created, id")
    return {int(metric_id): int(value) for metric_id, value in cursor.fetchall()}


@contextlib.contextmanager
def streamed(database: pw.Database, sql: str, params: tuple = ()) -> Iterator[object]:
    """A cursor over the rows of `sql`, to read with fetchmany. On PostgreSQL a server-side one: the driver
    would otherwise hold the whole result set in memory next to what is made from it."""
    if not isinstance(database, pw.PostgresqlDatabase):
        yield database.execute_sql(sql, params)
        return
    with database.atomic():
        # psycopg2 names a cursor only WITH HOLD while peewee keeps autocommit on; read whole inside the
        # transaction, it streams and is never materialised.
        cursor = database.connection().cursor(name=f"rigwatch_{uuid.uuid4().hex}", withhold=True)
        try:
            cursor.execute(sql, params)
            yield cursor
        finally:
            cursor.close()


def _values(database: pw.Database, queries: list[tuple[str, str]], width: int) -> np.ndarray:
    """The rows of the (table, query) pairs, one after the other, as one float array. It is allocated once for
    the rows of the tables counted first and filled chunk by chunk, so no copy of the whole result is ever
    made; rows stored since the count are appended."""
    expected = sum(database.execute_sql(f"SELECT count(*) FROM {table}").fetchone()[0] for table, _ in queries)
    out = np.empty((expected, width))
    filled, late = 0, []
    for _table, query in queries:
        with streamed(database, query) as cursor:
            while rows := cursor.fetchmany(FETCH_CHUNK):  # type: ignore[attr-defined]
                block = np.array(rows, dtype=float)
                take = min(len(block), expected - filled)
                out[filled:filled + take] = block[:take]
                filled += take
                if take < len(block):
                    late.append(block[take:])
    return np.vstack([out[:filled], *late]) if late else out[:filled]


def training_frame(database: pw.Database, features: list[str]) -> pd.DataFrame:
    """The features of every sample, indexed by sample id, plus `label`: the latest human label, NaN where
    nobody labelled it. NULL metrics are NaN. Five downsampled minutes (see bot/retention.py) count as one
    sample of their means, indexed by minus their id."""
    if any(set(name) - METRIC_COLUMN_CHARS for name in features):
        raise ValueError(f"not a metric column: {features}")  # the names go into the SQL text
    columns = ", ".join(features)
    queries = [("metric", f"SELECT id, {columns} FROM metric ORDER BY id")]
    if database.table_exists(AGGREGATE_TABLE):  # a store the bot has not opened since retention came
        queries.append((AGGREGATE_TABLE, f"SELECT -id, {columns} FROM {AGGREGATE_TABLE} ORDER BY id DESC"))
    values = _values(database, queries, len(features) + 1)
    frame = pd.DataFrame(values[:, 1:], columns=features, index=pd.Index(values[:, 0].astype(np.int64), name="id"))
    frame["label"] = pd.Series(latest_labels(database), dtype=float).reindex(frame.index)
    return frame
