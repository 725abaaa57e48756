"""PostgreSQL: the samples (`metric`) and their five-minute aggregates (`metric_5m`) partitioned by day.

10,000 machines sending a sample every 15 s add 57.6 million rows a day. Partitioned by day on the sample time
(declarative `PARTITION BY RANGE`, no extension), retention drops a whole day at once (bot/db/retention.py) instead
of deleting its rows one by one, and a query bounded in time reads only the days it needs (partition pruning).

Each partitioned table has:

- one partition per UTC day, `<table>_pYYYYMMDD`, created ahead: today and the next AHEAD_DAYS days, when a process
  opens the database and daily with retention;
- a DEFAULT partition, `<table>_default`, for a row whose day has no partition: a machine whose clock runs days
  ahead, a backfill of days from before the partitions. Chosen over creating partitions on demand while ingesting:
  a batch never waits on DDL nor takes a lock stronger than an insert's, and a machine whose clock says 2031 does
  not get a table of its own. Its cost: a read open-ended in time reads it too, and attaching a partition scans it
  under an exclusive lock. So it is kept small: `ensure` moves a day's rows out of it when that day gets its
  partition, and retention empties it of the old ones;
- the primary key (id, <time>): PostgreSQL wants the partition key in every unique key of a partitioned table. Ids
  still come from one sequence, `<table>_id_seq`, so an id alone names a sample, but a database foreign key to
  `metric(id)` cannot exist: `Label.metric`, `Incident.sample_id` and `Device.last_metric` are plain ids. What they
  point at is copied into `metric_kept` (an ordinary table, never dropped) before its day is dropped, and a reader
  that knows the time too (a device's `last_ts`) looks the sample up by (id, ts), which names its one partition.

Every change is a transaction under one advisory lock: two processes (the bot and its workers start together) never
create a table or a partition twice, and a process killed in the middle leaves nothing half made.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import peewee as pw

log = logging.getLogger(__name__)
T = TypeVar("T")
DAY_S = 86400
AHEAD_DAYS = 3  # days created ahead of today: a daily run that fails leaves days of slack
# The DDL's wait for its locks. A long reader (a retrain streams every sample) holds the table: rather than queue
# every insert behind a waiting exclusive lock, the DDL gives up and is tried again later.
LOCK_TIMEOUT_S = 2
_ADVISORY_KEY = 7_182_818_284  # one key for all of Rigwatch's DDL: creating tables and partitions, dropping them
# While bot/migrate_partitions.py copies an older version's samples into partitions, its progress is kept in this
# table, and retention waits.
MIGRATION_STATE = "partition_migration"
_LOCK_NOT_AVAILABLE = "55P03"
_DEADLOCK = "40P01"


@dataclass(frozen=True)
class Spec:
    """A table partitioned by day: its model and the column of the time it is partitioned on."""

    model: type[pw.Model]
    key: str

    @property
    def table(self) -> str:
        return self.model._meta.table_name

    @property
    def default(self) -> str:
        return f"{self.table}_default"

    def partition(self, day: int) -> str:
        """The name of the partition of `day` (days since 1970-01-01 UTC)."""
        return f"{self.table}_p{datetime.fromtimestamp(day * DAY_S, UTC):%Y%m%d}"

    def columns(self) -> str:
        return ", ".join(f'"{field.column_name}"' for field in self.model._meta.sorted_fields)


def day_of(t: float) -> int:
    """The UTC day of a Unix time, in days since 1970-01-01."""
    return int(t // DAY_S)


def is_partitioned(database: pw.Database, table: str) -> bool:
    """Whether `table` is a partitioned table (a PostgreSQL store made or migrated by this version)."""
    if not isinstance(database, pw.PostgresqlDatabase):
        return False
    return bool(database.execute_sql("SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = "
                                     "to_regclass(%s))", (table,)).fetchone()[0])


def lock(database: pw.Database) -> None:
    """Take the DDL's advisory lock until the end of the transaction: one process at a time changes the layout."""
    database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))


@contextlib.contextmanager
def locked(database: pw.Database) -> Iterator[None]:
    """The DDL's advisory lock held by the session, across statements each committed on its own (a transaction
    around them would hold the locks of each table it touched until its end, and deadlock with the batches being
    stored). A process killed meanwhile lets it go with its session."""
    database.execute_sql("SELECT pg_advisory_lock(%s)", (_ADVISORY_KEY,))
    try:
        yield
    finally:
        database.execute_sql("SELECT pg_advisory_unlock(%s)", (_ADVISORY_KEY,))


def lock_timeout(database: pw.Database, seconds: float = LOCK_TIMEOUT_S) -> None:
    """Give up waiting for a lock after `seconds`, until the end of the transaction (or of its savepoint)."""
    database.execute_sql(f"SET LOCAL lock_timeout = '{int(seconds * 1000)}ms'")


def gave_up_waiting(exc: pw.DatabaseError) -> bool:
    """Whether the error is a lock wait that timed out or a deadlock PostgreSQL broke: worth trying again later."""
    return getattr(getattr(exc, "orig", None), "pgcode", None) in (_LOCK_NOT_AVAILABLE, _DEADLOCK)


def retried(database: pw.Database, work: Callable[[], T], what: str, attempts: int, pause_s: float) -> T:
    """`work` in a transaction (a savepoint inside one) whose locks are waited for LOCK_TIMEOUT_S at most: when they
    were not had, or when PostgreSQL broke a deadlock with it, tried again after `pause_s`, `attempts` times in all,
    so whatever waits behind it (ingestion) never waits longer than that. `what` names it in the log."""
    for attempt in range(1, attempts + 1):
        try:
            with database.atomic():
                lock_timeout(database)
                return work()
        except pw.OperationalError as exc:
            if not gave_up_waiting(exc) or attempt == attempts:
                raise
            log.info("%s: the tables are busy (%s); trying again (%d of %d)", what, str(exc).strip(), attempt,
                     attempts)
        time.sleep(pause_s)
    raise AssertionError("unreachable")


def create_table(database: pw.Database, spec: Spec, name: str | None = None) -> None:
    """The partitioned table of `spec`, named `name` (its own name by default), with its DEFAULT partition.

    Its ids come from the sequence `<table>_id_seq`: the table of an older version, migrated
    (bot/migrate_partitions.py), already has it, and the new table goes on counting from it."""
    name = name or spec.table
    sequence = f"{spec.table}_id_seq"
    columns = []
    for field in spec.model._meta.sorted_fields:
        if field is spec.model._meta.primary_key:
            columns.append(f"\"{field.column_name}\" BIGINT NOT NULL DEFAULT nextval('\"{sequence}\"')")
        else:
            context = database.get_sql_context()
            columns.append(context.sql(field.ddl(context)).query()[0])
    database.execute_sql(f'CREATE SEQUENCE IF NOT EXISTS "{sequence}" AS bigint')
    database.execute_sql(f'CREATE TABLE "{name}" ({", ".join(columns)}, PRIMARY KEY ("id", "{spec.key}")) '
                         f'PARTITION BY RANGE ("{spec.key}")')
    for fields, unique in spec.model._meta.indexes:
        database.execute_sql(f'CREATE {"UNIQUE " if unique else ""}INDEX "{name}_{"_".join(fields)}" ON "{name}" '
                             f'({", ".join(f"{chr(34)}{f}{chr(34)}" for f in fields)})')
    database.execute_sql(f'CREATE TABLE "{spec.default}" PARTITION OF "{name}" DEFAULT')
    if name == spec.table:
        database.execute_sql(f'ALTER SEQUENCE "{sequence}" OWNED BY "{name}"."id"')


def create_missing(database: pw.Database, specs: Iterable[Spec]) -> None:
    """Create each table of `specs` partitioned, when it does not exist yet, each in one transaction. An existing
    table is left as it is: one made by an older version, not partitioned, works on until it is migrated."""
    for spec in specs:
        with database.atomic():
            lock(database)
            if not database.table_exists(spec.table):
                create_table(database, spec)


def partitions(database: pw.Database, spec: Spec, parent: str | None = None) -> dict[int, str]:
    """The day partitions attached to `parent` (the table of `spec` by default), by day."""
    pattern = re.compile(rf"{re.escape(spec.table)}_p(\d{{8}})")
    rows = database.execute_sql("SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
                                "WHERE i.inhparent = to_regclass(%s)", (parent or spec.table,)).fetchall()
    found = {}
    for (name,) in rows:
        if match := pattern.fullmatch(name):
            found[day_of(datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=UTC).timestamp())] = name
    return found


def ensure(database: pw.Database, spec: Spec, days: Iterable[int], parent: str | None = None) -> list[str]:
    """Create the partitions of `days` that `parent` (the table of `spec` by default) lacks; return those made.

    Each in a transaction of its own, under the advisory lock, so two processes at once make each partition once:
    the table is made alone and attached, which takes no lock that stops inserts or reads of the parent (ATTACH
    PARTITION takes SHARE UPDATE EXCLUSIVE on it), after the day's rows are moved out of the DEFAULT partition
    (which is locked meanwhile: nothing is lost or stored twice). A day whose locks are not had within
    LOCK_TIMEOUT_S is left for the next run; its rows wait in the DEFAULT partition."""
    parent = parent or spec.table
    have = partitions(database, spec, parent)
    made = []
    for day in sorted(set(days) - have.keys()):
        try:
            if _create_partition(database, spec, parent, day):
                made.append(spec.partition(day))
        except pw.OperationalError as exc:
            if not gave_up_waiting(exc):
                raise
            log.warning("partition %s not created now (the table is busy: %s); the next run tries again",
                        spec.partition(day), str(exc).strip())
    return made


def _create_partition(database: pw.Database, spec: Spec, parent: str, day: int) -> bool:
    name, columns = spec.partition(day), spec.columns()
    low, high = day * DAY_S, (day + 1) * DAY_S
    with database.atomic():
        lock(database)
        if day in partitions(database, spec, parent):  # another process made it meanwhile
            return False
        if database.table_exists(name):  # not attached: never dropped here, whatever it holds
            log.error("a table %s exists that is not a partition of %s: its day's rows wait in %s", name, parent,
                      spec.default)
            return False
        lock_timeout(database)
        database.execute_sql(f'CREATE TABLE "{name}" (LIKE "{parent}" INCLUDING DEFAULTS)')
        database.execute_sql(f'LOCK TABLE "{spec.default}" IN ACCESS EXCLUSIVE MODE')
        moved = database.execute_sql(
            f'WITH moved AS (DELETE FROM "{spec.default}" WHERE "{spec.key}" >= %s AND "{spec.key}" < %s '
            f'RETURNING {columns}) INSERT INTO "{name}" ({columns}) SELECT {columns} FROM moved', (low, high)).rowcount
        database.execute_sql(f'ALTER TABLE "{parent}" ATTACH PARTITION "{name}" FOR VALUES FROM ({low}) TO ({high})')
    log.info("partition %s created%s", name, f", {moved:,} rows moved into it from {spec.default}" if moved else "")
    return True


def ensure_ahead(database: pw.Database, spec: Spec, now: float, since: float | None = None) -> list[str]:
    """Today's partition and AHEAD_DAYS more, when `spec`'s table is partitioned; with `since`, also those of the
    days since then that have rows waiting in the DEFAULT partition (a backfill, a clock that ran ahead)."""
    if not is_partitioned(database, spec.table):
        return []
    today = day_of(now)
    days = set(range(today, today + AHEAD_DAYS + 1))
    if since is not None:
        rows = database.execute_sql(f'SELECT DISTINCT floor("{spec.key}" / {DAY_S})::bigint FROM "{spec.default}" '
                                    f'WHERE "{spec.key}" >= %s AND "{spec.key}" < %s',
                                    (day_of(since) * DAY_S, (today + AHEAD_DAYS + 1) * DAY_S)).fetchall()
        days.update(day for (day,) in rows)
    return ensure(database, spec, days)
