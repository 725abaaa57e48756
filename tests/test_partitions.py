"""Samples partitioned by day on a real PostgreSQL server: the layout, which partitions the reads touch (their plans),
retention dropping whole days, and the migration of an older version's store."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import peewee as pw
import psycopg2
import pytest

from agent.wire import Sample
from bot import db
from bot import migrate_partitions as migration
from bot.db import retention
from ml.data import latest_labels, training_frame
from schema import partitions
from schema.partitions import DAY_S, day_of
from schema.tables import AGGREGATES, SAMPLES
from tests.fakes.samples import with_devices
from tests.fakes.stores import empty_postgres, older_version_store

ROOT = Path(__file__).resolve().parent.parent
NOW = time.time()
TODAY = day_of(NOW)
HOUR = 3600.0


@pytest.fixture
def store(postgres_url: str) -> Iterator[pw.Database]:
    """The session's Postgres, emptied and opened by the bot: partitioned by day."""
    empty_postgres(postgres_url)
    database = db.open_database(postgres_url)
    yield database
    database.close()


def store_samples(samples: list[Sample]) -> list[db.StoredSample]:
    """Stored as the bot stores them: with each device's row brought up to date."""
    return db.store_batch(samples, [0.1] * len(samples), 1, [], on_stored=with_devices)


def hourly(device: str, days: int, until: float = NOW) -> list[db.StoredSample]:
    """A sample of `device` every hour of the last `days` days, stored a day at a time."""
    stored = []
    for day in range(days, 0, -1):
        stored += store_samples([Sample(device, until - day * DAY_S + hour * HOUR + 60, {"cpu_percent": float(hour)})
                                 for hour in range(24)])
    return stored


def in_default() -> int:
    return db.db.execute_sql(f"SELECT count(*) FROM {SAMPLES.default}").fetchone()[0]


def raw_ids() -> list[int]:
    """Every raw sample's id: in `metric` and kept in `metric_kept`, duplicates included."""
    return [row.id for table in (db.Metric, db.KeptSample) for row in table.select(table.id)]


def read_by(database: pw.Database, action: Callable[[], object]) -> set[str]:
    """The tables and partitions in the plans of every query `action` runs: each statement peewee logs is explained
    (EXPLAIN, FORMAT JSON) with its parameters, as it ran."""
    statements: list[tuple[str, object]] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            statements.append(record.msg)  # type: ignore[arg-type]

    logger, recorder = logging.getLogger("peewee"), Recorder()
    level = logger.level
    logger.addHandler(recorder)
    logger.setLevel(logging.DEBUG)
    try:
        action()
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)
    read: set[str] = set()

    def walk(node: dict) -> None:
        if "Relation Name" in node:
            read.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    for sql, params in statements:
        if sql.lstrip(" (").upper().startswith(("SELECT", "WITH")):
            (plan,) = database.execute_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchone()
            walk(plan[0]["Plan"])
    return read


def samples_partitions(tables: set[str]) -> set[str]:
    return {t for t in tables if t.startswith(f"{SAMPLES.table}_p") or t == SAMPLES.default}


def test_a_new_store_has_its_samples_and_aggregates_partitioned_by_day_and_the_next_days_made(
    store: pw.Database, tmp_path: Path,
) -> None:
    assert partitions.is_partitioned(store, "metric") and partitions.is_partitioned(store, "metric_5m")
    assert sorted(partitions.partitions(store, SAMPLES)) == list(range(TODAY, TODAY + partitions.AHEAD_DAYS + 1))
    assert store.table_exists(SAMPLES.default) and store.table_exists(AGGREGATES.default)

    sqlite = db.open_database(f"sqlite:///{tmp_path}/rigwatch.sqlite3")
    assert not partitions.is_partitioned(sqlite, "metric"), "SQLite keeps one samples table"
    sqlite.close()


def test_a_sample_whose_day_has_no_partition_waits_in_the_default_one_until_its_day_gets_one(
    store: pw.Database,
) -> None:
    backfilled = store_samples([Sample("pc1", NOW - 5 * DAY_S, {"cpu_percent": 1.0})])
    ahead = store_samples([Sample("pc2", NOW + 40 * DAY_S, {"cpu_percent": 2.0})])  # a clock far ahead
    assert in_default() == 2

    made = partitions.ensure_ahead(store, SAMPLES, NOW, since=NOW - 14 * DAY_S)  # what the daily run does

    assert made == [SAMPLES.partition(day_of(NOW - 5 * DAY_S))]
    assert in_default() == 1, "the clock far ahead makes no partition; its sample stays in the default one"
    assert db.sample_at(backfilled[0].id, backfilled[0].ts) == backfilled[0], "moved with its id"
    assert db.latest_sample("pc2") == ahead[0]
    assert sorted(raw_ids()) == sorted([backfilled[0].id, ahead[0].id])


def test_processes_that_open_the_store_at_once_make_each_table_and_partition_once(postgres_url: str) -> None:
    empty_postgres(postgres_url)
    code = ("import sys, time; from bot import db; from schema import partitions; from schema.tables import SAMPLES; "
            "d = db.open_database(sys.argv[1]); "
            "partitions.ensure_ahead(d, SAMPLES, time.time(), since=time.time() - 10 * 86400)")
    opened = [subprocess.Popen([sys.executable, "-c", code, postgres_url], cwd=ROOT, stderr=subprocess.PIPE)
              for _ in range(3)]
    assert [p.wait(timeout=60) for p in opened] == [0] * 3, [p.stderr.read()[-300:] for p in opened if p.stderr]

    database = db.open_database(postgres_url)
    try:
        assert sorted(partitions.partitions(database, SAMPLES)) == list(range(TODAY, TODAY + 4))
        backfill = [Sample(f"pc{i}", NOW - day * DAY_S, {"cpu_percent": 1.0}) for i in range(50) for day in (2, 3)]
        stored = store_samples(backfill)
        assert in_default() == 100

        again = [subprocess.Popen([sys.executable, "-c", code, postgres_url], cwd=ROOT) for _ in range(3)]
        assert [p.wait(timeout=60) for p in again] == [0] * 3

        made = [day_of(NOW - 3 * DAY_S), day_of(NOW - 2 * DAY_S), *range(TODAY, TODAY + 4)]
        assert sorted(partitions.partitions(database, SAMPLES)) == made, "the days with samples waiting"
        assert in_default() == 0
        assert sorted(raw_ids()) == sorted(s.id for s in stored), "each moved once"
    finally:
        database.close()


def test_the_status_of_a_machine_and_its_chart_read_only_the_partitions_of_their_days(store: pw.Database) -> None:
    partitions.ensure(store, SAMPLES, range(TODAY - 10, TODAY))
    stored = hourly("pc1", 10) + hourly("pc2", 10)
    newest = max((s for s in stored if s.device == "pc1"), key=lambda s: s.ts)
    every_day = {SAMPLES.partition(day) for day in range(TODAY - 10, TODAY + 4)}

    status = read_by(store, lambda: db.latest_sample("pc1"))  # what /status pc1 reads
    assert db.latest_sample("pc1") == newest
    assert samples_partitions(status) == {SAMPLES.partition(day_of(newest.ts))}

    start = NOW - 6 * HOUR  # what /chart pc1 6 reads
    chart = read_by(store, lambda: db.chart_series("pc1", start, NOW, ["cpu_percent"]))
    assert samples_partitions(chart) == {SAMPLES.partition(day) for day in {day_of(start), day_of(NOW)}}

    usual = read_by(store, lambda: db.history_points("pc1", 2 * DAY_S, 50, ["cpu_percent"], 60))  # usual ranges
    assert samples_partitions(usual) <= {SAMPLES.partition(day) for day in range(day_of(newest.ts) - 2, TODAY + 1)}

    # The check can fail: a read by id alone (a button from before buttons carried the time) reads every day.
    assert samples_partitions(read_by(store, lambda: db.sample_by_id(newest.id))) == every_day | {SAMPLES.default}


def test_the_fleet_status_and_the_forecasts_rebuild_find_each_device_in_its_own_days(store: pw.Database) -> None:
    partitions.ensure(store, SAMPLES, range(TODAY - 3, TODAY))
    live = hourly("live", 2)
    quiet = hourly("quiet", 1, until=NOW - 2 * DAY_S)  # silent for two days

    assert db.seen_per_device() == [(s.device, s.ts, s.p_stressed) for s in (live[-1], quiet[-1])]
    assert read_by(store, db.seen_per_device) == {"device"}, "the fleet's /status reads one row per machine"
    assert (db.latest_sample("live"), db.latest_sample("quiet")) == (live[-1], quiet[-1])
    recent = [(device, ts) for _id, device, ts, *_rest in db.recent_per_device(3 * HOUR, ["cpu_percent"])]
    assert recent == [(s.device, s.ts) for s in (*live[-4:], *quiet[-4:])]


def test_retention_drops_whole_old_days_and_keeps_what_labels_incidents_and_devices_point_at(
    store: pw.Database,
) -> None:
    partitions.ensure(store, SAMPLES, range(TODAY - 20, TODAY))
    stored = hourly("pc1", 20) + hourly("gone", 3, until=NOW - 16 * DAY_S)
    labelled, alerted = stored[24 * 2 + 5], stored[24 * 3 + 7]  # 18 and 17 days old
    db.add_label(labelled.id, 1, 7, "alice")
    db.Incident.create(device="pc1", kind="stressed", state="resolved", opened_ts=alerted.ts, last_ts=alerted.ts,
                       sample_id=alerted.id, created=alerted.ts, updated=alerted.ts)
    gone = stored[-1]
    cutoff = NOW - 14 * DAY_S

    done = retention.downsample(NOW, 14)

    left = sorted(partitions.partitions(store, SAMPLES))
    assert left[0] == day_of(cutoff), "a day goes once all of it is older than the retention"
    old = [s for s in stored if s.ts < left[0] * DAY_S]
    kept = {labelled.id, alerted.id, gone.id}
    assert done.samples == len(old) - len(kept)
    assert sorted(raw_ids()) == sorted({s.id for s in stored} - {s.id for s in old} | kept), "nothing twice"
    assert {r.id for r in db.KeptSample.select()} == kept
    assert db.Aggregate.select(pw.fn.SUM(db.Aggregate.samples)).scalar() == len(old) - len(kept)
    assert sorted(partitions.partitions(store, AGGREGATES)) == sorted({day_of(s.ts) for s in old})

    assert db.sample_at(labelled.id, labelled.ts) == labelled, "the label still finds its sample"
    assert latest_labels() == {labelled.id: 1}
    assert training_frame(["cpu_percent"]).loc[labelled.id, "label"] == 1.0, "and training learns from it"
    assert db.sample_at(alerted.id, alerted.ts) == alerted, "a label on the incident is still about its sample"
    assert db.latest_sample("gone") == gone and db.seen_per_device()[0] == ("gone", gone.ts, gone.p_stressed)
    chart = db.chart_series("pc1", NOW - 21 * DAY_S, NOW, ["cpu_percent"])
    assert sum(1 for _ in chart.points) > 0
    assert retention.downsample(NOW, 14).samples == 0, "running it again changes nothing"


def retired_tables(database: pw.Database) -> list[str]:
    return [name for (name,) in database.execute_sql("SELECT relname FROM pg_class WHERE relname LIKE '%%retired'")]


def test_a_day_is_detached_under_the_lock_and_its_files_dropped_after_and_a_killed_run_leaves_none_for_long(
    store: pw.Database,
) -> None:
    partitions.ensure(store, SAMPLES, range(TODAY - 20, TODAY))
    stored = hourly("pc1", 20)
    # A run killed once its transaction committed, before it dropped the files: the day detached, renamed retired.
    left_behind = min(partitions.partitions(store, SAMPLES))
    with store.atomic():
        retention.detach(SAMPLES.partition(left_behind))
    store.execute_sql(f"CREATE TABLE {SAMPLES.table}_p20000101_notes (x int)")  # not ours: never dropped
    assert retired_tables(store) == [f"{SAMPLES.partition(left_behind)}{retention.RETIRED}"]

    done = retention.downsample(NOW, 14)

    assert retired_tables(store) == [], "the leftover dropped, and the days dropped now left nothing"
    assert store.table_exists(f"{SAMPLES.table}_p20000101_notes")
    first = min(partitions.partitions(store, SAMPLES))
    assert first == day_of(NOW - 14 * DAY_S)
    assert done.samples == sum(1 for s in stored if (left_behind + 1) * DAY_S <= s.ts < first * DAY_S)
    assert sorted(raw_ids()) == [s.id for s in stored if s.ts >= first * DAY_S]


def test_a_late_sample_of_a_dropped_day_waits_in_the_default_partition_and_joins_its_five_minutes(
    store: pw.Database,
) -> None:
    partitions.ensure(store, SAMPLES, [TODAY - 20])
    start = (TODAY - 20) * DAY_S + 600
    store_samples([Sample("pc1", start + 5 * i, {"cpu_percent": float(i)}) for i in range(60)])
    store_samples([Sample("pc1", NOW, {"cpu_percent": 1.0})])
    retention.downsample(NOW, 14)
    assert TODAY - 20 not in partitions.partitions(store, SAMPLES)

    store_samples([Sample("pc1", start + 2.5, {"cpu_percent": 90.0})])  # a sender offline for three weeks
    assert in_default() == 1
    retention.downsample(NOW, 14)

    assert in_default() == 0
    (bucket,) = db.Aggregate.select()
    assert (bucket.samples, bucket.cpu_percent_max) == (61, 90.0)


def test_a_day_waits_for_a_long_reader_while_samples_keep_being_stored(
    store: pw.Database, postgres_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retention, "LOCK_PAUSE_S", 0.2)
    partitions.ensure(store, SAMPLES, [TODAY - 20])
    hourly("pc1", 1, until=(TODAY - 19) * DAY_S)
    reader = psycopg2.connect(postgres_url)  # a retrain streaming every sample
    reader.cursor().execute("SELECT count(*) FROM metric")
    dropped = threading.Thread(target=retention.downsample, args=(NOW, 14))
    dropped.start()
    try:
        began = time.monotonic()
        for i in range(10):  # ingestion goes on meanwhile: a batch waits for the drop's lock at most a moment
            store_samples([Sample("pc2", NOW + i, {"cpu_percent": 1.0})])
        assert time.monotonic() - began < 10 * partitions.LOCK_TIMEOUT_S
        assert dropped.is_alive() and TODAY - 20 in partitions.partitions(store, SAMPLES)
    finally:
        reader.rollback()  # the retrain is done
        reader.close()
        dropped.join(timeout=30)
    assert TODAY - 20 not in partitions.partitions(store, SAMPLES)
    assert db.Aggregate.select(pw.fn.SUM(db.Aggregate.samples)).scalar() == 23, "all but pc1's newest"


def test_an_older_version_store_works_on_unpartitioned_until_it_is_migrated(postgres_url: str) -> None:
    empty_postgres(postgres_url)
    older_version_store(postgres_url)
    database = db.open_database(postgres_url)
    try:
        assert not partitions.is_partitioned(database, "metric")
        stored = hourly("pc1", 20)
        db.add_label(stored[3].id, 0, 7, "alice")

        assert retention.downsample(NOW, 14).samples > 0
        assert db.sample_at(stored[3].id, stored[3].ts) == stored[3], "kept where it was"
        assert db.latest_sample("pc1") == stored[-1]
    finally:
        database.close()


def test_the_migration_keeps_every_sample_with_its_id_and_lets_go_of_the_foreign_keys(postgres_url: str) -> None:
    empty_postgres(postgres_url)
    older_version_store(postgres_url)
    database = db.open_database(postgres_url)
    try:
        stored = hourly("pc1", 20) + hourly("pc2", 20)
        db.add_label(stored[5].id, 1, 7, "alice")
        retention.downsample(NOW, 14)  # the old retention: aggregates, and samples kept raw in `metric`
        before = sorted(raw_ids())
        aggregates = sorted((a.device, a.bucket, a.samples) for a in db.Aggregate.select())

        assert migration.migrate(database, 14, chunk=100)

        assert partitions.is_partitioned(database, "metric") and partitions.is_partitioned(database, "metric_5m")
        assert sorted(raw_ids()) == before
        assert sorted((a.device, a.bucket, a.samples) for a in db.Aggregate.select()) == aggregates
        assert db.sample_at(stored[5].id, stored[5].ts) == stored[5]
        assert db.latest_sample("pc2") == stored[-1]
        assert database.execute_sql("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid IN "
                                    "('label'::regclass, 'incident'::regclass)").fetchone()[0] == 0
        assert not any(database.table_exists(t) for t in ("metric_unpartitioned", "metric_5m_unpartitioned",
                                                           "metric_part", partitions.MIGRATION_STATE))
        newer = store_samples([Sample("pc1", NOW + 60, {"cpu_percent": 3.0})])
        assert newer[0].id > max(before), "ids go on from the old sequence"
        assert not migration.migrate(database, 14), "once is enough"
        assert retention.downsample(NOW, 14).samples == 0
    finally:
        database.close()
