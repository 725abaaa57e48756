"""`python -m bot.migrate_partitions`: an older version's PostgreSQL store moved to samples partitioned by day,
while the bot keeps running.

A store made before samples were partitioned keeps its plain `metric` and `metric_5m` tables (this version works
on them, with the old retention). This command moves them into tables partitioned by day (schema/partitions.py)
in four steps, each of which a kill leaves whole, so running it again goes on where it stopped:

1. **Prepare**: the new tables (`metric_part`, `metric_5m_part`) and their partitions; then, in one short
   transaction, a trigger on each old table that copies every row inserted from now on into its new table, and the
   highest id the old table held then (the horizon), kept in the table `partition_migration`. That transaction
   begins with a lock that waits for the batches being stored (and retention's): every row up to the horizon was
   committed before the trigger existed, every row after it goes through the trigger.
2. **Copy** the rows up to the horizon, in chunks of ids (`--chunk`), each chunk one transaction with its progress,
   so a kill loses at most a chunk's work. A row already copied is skipped (ON CONFLICT DO NOTHING): nothing is
   stored twice, whichever way the copy and the trigger meet. It says how far it got as it goes.
3. **Swap**, in one short transaction under an exclusive lock (given up after a few seconds and tried again, so
   ingestion never waits long): the trigger removed, the foreign keys to the old `metric` dropped (a partitioned
   table cannot have them: schema/partitions.py), the ids widened to bigint, the old tables renamed
   `<table>_unpartitioned` and the new ones given their names.
4. **Drop** the old tables.

Meanwhile retention waits (it would delete what the copy has read) and labels, incidents and devices keep their
sample ids: the new tables keep every id. Every process of the bot must run this version before it starts.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass

import peewee as pw

from bot import logs
from bot.config import ConfigError, load_settings
from bot.db.connection import open_database
from schema import partitions
from schema.partitions import DAY_S, MIGRATION_STATE, Spec
from schema.tables import AGGREGATES, SAMPLES

log = logging.getLogger("bot.migrate_partitions")
CHUNK = 50_000  # ids per transaction: a kill loses at most this much work
REPORT_S = 5.0  # how often the progress is said
SWAP_ATTEMPTS = 60
SWAP_PAUSE_S = 1.0
# The columns that point at a sample: widened to bigint with the new tables, whose ids are bigints.
SAMPLE_IDS = (("label", "metric_id"), ("incident", "sample_id"), ("device", "last_metric"))


def new_name(spec: Spec) -> str:
    return f"{spec.table}_part"


def old_name(spec: Spec) -> str:
    return f"{spec.table}_unpartitioned"


def _trigger(spec: Spec) -> str:
    return f"rigwatch_copy_{spec.table}"


def _conflict(spec: Spec) -> str:
    """The unique key a copied row may meet again: (device, ts) of a sample, (device, bucket) of an aggregate."""
    fields = next(fields for fields, unique in spec.model._meta.indexes if unique)
    return ", ".join(fields)


@dataclass(frozen=True)
class Progress:
    table: str
    copied: int  # the rows up to this id are copied
    horizon: int  # the highest id before the trigger

    @property
    def finished(self) -> bool:
        return self.copied >= self.horizon


def prepare(database: pw.Database, now: float, retention_days: float) -> bool:
    """Step 1; False when there is nothing to migrate (the samples are partitioned already). In three transactions,
    each made whole or not at all, so that the batches being stored wait only for the last, a short one."""
    if database.table_exists(MIGRATION_STATE):
        return True  # prepared by an earlier run
    if partitions.is_partitioned(database, SAMPLES.table):
        return False
    with database.atomic():
        for spec in (SAMPLES, AGGREGATES):  # the ids go on counting as bigints
            database.execute_sql(f"ALTER SEQUENCE {spec.table}_id_seq AS bigint")
    with database.atomic():
        partitions.lock(database)
        if not database.table_exists(new_name(SAMPLES)):
            today = partitions.day_of(now)
            # The samples' days still raw, and the next ones; older samples wait in the DEFAULT partition for
            # retention. The aggregates' days are those they have.
            sample_days = range(partitions.day_of(now - retention_days * DAY_S), today + partitions.AHEAD_DAYS + 1)
            aggregate_days = [day for (day,) in database.execute_sql(
                f"SELECT DISTINCT floor(bucket / {DAY_S})::bigint FROM {AGGREGATES.table}").fetchall()]
            for spec, days in ((SAMPLES, sample_days), (AGGREGATES, aggregate_days)):
                partitions.create_table(database, spec, new_name(spec))
                partitions.ensure(database, spec, days, new_name(spec))
    with database.atomic():
        partitions.lock(database)
        if database.table_exists(MIGRATION_STATE):
            return True
        # Waits for the batches being stored and holds the next ones until the commit (a moment): the horizon read
        # below is the highest id of a row committed before the trigger.
        partitions.lock_timeout(database, 60)
        database.execute_sql(f"LOCK TABLE {SAMPLES.table}, {AGGREGATES.table} IN SHARE ROW EXCLUSIVE MODE")
        database.execute_sql(f"CREATE TABLE {MIGRATION_STATE} (name TEXT PRIMARY KEY, copied BIGINT NOT NULL, "
                             "horizon BIGINT NOT NULL)")
        for spec in (SAMPLES, AGGREGATES):
            columns = spec.columns()
            database.execute_sql(
                f"CREATE FUNCTION {_trigger(spec)}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"INSERT INTO {new_name(spec)} ({columns}) SELECT {columns} FROM arrived "
                f"ON CONFLICT ({_conflict(spec)}) DO NOTHING; RETURN NULL; END $$")
            database.execute_sql(f"CREATE TRIGGER {_trigger(spec)} AFTER INSERT ON {spec.table} REFERENCING NEW "
                                 f"TABLE AS arrived FOR EACH STATEMENT EXECUTE FUNCTION {_trigger(spec)}()")
            (horizon,) = database.execute_sql(f"SELECT coalesce(max(id), 0) FROM {spec.table}").fetchone()
            database.execute_sql(f"INSERT INTO {MIGRATION_STATE} (name, copied, horizon) VALUES (%s, 0, %s)",
                                 (spec.table, horizon))
    log.info("prepared: new tables %s and %s, and the trigger that copies new rows into them",
             new_name(SAMPLES), new_name(AGGREGATES))
    return True


def progress(database: pw.Database, spec: Spec) -> Progress:
    copied, horizon = database.execute_sql(f"SELECT copied, horizon FROM {MIGRATION_STATE} WHERE name = %s",
                                           (spec.table,)).fetchone()
    return Progress(spec.table, copied, horizon)


def copy_chunk(database: pw.Database, spec: Spec, chunk: int) -> tuple[Progress, int]:
    """Step 2, one chunk: the next ids up to the horizon copied, and the progress with them, in one transaction.
    Returns the progress and the rows copied."""
    with database.atomic():
        copied, horizon = database.execute_sql(
            f"SELECT copied, horizon FROM {MIGRATION_STATE} WHERE name = %s FOR UPDATE", (spec.table,)).fetchone()
        if copied >= horizon:  # finished
            return Progress(spec.table, copied, horizon), 0
        # Past a stretch of ids retention deleted at once.
        (first,) = database.execute_sql(f"SELECT min(id) FROM {spec.table} WHERE id > %s", (copied,)).fetchone()
        upper = horizon if first is None else min(max(copied, first - 1) + chunk, horizon)
        columns = spec.columns()
        rows = database.execute_sql(
            f"INSERT INTO {new_name(spec)} ({columns}) SELECT {columns} FROM {spec.table} WHERE id > %s AND id <= %s "
            f"ON CONFLICT ({_conflict(spec)}) DO NOTHING", (copied, upper)).rowcount
        database.execute_sql(f"UPDATE {MIGRATION_STATE} SET copied = %s WHERE name = %s", (upper, spec.table))
    return Progress(spec.table, upper, horizon), rows


def copy(database: pw.Database, spec: Spec, chunk: int = CHUNK) -> int:
    """Step 2 for one table, saying how far it got every REPORT_S; returns the rows copied by this run."""
    start = progress(database, spec)
    began = said = time.monotonic()
    total = 0
    while True:
        done, rows = copy_chunk(database, spec, chunk)
        total += rows
        now = time.monotonic()
        if done.finished or now - said >= REPORT_S:
            said = now
            share = 100.0 if done.horizon == 0 else 100.0 * done.copied / done.horizon
            rate = total / max(now - began, 1e-9)
            left = (done.horizon - done.copied) / max(done.copied - start.copied, 1) * (now - began)
            log.info("%s: ids up to %s of %s copied (%.1f %%), %s rows by this run, %s rows/s%s", spec.table,
                     f"{done.copied:,}", f"{done.horizon:,}", share, f"{total:,}", f"{rate:,.0f}",
                     "" if done.finished else f", about {_duration(left)} left")
        if done.finished:
            return total


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def swap(database: pw.Database) -> None:
    """Step 3: the new tables take the old ones' names, in one transaction; its exclusive locks are waited for
    partitions.LOCK_TIMEOUT_S at a time, so ingestion never waits longer than that for it."""
    partitions.retried(database, lambda: _swap(database), "swap", SWAP_ATTEMPTS, SWAP_PAUSE_S)


def _swap(database: pw.Database) -> None:
    specs = (SAMPLES, AGGREGATES)
    database.execute_sql(f"LOCK TABLE {', '.join(spec.table for spec in specs)} IN ACCESS EXCLUSIVE MODE")
    for spec in specs:
        while not copy_chunk(database, spec, CHUNK)[0].finished:
            pass  # normally nothing is left
        database.execute_sql(f"DROP TRIGGER {_trigger(spec)} ON {spec.table}")
        database.execute_sql(f"DROP FUNCTION {_trigger(spec)}()")
        for table, constraint in database.execute_sql(
                "SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE contype = 'f' AND "
                "confrelid = to_regclass(%s)", (spec.table,)).fetchall():
            database.execute_sql(f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"')
        old, new = old_name(spec), new_name(spec)
        database.execute_sql(f"ALTER TABLE {spec.table} RENAME TO {old}")
        database.execute_sql(f"ALTER TABLE {old} RENAME CONSTRAINT {spec.table}_pkey TO {old}_pkey")
        database.execute_sql(f"ALTER TABLE {old} ALTER COLUMN id DROP DEFAULT")
        database.execute_sql(f"ALTER TABLE {new} RENAME TO {spec.table}")
        database.execute_sql(f"ALTER TABLE {spec.table} RENAME CONSTRAINT {new}_pkey TO {spec.table}_pkey")
        for fields, _unique in spec.model._meta.indexes:
            suffix = "_".join(fields)
            database.execute_sql(f"ALTER INDEX IF EXISTS {spec.table}_{suffix} RENAME TO {old}_{suffix}")
            database.execute_sql(f"ALTER INDEX {new}_{suffix} RENAME TO {spec.table}_{suffix}")
        database.execute_sql(f"ALTER SEQUENCE {spec.table}_id_seq OWNED BY {spec.table}.id")
    for table, column in SAMPLE_IDS:
        (kind,) = database.execute_sql(
            "SELECT data_type FROM information_schema.columns WHERE table_name = %s AND column_name = %s AND "
            "table_schema = current_schema()", (table, column)).fetchone()
        if kind != "bigint":
            database.execute_sql(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE bigint")
    database.execute_sql(f"DROP TABLE {MIGRATION_STATE}")


def drop_old(database: pw.Database) -> None:
    """Step 4: the old tables, once swapped."""
    for spec in (SAMPLES, AGGREGATES):
        if database.table_exists(old_name(spec)):
            database.execute_sql(f"DROP TABLE {old_name(spec)}")
            log.info("dropped the old table %s", old_name(spec))


def migrate(database: pw.Database, retention_days: float, chunk: int = CHUNK) -> bool:
    """Every step, from wherever an earlier run stopped; False when the samples were partitioned already."""
    if not prepare(database, time.time(), retention_days):
        drop_old(database)  # a run killed after the swap
        return False
    for spec in (SAMPLES, AGGREGATES):
        copy(database, spec, chunk)
    swap(database)
    log.info("swapped: %s and %s are partitioned by day", SAMPLES.table, AGGREGATES.table)
    drop_old(database)
    partitions.ensure_ahead(database, SAMPLES, time.time())
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bot.migrate_partitions", description=__doc__.split("\n")[0])
    parser.add_argument("--chunk", type=int, default=CHUNK, help=f"ids copied per transaction (default {CHUNK:,})")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(require_token=False)
    except ConfigError as exc:
        sys.exit(f"rigwatch: {exc}")
    logs.configure(settings.log_level, "")
    if not settings.database_url.startswith("postgres"):
        sys.exit("rigwatch: DATABASE_URL is not PostgreSQL: SQLite keeps one samples table")
    database = open_database(settings.database_url)
    if migrate(database, settings.retention_days, max(1, args.chunk)):
        log.info("done")
    else:
        log.info("the samples are partitioned by day already: nothing to do")


if __name__ == "__main__":
    main()
