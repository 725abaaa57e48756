"""Retention on PostgreSQL: dropping a day's partition against deleting the same rows.

`python -m bench.partitions` starts a throwaway PostgreSQL cluster (as the tests do), and in each of two stores
puts the same two days of samples (`--rows` a day, of `--devices` machines, every metric the agent sends):

- an older version's store, one plain `metric` table (primary key and unique (device, ts), as it was): one day's
  rows are deleted with one DELETE, then the table is vacuumed so the space can be used again;
- the bot's store, partitioned by day (schema/partitions.py): that day's partition is detached and dropped as
  retention does it (bot/db/retention.py), in one transaction.

It prints the time of each and the tables' size before and after. The cluster runs with fsync off, as the tests'
does: a DELETE, which writes every row it removes to the log, would take longer with it on; a drop writes nearly
nothing. `--url` measures on a database of yours instead (it creates and drops its tables there).

The functions are meant to be reused (a fleet-sized benchmark can fill its days with `fill_day`).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import peewee as pw

from agent.vocabulary import KNOWN_METRICS
from bot import db
from bot.db import retention
from schema import partitions
from schema.partitions import DAY_S, day_of
from schema.tables import SAMPLES
from tests.fakes.services import postgres_cluster
from tests.fakes.stores import empty_postgres, older_version_store


def fill_day(database: pw.Database, day: int, rows: int, devices: int) -> None:
    """`rows` samples of `devices` machines spread over `day` (days since 1970-01-01 UTC), every known metric, made
    inside PostgreSQL (one statement, no Python per row), into `metric` whatever its layout."""
    metrics = ", ".join(KNOWN_METRICS)
    values = ", ".join(f"(i * {k + 7}) %% 10000 / 100.0" for k in range(len(KNOWN_METRICS)))
    step = DAY_S / max(1, rows // devices + 1)
    with database.atomic():
        database.execute_sql(
            f"INSERT INTO metric (device, ts, received, p_stressed, model_version, {metrics}) "
            f"SELECT 'dev' || lpad((i %% %s)::text, 5, '0'), %s + (i / %s) * %s, %s, 0.05, 1, {values} "
            "FROM generate_series(0, %s - 1) AS i",
            (devices, day * DAY_S, devices, step, day * DAY_S, rows))
    database.execute_sql("ANALYZE metric")


def size(database: pw.Database, table: str = "metric") -> int:
    """Bytes of `table` with its indexes (and its partitions)."""
    return int(database.execute_sql(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class AS c WHERE c.oid = to_regclass(%s) "
        "OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(%s))",
        (table, table)).fetchone()[0])


def time_delete(database: pw.Database, day: int) -> float:
    """Seconds to delete the day's rows from `metric` in one statement, committed."""
    began = time.perf_counter()
    with database.atomic():
        database.execute_sql("DELETE FROM metric WHERE ts >= %s AND ts < %s", (day * DAY_S, (day + 1) * DAY_S))
    return time.perf_counter() - began


def time_vacuum(database: pw.Database) -> float:
    """Seconds of the VACUUM that makes the deleted rows' space usable again (outside a transaction)."""
    began = time.perf_counter()
    database.execute_sql("VACUUM metric")
    return time.perf_counter() - began


@dataclass
class Dropped:
    detach_s: float  # the transaction that holds `metric` exclusively: detached, committed
    files_s: float  # then its files removed, holding nothing another session waits for

    @property
    def total_s(self) -> float:
        return self.detach_s + self.files_s


def time_drop(database: pw.Database, day: int) -> Dropped:
    """The day's partition detached and dropped as retention does, each step committed and timed."""
    began = time.perf_counter()
    with database.atomic():
        partitions.lock_timeout(database)
        retention.detach(SAMPLES.partition(day))
    detached = time.perf_counter()
    retention.drop_detached()
    return Dropped(detached - began, time.perf_counter() - detached)


@contextlib.contextmanager
def older_store(url: str) -> Iterator[pw.Database]:
    """An older version's layout: one plain `metric` table (tests/fakes/stores.py makes it)."""
    empty_postgres(url)
    older_version_store(url)
    database = db.open_database(url)
    try:
        yield database
    finally:
        database.close()


@contextlib.contextmanager
def partitioned_store(url: str, days: list[int]) -> Iterator[pw.Database]:
    """The bot's layout, with the partitions of `days`."""
    empty_postgres(url)
    database = db.open_database(url)
    partitions.ensure(database, SAMPLES, days)
    try:
        yield database
    finally:
        database.close()


@dataclass
class Figures:
    rows: int
    delete_s: float = 0.0
    vacuum_s: float = 0.0
    deleted_size: tuple[int, int, int] = (0, 0, 0)  # before, after the delete, after the vacuum
    drop: Dropped | None = None
    dropped_size: tuple[int, int] = (0, 0)  # before, after the drop


def measure(url: str, rows: int, devices: int, now: float | None = None) -> Figures:
    """The same two days in each layout; one day deleted from the older one, dropped from the partitioned one."""
    old, kept = day_of(now or time.time()) - 30, day_of(now or time.time()) - 29
    figures = Figures(rows)
    with older_store(url) as database:
        for day in (old, kept):
            fill_day(database, day, rows, devices)
        before = size(database)
        figures.delete_s = time_delete(database, old)
        after = size(database)
        figures.vacuum_s = time_vacuum(database)
        figures.deleted_size = (before, after, size(database))
    with partitioned_store(url, [old, kept]) as database:
        for day in (old, kept):
            fill_day(database, day, rows, devices)
        before = size(database)
        figures.drop = time_drop(database, old)
        figures.dropped_size = (before, size(database))
    empty_postgres(url)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.partitions", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="samples a day (default 2,000,000)")
    parser.add_argument("--devices", type=int, default=1000, help="machines (default 1,000)")
    parser.add_argument("--url", help="a PostgreSQL database of yours instead of a throwaway cluster")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(postgres_cluster())
        figures = measure(url, args.rows, args.devices)
    mib = 1 << 20
    before, after, vacuumed = (b / mib for b in figures.deleted_size)
    dropped_before, dropped_after = (b / mib for b in figures.dropped_size)
    print(f"{figures.rows:,} samples a day of {args.devices:,} machines, two days in each store")
    print(f"DELETE of one day from one plain table: {figures.delete_s:.2f} s; the table {before:,.0f} MiB before, "
          f"{after:,.0f} MiB after; VACUUM {figures.vacuum_s:.2f} s more, then {vacuumed:,.0f} MiB "
          "(the space is reused, not given back)")
    drop = figures.drop
    print(f"detach of that day's partition (the samples' table locked): {drop.detach_s:.3f} s, then its files "
          f"dropped (nothing locked): {drop.files_s:.3f} s; the table {dropped_before:,.0f} MiB before, "
          f"{dropped_after:,.0f} MiB after")
    print(f"dropping is {figures.delete_s / max(drop.total_s, 1e-6):,.0f} times as fast as the DELETE, "
          f"{(figures.delete_s + figures.vacuum_s) / max(drop.total_s, 1e-6):,.0f} times with its VACUUM")

if __name__ == "__main__":
    main()
