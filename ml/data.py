"""Reading training data through the schema's tables (`schema.tables`), bound by `open_database`.

Read with a cursor in chunks: a million ORM objects would cost seconds and gigabytes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import peewee as pw

from agent.vocabulary import KNOWN_METRICS
from schema.streaming import FETCH_CHUNK, streamed
from schema.tables import Aggregate, KeptSample, Label, Metric


def latest_labels(training: bool = False) -> dict[int, int]:
    """Sample id -> the value of its latest label.

    For `training`, a sample whose latest label is a ❌ that became its machine's tolerance is left out: that
    machine sits there by design, which says nothing about the others, so the global model must not learn it
    as normal (and an earlier ✅ on the sample was overruled by it)."""
    query = Label.select(Label.metric, Label.value, Label.tolerance).order_by(Label.created, Label.id).tuples()
    latest = {int(metric_id): (int(value), bool(tolerance)) for metric_id, value, tolerance in query}
    return {metric_id: value for metric_id, (value, tolerance) in latest.items() if not (training and tolerance)}


def _values(queries: list[tuple[type[pw.Model], pw.Select]], width: int) -> np.ndarray:
    """The rows of the (table, query) pairs, one after the other, as one float array. It is allocated once for
    the rows of the tables counted first and filled chunk by chunk, so no copy of the whole result is ever
    made; rows stored since the count are appended."""
    expected = sum(table.select().count() for table, _ in queries)
    out = np.empty((expected, width))
    filled, late = 0, []
    for _table, query in queries:
        with streamed(*query.sql()) as cursor:
            while rows := cursor.fetchmany(FETCH_CHUNK):  # type: ignore[attr-defined]
                block = np.array(rows, dtype=float)
                take = min(len(block), expected - filled)
                out[filled:filled + take] = block[:take]
                filled += take
                if take < len(block):
                    late.append(block[take:])
    return np.vstack([out[:filled], *late]) if late else out[:filled]


def columns(table: type[pw.Model], names: list[str]) -> list[pw.Field]:
    """The table's columns of these metrics; a name that is not a known metric raises ValueError."""
    unknown = [name for name in names if name not in KNOWN_METRICS]
    if unknown:
        raise ValueError(f"not a metric column: {sorted(unknown)}")
    return [table._meta.fields[name] for name in names]


def training_frame(features: list[str]) -> pd.DataFrame:
    """The features of every sample, indexed by sample id, plus `label`: the latest human label, NaN where
    nobody labelled it (or its latest label is a machine's tolerance). NULL metrics are NaN. Samples kept raw past
    the retention (labelled ones among them; on PostgreSQL in `metric_kept`) are samples like the others; five
    downsampled minutes (see bot/db/retention.py) count as one sample of their means, indexed by minus their id."""
    queries: list[tuple[type[pw.Model], pw.Select]] = [
        (Metric, Metric.select(Metric.id, *columns(Metric, features)).order_by(Metric.id)),
    ]
    if KeptSample.table_exists():  # a store the bot has not opened since samples were partitioned
        queries.append((KeptSample, KeptSample.select(KeptSample.id, *columns(KeptSample, features))
                        .order_by(KeptSample.id)))
    if Aggregate.table_exists():  # a store the bot has not opened since retention came
        queries.append((Aggregate, Aggregate.select(Aggregate.id * -1, *columns(Aggregate, features))
                        .order_by(Aggregate.id.desc())))
    values = _values(queries, len(features) + 1)
    frame = pd.DataFrame(values[:, 1:], columns=features, index=pd.Index(values[:, 0].astype(np.int64), name="id"))
    frame["label"] = pd.Series(latest_labels(training=True), dtype=float).reindex(frame.index)
    return frame
