"""Retention on a real SQLite file and a real PostgreSQL server, with a clock the test sets."""

from __future__ import annotations

from pathlib import Path

import peewee as pw
import pytest

from agent.wire import Sample
from bot import db
from bot.db import retention
from ml.data import latest_labels, training_frame
from tests.fakes.samples import series, with_devices

NOW = 1764226800.0  # 2025-11-27 07:00 UTC, a multiple of five minutes
DAY = 86400.0
DAYS = 14


def every_5s(device: str, start: float, count: int, **metrics: float) -> list[Sample]:
    """`count` samples 5 s apart; cpu_percent counts up 0, 1, 2, ... so each five minutes has known figures."""
    return series(device, start, [{"cpu_percent": float(i % 60), **metrics} for i in range(count)])


def store_samples(samples: list[Sample]) -> list[db.StoredSample]:
    return db.store_batch(samples, [0.1] * len(samples), 1, [], on_stored=with_devices)


def raw_count(device: str) -> int:
    """The device's raw samples: in `metric`, and those kept past the retention (on PostgreSQL in `metric_kept`)."""
    return sum(table.select().where(table.device == device).count() for table in (db.Metric, db.KeptSample))


def raw_ids() -> set[int]:
    return {row.id for table in (db.Metric, db.KeptSample) for row in table.select(table.id)}


def test_samples_older_than_the_retention_become_five_minute_min_mean_max_and_recent_ones_stay_raw(
    database: pw.Database,
) -> None:
    old_start = NOW - 20 * DAY
    store_samples(every_5s("pc1", old_start, 720, mem_percent=50.0))  # one hour, twelve five-minute buckets
    store_samples(every_5s("pc1", NOW - 3600, 720, mem_percent=60.0))

    done = retention.downsample(NOW, DAYS)

    assert (done.samples, done.devices) == (720, 1)
    assert raw_count("pc1") == 720, "the recent hour stays raw"
    buckets = list(db.Aggregate.select().order_by(db.Aggregate.bucket))
    assert [b.bucket for b in buckets] == [old_start + 300 * k for k in range(12)]
    first = buckets[0]
    assert first.samples == 60
    assert (first.cpu_percent_min, first.cpu_percent, first.cpu_percent_max) == (0.0, 29.5, 59.0)
    assert (first.mem_percent_min, first.mem_percent, first.mem_percent_max) == (50.0, 50.0, 50.0)
    assert first.swap_percent is None and first.swap_percent_max is None, "a metric never sent stays missing"


def test_labelled_samples_samples_that_raised_an_alert_and_the_newest_stay_raw(database: pw.Database) -> None:
    stored = store_samples(every_5s("pc1", NOW - 30 * DAY, 120))
    labelled, alerted, newest = stored[10], stored[70], stored[-1]
    db.add_label(labelled.id, 0, 7, "alice")
    start = alerted.ts
    db.Incident.create(device="pc1", kind="stressed", state="resolved", opened_ts=start, last_ts=start,
                          sample_id=alerted.id, created=start, updated=start)

    retention.downsample(NOW, DAYS)

    assert raw_ids() == {labelled.id, alerted.id, newest.id}
    assert latest_labels() == {labelled.id: 0}
    assert db.sample_at(alerted.id, alerted.ts) == alerted, "a label on the incident is still about its sample"
    assert db.sample_by_id(alerted.id) == alerted
    assert db.latest_sample("pc1") == newest
    assert sum(b.samples for b in db.Aggregate.select()) == 117


def test_running_it_again_changes_nothing_and_a_late_sample_joins_its_five_minutes(database: pw.Database) -> None:
    start = NOW - 20 * DAY
    store_samples(every_5s("pc1", start, 60))  # cpu 0..59: mean 29.5
    store_samples([Sample("pc1", NOW - 60, {"cpu_percent": 1.0})])  # its newest, which stays raw
    retention.downsample(NOW, DAYS)
    assert retention.downsample(NOW, DAYS).samples == 0

    # A sender that was offline for three weeks delivers one more sample of those five minutes.
    store_samples([Sample("pc1", start + 2.5, {"cpu_percent": 90.0, "mem_percent": 40.0})])
    retention.downsample(NOW, DAYS)

    (bucket,) = db.Aggregate.select()
    assert bucket.samples == 61
    assert bucket.cpu_percent == pytest.approx((29.5 * 60 + 90.0) / 61)
    assert (bucket.cpu_percent_min, bucket.cpu_percent_max) == (0.0, 90.0)
    assert (bucket.mem_percent_min, bucket.mem_percent, bucket.mem_percent_max) == (40.0, 40.0, 40.0)
    assert raw_count("pc1") == 1


def test_status_charts_and_training_read_the_downsampled_samples(database: pw.Database) -> None:
    gone = store_samples(every_5s("gone", NOW - 20 * DAY, 120, mem_percent=70.0))  # silent for three weeks
    recent = store_samples(every_5s("live", NOW - 60, 12))

    retention.downsample(NOW, DAYS)

    assert [s.device for s in db.seen_per_device()] == ["gone", "live"]
    assert db.latest_sample("gone") == gone[-1], "its newest sample stays raw"
    assert db.latest_sample("live") == recent[-1]

    assert db.history_points("gone", 30 * DAY, 5, ["mem_percent"], 60) == [(70.0,)] * 5, "charts read them too"
    chart = db.chart_series("gone", NOW - 21 * DAY, NOW, ["cpu_percent", "mem_percent"])
    assert [p.metrics for p in chart.points] == [{"cpu_percent": 29.5, "mem_percent": 70.0}], "120 samples' mean"
    assert chart.points[0].first_ts == NOW - 20 * DAY

    frame = training_frame(["cpu_percent", "mem_percent"])
    assert len(frame) == 12 + 1 + 2, "twelve raw samples, the one kept raw and two five-minute aggregates"
    assert sorted(frame.loc[frame.index < 0, "mem_percent"]) == [70.0, 70.0]
    assert frame["label"].isna().all()


def test_a_device_without_its_row_shows_its_newest_five_minutes(database: pw.Database) -> None:
    # A store an older version wrote, or one no bot wrote: the newest sample is found without the device's row.
    db.store_batch(every_5s("gone", NOW - 20 * DAY, 120, mem_percent=70.0), [0.1] * 120, 1, [])

    retention.downsample(NOW, DAYS)

    gone = db.latest_sample("gone")
    assert gone is not None
    assert gone.ts == NOW - 20 * DAY + 300
    assert gone.metrics == {"cpu_percent": 29.5, "mem_percent": 70.0}


def test_sqlite_gives_the_freed_space_back_to_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "rigwatch.sqlite3"
    database = db.open_database(f"sqlite:///{path}")
    try:
        for day in range(3):
            store_samples(every_5s("pc1", NOW - (30 - day) * DAY, 17280, mem_percent=50.0, disk_percent=20.0))
        database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # the samples are in the file, not in its log
        before = path.stat().st_size

        retention.downsample(NOW, DAYS)

        assert database.execute_sql("PRAGMA freelist_count").fetchone()[0] == 0
        database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        assert path.stat().st_size < before / 10
    finally:
        database.close()
