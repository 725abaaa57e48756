"""Retention: raw samples older than RETENTION_DAYS become five-minute aggregates (min, mean, max per metric).

A fleet of 1,000 devices reporting every 5 s stores 17 million rows a day; kept raw forever they would fill
any disk. Samples a person labelled, samples that raised an alert and each device's newest stay raw: they are
what training, the alert buttons and /status refer to. Unknown metrics (the `extra` column) are not aggregated.

On SQLite (and on a PostgreSQL store an older version made, until it is migrated) old samples are aggregated and
deleted device by device, and the samples kept raw stay where they are. On PostgreSQL partitioned by day
(schema/partitions.py) a whole day goes at once: its samples are aggregated, those kept raw copied into
`metric_kept` with their ids, and its partition detached, in one transaction; its files are dropped once that is
committed, holding no lock anybody waits for. What the DEFAULT partition holds of old days is handled device by
device as before. Deleting 57.6 million rows would take hours and leave the table bloated; dropping their
partition takes a moment (docs/performance.md has the figures).

Every function here blocks: the bot calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import peewee as pw

from agent.vocabulary import KNOWN_METRICS
from bot.db.connection import is_postgres
from bot.db.samples import DEVICES_CTE
from schema import partitions
from schema.tables import AGGREGATES, SAMPLES, db

log = logging.getLogger(__name__)
BUCKET_S = 300
DAY_S = 86400.0
# Samples other tables point at stay raw: (table, column of the sample id). Each device's newest sample too.
KEPT_RAW = (("label", "metric_id"), ("incident", "sample_id"), ("device", "last_metric"))
REFERENCED = " UNION ALL ".join(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"
                                for table, column in KEPT_RAW)
# A day is dropped under an exclusive lock on `metric`, which waits for the queries reading it (a retrain streams
# every sample): it gives up after partitions.LOCK_TIMEOUT_S, lets ingestion through, and tries again.
LOCK_ATTEMPTS = 30
LOCK_PAUSE_S = 2.0
RETIRED = "_retired"  # the suffix of a day partition detached, until its files are dropped
T = TypeVar("T")


@dataclass(frozen=True)
class Downsampled:
    samples: int  # raw samples replaced
    devices: int  # devices that had some


# The columns of an aggregate, what a group of raw samples gives them, and how a late sample's aggregate of five
# minutes already downsampled joins them: counts add up, means are weighted by the number of samples, minimum and
# maximum are compared (NULL is "no value", not a value).
_NAMES = ", ".join(f"{n}_min, {n}, {n}_max" for n in KNOWN_METRICS)
_VALUES = ", ".join(f"min({n}) AS {n}_min, avg({n}) AS {n}, max({n}) AS {n}_max" for n in KNOWN_METRICS)


def _greater(a: str, b: str) -> str:
    return f"CASE WHEN {a} IS NULL OR {b} > {a} THEN {b} ELSE {a} END"


def _merged(t: str = "metric_5m", e: str = "excluded") -> str:
    merged = [f"samples = {t}.samples + {e}.samples", f"p_stressed = {_greater(f'{t}.p_stressed', f'{e}.p_stressed')}"]
    for n in KNOWN_METRICS:
        merged.append(f"{n}_min = CASE WHEN {t}.{n}_min IS NULL OR {e}.{n}_min < {t}.{n}_min "
                      f"THEN {e}.{n}_min ELSE {t}.{n}_min END")
        merged.append(f"{n}_max = {_greater(f'{t}.{n}_max', f'{e}.{n}_max')}")
        merged.append(f"{n} = CASE WHEN {t}.{n} IS NULL THEN {e}.{n} WHEN {e}.{n} IS NULL THEN {t}.{n} "
                      f"ELSE ({t}.{n} * {t}.samples + {e}.{n} * {e}.samples) / ({t}.samples + {e}.samples) END")
    return ", ".join(merged)


def _bucket(postgres: bool) -> str:
    """The start of a sample's five minutes: floor, on Unix seconds (always positive)."""
    return f"floor(ts / {BUCKET_S}) * {BUCKET_S}" if postgres else f"CAST(ts / {BUCKET_S} AS INTEGER) * {BUCKET_S}"


def _insert_aggregates(source: str, where: str, postgres: bool) -> str:
    return (f"INSERT INTO metric_5m (device, bucket, samples, p_stressed, {_NAMES}) "
            f"SELECT device, {_bucket(postgres)} AS b, count(*), max(p_stressed), {_VALUES} FROM {source} "
            f"WHERE {where} GROUP BY device, b ON CONFLICT (device, bucket) DO UPDATE SET {_merged()}")


def _sql(postgres: bool, param: str) -> tuple[str, str]:
    """(aggregate, delete) statements for one device's samples before a cutoff, kept ones left in place."""
    old = f"device = {param} AND ts < {param} AND " + " AND ".join(
        f"id NOT IN (SELECT {column} FROM {table} WHERE {column} IS NOT NULL)" for table, column in KEPT_RAW
    )
    return _insert_aggregates("metric", old, postgres), f"DELETE FROM metric WHERE {old}"


def downsample(now: float, days: float) -> Downsampled:
    """Replace the raw samples taken before `now` - `days` (rounded down to five minutes) by aggregates; on
    PostgreSQL partitioned by day, a day goes once all of it is older than that.

    Running it again, or after a crash in the middle, changes nothing that is done: each step is one transaction.
    """
    database = db.obj
    cutoff = (now - days * DAY_S) // BUCKET_S * BUCKET_S
    postgres = is_postgres()
    if postgres and database.table_exists(partitions.MIGRATION_STATE):
        log.info("retention: waits until the samples are migrated to partitions (python -m bot.migrate_partitions)")
        return Downsampled(0, 0)
    if partitions.is_partitioned(database, SAMPLES.table):
        done = _drop_old_days(cutoff)
    else:
        done = _delete_old_samples(cutoff, postgres)
    if done.samples:
        log.info("retention: %d raw samples of %d devices older than %g days downsampled to 5-minute aggregates",
                 done.samples, done.devices, days)
    return done


def _delete_old_samples(cutoff: float, postgres: bool) -> Downsampled:
    """Device by device, one transaction each, so the poller's batches wait at most for one device's share."""
    database = db.obj
    aggregate, delete = _sql(postgres, database.param)
    samples = devices = 0
    for device in _devices_with_samples_before(cutoff):
        with database.atomic():
            if postgres and _migrating(database):
                log.info("retention: stops: the samples are being migrated to partitions")
                break
            database.execute_sql(aggregate, (device, cutoff))
            moved = database.execute_sql(delete, (device, cutoff)).rowcount
        samples += moved
        devices += 1 if moved else 0
    if samples and not postgres:
        _give_back_space(database)
    return Downsampled(samples, devices)


def _migrating(database: pw.Database) -> bool:
    """Whether a migration to partitions (bot/migrate_partitions.py) has begun: it begins under a lock on `metric`
    and `metric_5m`, so once this transaction has its own lock on them, its next look at the catalog sees it. From
    then on nothing may be deleted from the table it copies."""
    database.execute_sql("LOCK TABLE metric, metric_5m IN ROW EXCLUSIVE MODE")
    return database.table_exists(partitions.MIGRATION_STATE)


def _drop_old_days(cutoff: float) -> Downsampled:
    """Each day partition wholly older than `cutoff`, then what the DEFAULT partition holds from before it."""
    database = db.obj
    samples, devices = 0, set()
    drop_detached()  # what a process killed after detaching left
    for day, name in sorted(partitions.partitions(database, SAMPLES).items()):
        if (day + 1) * DAY_S <= cutoff:
            aggregated, of = _drop_day(day, name)
            samples += aggregated
            devices |= of
    for device in _devices_with_samples_before(cutoff, SAMPLES.default):
        moved = _retrying(lambda device=device: _downsample_default(device, cutoff))
        samples += moved
        if moved:
            devices.add(device)
    return Downsampled(samples, len(devices))


# What something points at, copied into `metric_kept`: from a day's partition one index lookup per id pointed at
# between the day's lowest and highest id (a LATERAL subquery, whatever the planner thinks of the ids' number: the
# day is tens of millions of rows; the devices' newest samples, 10,000 ids of later days, are not looked up in it),
# from a statement's rows by a hashed list.
_KEEP = (f"INSERT INTO metric_kept ({SAMPLES.columns()}) SELECT m.* FROM (SELECT DISTINCT id FROM ({REFERENCED}) "
         "AS pointed(id) WHERE id BETWEEN (SELECT min(id) FROM {source}) AND (SELECT max(id) FROM {source})) AS r "
         f"CROSS JOIN LATERAL (SELECT {SAMPLES.columns()} FROM {{source}} AS s WHERE s.id = r.id "
         "LIMIT 1) AS m ON CONFLICT (id) DO NOTHING")
_KEEP_OF = (f"INSERT INTO metric_kept ({SAMPLES.columns()}) SELECT {SAMPLES.columns()} FROM {{source}} "
            f"WHERE id IN ({REFERENCED}) ON CONFLICT (id) DO NOTHING")


def _drop_day(day: int, name: str) -> tuple[int, set[str]]:
    """One transaction: the day's samples that something points at copied into `metric_kept`, the others
    aggregated, the partition detached and dropped. Killed anywhere, nothing of it happened; run again, it does it
    all. Returns the samples aggregated and their devices."""
    database = db.obj
    partitions.ensure(database, AGGREGATES, [day])  # where its aggregates go
    with database.atomic():
        partitions.lock_timeout(database, 60)
        # No late sample joins the day from now on (one waits for the commit, then goes to the DEFAULT partition);
        # reading it goes on.
        database.execute_sql(f'LOCK TABLE "{name}" IN SHARE MODE')
        kept = database.execute_sql(_KEEP.format(source=f'"{name}"')).rowcount
        database.execute_sql(
            f"CREATE TEMPORARY TABLE retention_day ON COMMIT DROP AS SELECT device, {_bucket(True)} AS bucket, "
            f"count(*) AS samples, max(p_stressed) AS p_stressed, {_VALUES} "
            f'FROM "{name}" AS m WHERE NOT EXISTS (SELECT 1 FROM metric_kept AS k WHERE k.id = m.id) '
            "GROUP BY device, 2")
        aggregated = int(database.execute_sql("SELECT coalesce(sum(samples), 0) FROM retention_day").fetchone()[0])
        devices = {device for (device,) in database.execute_sql("SELECT DISTINCT device FROM retention_day")}
        database.execute_sql(f"INSERT INTO metric_5m (device, bucket, samples, p_stressed, {_NAMES}) SELECT * FROM "
                             f"retention_day ON CONFLICT (device, bucket) DO UPDATE SET {_merged()}")
        # Labels and incidents stay as they are until the commit, and what they point at in the day is kept (a
        # sample labelled since the copy above is kept too, and counts in its five minutes as well).
        kept += _retrying(lambda: detach(name))
    drop_detached()
    log.info("retention: partition %s dropped: %d samples aggregated, %d kept raw", name, aggregated, kept)
    return aggregated, devices


def detach(name: str) -> int:
    """In the caller's transaction: what labels and incidents point at in the day copied again (under their lock),
    and the partition detached, renamed RETIRED. Its files are removed by `drop_detached` once this is committed:
    removing gigabytes takes most of a second, which `metric`'s exclusive lock need not wait for."""
    database = db.obj
    database.execute_sql("LOCK TABLE label, incident IN SHARE MODE")
    kept = database.execute_sql(_KEEP.format(source=f'"{name}"')).rowcount
    database.execute_sql(f'ALTER TABLE "{SAMPLES.table}" DETACH PARTITION "{name}"')
    database.execute_sql(f'ALTER TABLE "{name}" RENAME TO "{name}{RETIRED}"')
    return kept


def drop_detached() -> list[str]:
    """Drop the partitions `detach` detached: the one just committed, and any a process killed before it got here
    left (nothing reads them; they are dropped by the next run). Blocks nobody: they are no partition anymore."""
    database = db.obj
    retired = [name for (name,) in database.execute_sql(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE %s",
        (f"{SAMPLES.table}\\_p%{RETIRED}",)) if re.fullmatch(rf"{SAMPLES.table}_p\d{{8}}{RETIRED}", name)]
    for name in retired:
        database.execute_sql(f'DROP TABLE IF EXISTS "{name}"')
    return retired


def _downsample_default(device: str, cutoff: float) -> int:
    """A device's samples in the DEFAULT partition from before `cutoff`, in one statement (one snapshot: a sample
    stored meanwhile is neither deleted unseen nor aggregated twice): deleted, the kept ones copied into
    `metric_kept`, the others aggregated. Labels and incidents wait for it: what they point at is kept."""
    database = db.obj
    database.execute_sql("LOCK TABLE label, incident IN SHARE MODE")
    return int(database.execute_sql(
        f'WITH gone AS (DELETE FROM "{SAMPLES.default}" WHERE device = %s AND ts < %s RETURNING *), '
        f"kept AS ({_KEEP_OF.format(source='gone')}), "
        f"aggregated AS ({_insert_aggregates('gone', f'id NOT IN ({REFERENCED})', True)}) "
        f"SELECT count(*) FROM gone WHERE id NOT IN ({REFERENCED})", (device, cutoff)).fetchone()[0])


def _retrying(work: Callable[[], T]) -> T:
    """`work` in a transaction whose locks are waited for a moment at most, tried again after a pause when they were
    not had (schema/partitions.py, `retried`)."""
    return partitions.retried(db.obj, work, "retention", LOCK_ATTEMPTS, LOCK_PAUSE_S)


# A loose index scan over (device, ts): one seek per device, not a pass over every sample.
DEVICES_WITH_OLD_SAMPLES_SQL = DEVICES_CTE + """
SELECT device FROM devices
WHERE device IS NOT NULL AND (SELECT MIN(m.ts) FROM {table} AS m WHERE m.device = devices.device) < {param}
"""


def _devices_with_samples_before(cutoff: float, table: str = "metric") -> list[str]:
    database = db.obj
    rows = database.execute_sql(DEVICES_WITH_OLD_SAMPLES_SQL.format(table=table, param=database.param), (cutoff,))
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
    """The daily run: on PostgreSQL the next days' partitions (and those of recent days whose samples wait in the
    DEFAULT partition), then downsample what is older than `days`. One that fails is logged, and tomorrow's run
    tries again: the DEFAULT partition holds the samples meanwhile, and old ones are only kept raw a little
    longer."""
    now = time.time()
    try:
        partitions.ensure_ahead(db.obj, SAMPLES, now, since=now - days * DAY_S)
    except Exception:
        log.exception("retention: creating the next days' partitions failed")
    try:
        downsample(now, days)
    except Exception:
        log.exception("retention: downsampling failed")
