"""What the pipeline learnt of each machine, kept between starts: the forecasts' trends and the usual ranges.

Small rows per machine, written as they are learnt (bot/pipeline/learnt.py says when) and read back at start: a
start reads one row per machine, and the few samples stored after it, instead of the machines' history.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import peewee as pw

from agent.vocabulary import KNOWN_METRICS
from bot.db.connection import is_postgres, param
from schema.tables import TrendState, UsualRange, db

WRITE_CHUNK = 500  # rows a statement
# (id, device, ts, metrics, filesystems, readings) of one sample, as bot/db/samples.py `recent_per_device` gives it
Recent = tuple[int, str, float, dict[str, float], dict[str, float] | None, dict[str, dict[str, float]] | None]
Kept = tuple[str, float, float, str]  # (device, ts, saved, state) of a machine's trends


def save_trends(states: Sequence[tuple[str, float, str]], now: float) -> None:
    """Write (device, ts, state) rows of the trends, saved at `now`, over what was kept of those devices."""
    rows = [{"device": device, "ts": ts, "saved": now, "state": state} for device, ts, state in states]
    for chunk in pw.chunked(rows, WRITE_CHUNK):
        TrendState.insert_many(chunk).on_conflict(
            conflict_target=[TrendState.device], preserve=[TrendState.ts, TrendState.saved, TrendState.state],
        ).execute()


def trend_states(chunk: int) -> Iterator[list[Kept]]:
    """Every kept state, by device, `chunk` at a time (one short query each)."""
    last = ""
    while True:
        rows = list(TrendState.select(TrendState.device, TrendState.ts, TrendState.saved, TrendState.state)
                    .where(TrendState.device > last).order_by(TrendState.device).limit(chunk).tuples())
        if not rows:
            return
        yield rows
        last = rows[-1][0]


# The samples a kept state does not hold: those of its device from its `ts` on, but no more than the last `window`
# before the device's newest (a state long out of date is brought forward as a silence would be). One range of the
# (device, ts) index per kept state, never a walk over the devices' samples: PostgreSQL is held to it by a LATERAL
# subquery, SQLite by CROSS JOIN, which keeps the kept states the outer loop (left to itself it read every sample
# of the chunk's devices).
_SINCE = "CASE WHEN d.last_ts IS NULL OR s.ts > d.last_ts - {p} THEN s.ts ELSE d.last_ts - {p} END"
_AFTER_POSTGRES = """
SELECT m.id, m.device, m.ts, m.filesystems, m.readings, {columns}
FROM trend_state AS s LEFT JOIN device AS d ON d.name = s.device
CROSS JOIN LATERAL (SELECT * FROM metric AS m WHERE m.device = s.device AND m.ts >= {since} ORDER BY m.ts) AS m
WHERE s.device >= {p} AND s.device <= {p}
ORDER BY m.device, m.ts
"""
_AFTER_SQLITE = """
SELECT m.id, m.device, m.ts, m.filesystems, m.readings, {columns}
FROM trend_state AS s LEFT JOIN device AS d ON d.name = s.device CROSS JOIN metric AS m
WHERE m.device = s.device AND m.ts >= {since} AND s.device >= {p} AND s.device <= {p}
ORDER BY m.device, m.ts
"""


def samples_after(first: str, last: str, window: float, columns: list[str]) -> dict[str, list[Recent]]:
    """device -> its samples that its kept state does not hold, in time order, for the kept devices from `first`
    to `last`; only the given metric columns, and only those present."""
    if set(columns) - set(KNOWN_METRICS):
        raise ValueError(f"not metric columns: {columns}")
    p = param()
    sql = (_AFTER_POSTGRES if is_postgres() else _AFTER_SQLITE).format(
        columns=", ".join(f"m.{c}" for c in columns), since=_SINCE.format(p=p), p=p)
    after: dict[str, list[Recent]] = {}
    for sample in _read(db.execute_sql(sql, (window, window, first, last)), columns):
        after.setdefault(sample[1], []).append(sample)
    return after


def devices_without_state() -> list[str]:
    """The machines that reported and have no kept trends (all of them after an upgrade from a version that kept
    none), by name."""
    cursor = db.execute_sql("SELECT name FROM device WHERE NOT EXISTS "
                            "(SELECT 1 FROM trend_state AS s WHERE s.device = device.name) ORDER BY name")
    return [name for (name,) in cursor.fetchall()]


def recent_of(device: str, window: float, columns: list[str]) -> list[Recent]:
    """One device's samples of the last `window` before its newest, in time order (what `recent_per_device` gives
    of every device)."""
    if set(columns) - set(KNOWN_METRICS):
        raise ValueError(f"not metric columns: {columns}")
    p = param()
    sql = (f"SELECT m.id, m.device, m.ts, m.filesystems, m.readings, {', '.join(f'm.{c}' for c in columns)} "
           f"FROM metric AS m WHERE m.device = {p} "
           f"AND m.ts >= (SELECT MAX(n.ts) FROM metric AS n WHERE n.device = {p}) - {p} ORDER BY m.ts")
    return list(_read(db.execute_sql(sql, (device, device, window)), columns))


def _read(cursor: pw.Cursor, columns: list[str]) -> Iterator[Recent]:
    for metric_id, device, ts, filesystems, readings, *values in cursor.fetchall():
        yield (metric_id, device, ts, {c: v for c, v in zip(columns, values, strict=True) if v is not None},
               json.loads(filesystems) if filesystems else None,
               json.loads(readings).get("readings") if readings else None)


def save_usual(computed: Sequence[tuple[str, float, dict[str, tuple[float, float]]]]) -> None:
    """Write each (device, when computed, metric -> (low, high)) in place of what was kept of that device."""
    devices = list({device for device, _at, _ranges in computed})
    for chunk in pw.chunked(devices, WRITE_CHUNK):
        UsualRange.delete().where(UsualRange.device.in_(chunk)).execute()
    latest = {device: (at, ranges) for device, at, ranges in computed}  # a device computed twice: its newest
    rows = [{"device": device, "metric": metric, "low": low, "high": high, "computed": at}
            for device, (at, ranges) in latest.items() for metric, (low, high) in ranges.items()]
    for chunk in pw.chunked(rows, WRITE_CHUNK):
        UsualRange.insert_many(chunk).execute()


def usual_of(device: str) -> tuple[float, dict[str, tuple[float, float]]] | None:
    """(when computed, metric -> (low, high)) kept of one device, or None."""
    rows = list(UsualRange.select().where(UsualRange.device == device))
    if not rows:
        return None
    return min(row.computed for row in rows), {row.metric: (row.low, row.high) for row in rows}
