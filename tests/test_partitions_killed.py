"""Processes killed (SIGKILL) in the middle of changing the partitions, on a real PostgreSQL server: the migration of
an older version's store while samples keep arriving, a partition being made, a day being dropped. Each is run
again to its end, and every sample is still there once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import psycopg2
import pytest

from agent.wire import Sample
from bot import db
from schema import partitions
from schema.partitions import DAY_S, day_of
from schema.tables import SAMPLES
from tests.fakes.samples import with_devices
from tests.fakes.scenario import wait_until
from tests.fakes.stores import empty_postgres, older_version_store

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
NOW = time.time()
TODAY = day_of(NOW)


def python(code: str, url: str) -> subprocess.Popen[bytes]:
    """A process of this repository running `code`, with the store's URL as its argument."""
    return subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT, stderr=subprocess.PIPE)


def waiting_on(url: str, statement: str) -> bool:
    """Whether a session of the server waits for a lock in a statement containing `statement`."""
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                       (f"%{statement}%",))
        return cursor.fetchone()[0] > 0


def gone(url: str, statement: str) -> bool:
    """Whether no session runs a statement containing `statement` any more (the server saw its client die)."""
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                       (f"%{statement}%",))
        return cursor.fetchone()[0] == 0


def kill(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def finish(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    assert process.wait(timeout=timeout) == 0, process.stderr.read().decode()[-2000:] if process.stderr else ""


def raw() -> list[tuple[int, str, float]]:
    """Every raw sample as (id, device, ts): in `metric` and in `metric_kept`, duplicates included."""
    return sorted(row for table in (db.Metric, db.KeptSample)
                  for row in table.select(table.id, table.device, table.ts).tuples())


@pytest.fixture
def store(postgres_url: str) -> Iterator[pw.Database]:
    empty_postgres(postgres_url)
    database = db.open_database(postgres_url)
    yield database
    database.close()


class Writer(threading.Thread):
    """The bot storing a batch of ten machines every 20 ms, as long as it runs; what it stored is in `stored`."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stored: list[db.StoredSample] = []
        self.running = True
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            batch = 0
            while self.running:
                samples = [Sample(f"live{i}", NOW + batch, {"cpu_percent": float(batch % 100)}) for i in range(10)]
                self.stored += db.store_batch(samples, [0.1] * 10, 1, [], on_stored=with_devices)
                batch += 1
                time.sleep(0.02)
        except BaseException as exc:  # said by the test, in stop()
            self.error = exc

    def stop(self) -> None:
        self.running = False
        self.join(timeout=30)
        assert self.error is None, repr(self.error)


def test_a_migration_killed_halfway_and_run_again_while_samples_arrive_loses_and_doubles_nothing(
    postgres_url: str,
) -> None:
    empty_postgres(postgres_url)
    older_version_store(postgres_url)
    database = db.open_database(postgres_url)
    # 200,000 samples of an older version: the last two days, and some from before the retention.
    database.execute_sql("INSERT INTO metric (device, ts, received, cpu_percent) SELECT 'old' || (i %% 100), "
                         "%s - i * 0.9, 0, i %% 100 FROM generate_series(1, 200000) AS i", (NOW,))
    database.execute_sql("INSERT INTO metric (device, ts, received) SELECT 'older', %s - i * 3600, 0 "
                         "FROM generate_series(1, 100) AS i", (NOW - 20 * DAY_S,))
    before = raw()
    labelled = before[10]
    db.add_label(labelled[0], 1, 7, "alice")
    writer = Writer()
    writer.start()
    env = {**os.environ, "DATABASE_URL": postgres_url, "LOG_LEVEL": "INFO"}
    command = [sys.executable, "-m", "bot.migrate_partitions", "--chunk", "1000"]
    try:
        first = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE)
        wait_until(lambda: database.table_exists(partitions.MIGRATION_STATE) and
                   database.execute_sql("SELECT copied * 3 >= horizon FROM partition_migration WHERE name = 'metric'")
                   .fetchone()[0], timeout=60, what="a third copied")
        kill(first)
        (copied, horizon), = database.execute_sql("SELECT copied, horizon FROM partition_migration "
                                                  "WHERE name = 'metric'").fetchall()
        assert copied < horizon, "killed halfway"
        assert not partitions.is_partitioned(database, "metric"), "the bot goes on with the old table meanwhile"

        second = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE)
        finish(second)
        log = second.stderr.read().decode() if second.stderr else ""
        assert "ids up to" in log and "swapped" in log
        time.sleep(0.5)  # and a few batches more, into the partitioned table
    finally:
        writer.stop()
    try:
        assert partitions.is_partitioned(database, "metric")
        expected = sorted([*before, *((s.id, s.device, s.ts) for s in writer.stored)])
        assert len(writer.stored) > 100
        assert raw() == expected, "every sample once, with its id"
        assert db.sample_by_id(labelled[0]) is not None and db.Label.get().metric == labelled[0]
        assert not database.table_exists("metric_unpartitioned")
    finally:
        database.close()


def test_a_process_killed_while_making_a_partition_leaves_nothing_half_made(store: pw.Database,
                                                                         postgres_url: str) -> None:
    day = TODAY - 2  # its samples wait in the DEFAULT partition
    store.execute_sql("INSERT INTO metric (device, ts, received) SELECT 'pc' || (i %% 50), %s + i * 0.5, 0 "
                      "FROM generate_series(1, 100000) AS i", (day * DAY_S,))
    before = raw()
    # The bot's daily run makes the partitions of the days whose samples wait; it starts once the store is open.
    code = ("import sys, time; from bot import db; from bot.db import retention; "
            "db.open_database(sys.argv[1]); print('open', flush=True); sys.stdin.readline(); retention.daily(14)")
    making = subprocess.Popen([sys.executable, "-c", code, postgres_url], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert making.stdout is not None and making.stdin is not None
    assert making.stdout.readline() == b"open\n"
    holder = psycopg2.connect(postgres_url)  # makes the ATTACH wait, after the rows are moved
    holder.cursor().execute("LOCK TABLE ONLY metric IN SHARE UPDATE EXCLUSIVE MODE")  # not its partitions
    making.stdin.write(b"go\n")
    making.stdin.flush()
    try:
        wait_until(lambda: waiting_on(postgres_url, "ATTACH PARTITION"), timeout=30,
                   what="the partition being attached")
        kill(making)
    finally:
        holder.rollback()
        holder.close()
    wait_until(lambda: gone(postgres_url, "ATTACH PARTITION"), timeout=30, what="its transaction ended")

    assert day not in partitions.partitions(store, SAMPLES)
    assert not store.table_exists(SAMPLES.partition(day)), "no table half made"
    assert store.execute_sql(f"SELECT count(*) FROM {SAMPLES.default}").fetchone()[0] == 100_000
    assert raw() == before

    again = subprocess.Popen([sys.executable, "-c", code, postgres_url], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL)
    again.communicate(b"go\n", timeout=60)  # the bot starts again, and its daily run
    assert again.returncode == 0

    assert day in partitions.partitions(store, SAMPLES)
    assert store.execute_sql(f"SELECT count(*) FROM {SAMPLES.partition(day)}").fetchone()[0] == 100_000
    assert raw() == before


def test_retention_killed_halfway_loses_and_doubles_nothing(store: pw.Database, postgres_url: str) -> None:
    old_days = [TODAY - 20, TODAY - 19]
    partitions.ensure(store, SAMPLES, old_days)
    for day in old_days:
        store.execute_sql("INSERT INTO metric (device, ts, received, cpu_percent) SELECT 'pc' || (i %% 20), "
                          "%s + i * 0.8, 0, i %% 100 FROM generate_series(1, 100000) AS i", (day * DAY_S,))
    live = db.store_batch([Sample(f"pc{i}", NOW, {"cpu_percent": 1.0}) for i in range(20)], [0.1] * 20, 1, [],
                          on_stored=with_devices)
    before = raw()
    labelled = before[123]
    db.add_label(labelled[0], 0, 7, "alice")
    code = "import sys, time; from bot import db; from bot.db import retention; " \
           "db.open_database(sys.argv[1]); retention.downsample(time.time(), 14)"
    reader = psycopg2.connect(postgres_url)  # a long read: the drop waits for it, its day aggregated meanwhile
    reader.cursor().execute("SELECT count(*) FROM metric")
    dropping = python(code, postgres_url)
    try:
        wait_until(lambda: waiting_on(postgres_url, "DETACH PARTITION"), timeout=60,
                   what="a day aggregated, its partition being detached")
        kill(dropping)
    finally:
        reader.rollback()
        reader.close()
    wait_until(lambda: gone(postgres_url, "DETACH PARTITION"), timeout=30, what="its transaction ended")

    assert sorted(partitions.partitions(store, SAMPLES))[:2] == old_days, "nothing dropped"
    assert db.Aggregate.select().count() == 0 and db.KeptSample.select().count() == 0, "nothing half done"
    assert raw() == before

    finish(python(code, postgres_url))

    assert not set(old_days) & set(partitions.partitions(store, SAMPLES))
    left = raw()
    assert left == sorted([labelled, *((s.id, s.device, s.ts) for s in live)]), "what is pointed at, once"
    aggregated = db.Aggregate.select(pw.fn.SUM(db.Aggregate.samples)).scalar()
    assert aggregated + 1 == 200_000, "every other sample counted once in its five minutes"
    assert db.sample_by_id(labelled[0]) is not None
