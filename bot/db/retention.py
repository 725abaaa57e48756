"""Retention: raw samples older than RETENTION_DAYS become five-minute aggregates (min, mean, max per metric).

A fleet of 1,000 devices reporting every 5 s stores 17 million rows a day; kept raw forever they would fill
any disk. Samples a person labelled and samples that raised an alert stay raw: they are what training and
the alert buttons refer to. Unknown metrics (the `extra` column) are not aggregated.

Every function here blocks: the bot calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import peewee as pw

from agent.vocabulary import KNOWN_METRICS
from bot.db.connection import is_postgres
from bot.db.samples import DEVICES_CTE
from schema.tables import db

log = logging.getLogger(__name__)
BUCKET_S = 300
DAY_S = 86400.0
# Samples other tables point at stay raw: (table, column of the sample id). Each device's newest sample too.
KEPT_RAW = (("label", "metric_id"), ("incident", "sample_id"), ("device", "last_metric"))


@dataclass(frozen=True)
class Downsampled:
    samples: int  # raw samples replaced
    devices: int  # devices that had some


def _sql(postgres: bool, param: str) -> tuple[str, str]:
    """(aggregate, delete) statements for one device's samples before a cutoff."""
    # The start of the five minutes: floor, on Unix seconds (always positive).
    bucket = f"floor(ts / {BUCKET_S}) * {BUCKET_S}" if postgres else f"CAST(ts / {BUCKET_S} AS INTEGER) * {BUCKET_S}"
    old = f"device = {param} AND ts < {param} AND " + " AND ".join(
        f"id NOT IN (SELECT {column} FROM {table} WHERE {column} IS NOT NULL)" for table, column in KEPT_RAW
    )
    names = [f"{n}_min, {n}, {n}_max" for n in KNOWN_METRICS]
    values = [f"min({n}), avg({n}), max({n})" for n in KNOWN_METRICS]
    t, e = "metric_5m", "excluded"
    # A late sample of five minutes already downsampled joins them: counts add up, means are weighted by
    # the number of samples, minimum and maximum are compared (NULL is "no value", not a value).
    merged = [f"samples = {t}.samples + {e}.samples", f"p_stressed = {_greater(f'{t}.p_stressed', f'{e}.p_stressed')}"]
    for n in KNOWN_METRICS:
        merged.append(f"{n}_min = CASE WHEN {t}.{n}_min IS NULL OR {e}.{n}_min < {t}.{n}_min "
                      f"THEN {e}.{n}_min ELSE {t}.{n}_min END")
        merged.append(f"{n}_max = {_greater(f'{t}.{n}_max', f'{e}.{n}_max')}")
        merged.append(f"{n} = CASE WHEN {t}.{n} IS NULL THEN {e}.{n} WHEN {e}.{n} IS NULL THEN {t}.{n} "
                      f"ELSE ({t}.{n} * {t}.samples + {e}.{n} * {e}.samples) / ({t}.samples + {e}.samples) END")
    aggregate = (
        f"INSERT INTO {t} (device, bucket, samples, p_stressed, {', '.join(names)}) "
        f"SELECT device, {bucket} AS b, count(*), max(p_stressed), {', '.join(values)} FROM metric "
        f"WHERE {old} GROUP BY device, b "
        f"ON CONFLICT (device, bucket) DO UPDATE SET {', '.join(merged)}"
    )
    return aggregate, f"DELETE FROM metric WHERE {old}"


def _greater(a: str, b: str) -> str:
    return f"CASE WHEN {a} IS NULL OR {b} > {a} THEN {b} ELSE {a} END"


def downsample(now: float, days: float) -> Downsampled:
    """Replace the raw samples taken before `now` - `days` (rounded down to five minutes) by aggregates.

    One transaction per device, so the poller's batches wait at most for one device's share; running it
    again, or after a crash in the middle, changes nothing that is done.
    """
    database = db.obj
    cutoff = (now - days * DAY_S) // BUCKET_S * BUCKET_S
    postgres = is_postgres()
    aggregate, delete = _sql(postgres, database.param)
    samples = devices = 0
    for device in _devices_with_samples_before(cutoff):
        with database.atomic():
            database.execute_sql(aggregate, (device, cutoff))
            moved = database.execute_sql(delete, (device, cutoff)).rowcount
        samples += moved
        devices += 1 if moved else 0
    if samples and not postgres:
        _give_back_space(database)
    if samples:
        log.info("retention: %d raw samples of %d devices older than %g days downsampled to 5-minute aggregates",
                 samples, devices, days)
    return Downsampled(samples, devices)


# A loose index scan over (device, ts): one seek per device, not a pass over every sample.
DEVICES_WITH_OLD_SAMPLES_SQL = DEVICES_CTE.format(table="metric") + """
SELECT device FROM devices
WHERE device IS NOT NULL AND (SELECT MIN(m.ts) FROM metric AS m WHERE m.device = devices.device) < {param}
"""


def _devices_with_samples_before(cutoff: float) -> list[str]:
    database = db.obj
    rows = database.execute_sql(DEVICES_WITH_OLD_SAMPLES_SQL.format(param=database.param), (cutoff,))
    return [device for (device,) in rows.fetchall()]


def _give_back_space(database: pw.Database) -> None:
    """SQLite keeps freed pages in the file: with incremental auto-vacuum they are returned to the disk."""
    (mode,) = database.execute_sql("PRAGMA auto_vacuum").fetchone()
    if mode == 2:  # incremental
        # It frees one page per step, and the driver's execute steps once: executescript runs it to the end.
        database.connection().executescript("PRAGMA incremental_vacuum")
    else:  # a file created before auto-vacuum was set: its free pages are reused by new samples
        log.info("retention: the SQLite file does not shrink (created without auto_vacuum); new samples reuse "
                 "the space, and a VACUUM while the bot is stopped returns it")


def daily(days: float) -> None:
    """The daily run: downsample what is older than `days`. One that fails is logged, and tomorrow's run tries
    again: samples are only kept raw a little longer."""
    try:
        downsample(time.time(), days)
    except Exception:
        log.exception("retention: downsampling failed")
