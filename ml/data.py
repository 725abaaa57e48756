"""Reading training data from the bot's database: the one data-access module that ml/ and the bot share.

Plain SQL on the `metric` and `label` tables (their schema lives in bot/store.py), read with a cursor in
chunks: a million ORM objects would cost seconds and gigabytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import peewee as pw
from playhouse.db_url import connect as connect_url

FETCH_CHUNK = 10_000  # rows turned into an array at a time: bounds the memory of Python tuples
METRIC_COLUMN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def connect(url: str) -> pw.Database:
    """A connection to DATABASE_URL; SQLite's folder is created and a busy writer is waited out."""
    if url.startswith("sqlite"):
        path = url.split("://", 1)[1][1:]  # sqlite:///rel/path and sqlite:////abs/path
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # WAL lets readers read while the poller writes; busy_timeout waits out a writer. Every transaction
        # takes the write lock when it begins (IMMEDIATE): one that read first and wrote later would fail at
        # once with "database is locked" when another connection wrote in between, busy_timeout or not.
        return connect_url(url, returning_clause=True, lock_type="IMMEDIATE",
                           pragmas={"journal_mode": "wal", "busy_timeout": 10000})
    return connect_url(url)


def latest_labels(database: pw.Database) -> dict[int, int]:
    """Sample id -> the value of its latest label."""
    cursor = database.execute_sql("SELECT metric_id, value FROM label ORDER BY created, id")
    return {int(metric_id): int(value) for metric_id, value in cursor.fetchall()}


def training_frame(database: pw.Database, features: list[str]) -> pd.DataFrame:
    """The features of every sample, indexed by sample id, plus `label`: the latest human label, NaN where
    nobody labelled it. NULL metrics are NaN."""
    if any(set(name) - METRIC_COLUMN_CHARS for name in features):
        raise ValueError(f"not a metric column: {features}")  # the names go into the SQL text
    cursor = database.execute_sql(f"SELECT id, {', '.join(features)} FROM metric ORDER BY id")
    chunks = []
    while rows := cursor.fetchmany(FETCH_CHUNK):
        chunks.append(np.array(rows, dtype=float))
    values = np.vstack(chunks) if chunks else np.empty((0, len(features) + 1))
    frame = pd.DataFrame(values[:, 1:], columns=features, index=pd.Index(values[:, 0].astype(np.int64), name="id"))
    frame["label"] = pd.Series(latest_labels(database), dtype=float).reindex(frame.index)
    return frame
