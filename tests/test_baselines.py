"""Each device's usual range, read from its stored history on SQLite and PostgreSQL."""

from __future__ import annotations

import peewee as pw
import pytest

from bot import db
from bot.db import learnt
from bot.pipeline.baselines import Baselines, Usual, usual_ranges
from tests.fakes.samples import series
from tests.fakes.scenario import wait_until

NOW = 1764226800.0
DAY = 86400.0


def put(device: str, start: float, step: float, values: list[float], name: str = "disk_percent") -> None:
    samples = series(device, start, [{name: value, "cpu_percent": 20.0} for value in values], step)
    db.store_batch(samples, [None] * len(samples), None, [])


def test_the_usual_range_is_the_10th_to_90th_percentile_of_the_last_7_days(database: pw.Database) -> None:
    put("pc1", NOW - 9 * DAY, 3600, [95.0] * 48)  # older than a week: forgotten
    put("pc1", NOW - 7 * DAY + 60, 600, [40.0 + i % 16 for i in range(7 * 144 - 1)])  # 40..55, evenly

    ranges = usual_ranges("pc1")

    assert ranges["disk_percent"].low == pytest.approx(41.5, abs=0.6)
    assert ranges["disk_percent"].high == pytest.approx(53.5, abs=0.6)
    assert ranges["cpu_percent"] == Usual(20.0, 20.0)
    assert "mem_percent" not in ranges, "a metric the device does not send has no range"


def test_a_burst_of_samples_counts_for_the_time_it_lasted(database: pw.Database) -> None:
    put("pc1", NOW - 2 * DAY, 600, [50.0] * 288)  # two days at 50 %, one sample every 10 minutes
    put("pc1", NOW - 3600, 1, [90.0] * 3600)  # then one hour at 90 %, one sample a second

    ranges = usual_ranges("pc1")

    assert ranges["disk_percent"].high == 50.0, "one hour in 49 is not this machine's usual"


def test_a_device_with_less_than_an_hour_of_history_has_no_usual_range_yet(database: pw.Database) -> None:
    put("young", NOW - 1800, 10, [50.0] * 180)

    assert usual_ranges("young") == {}
    assert usual_ranges("never-seen") == {}


def test_ranges_are_cached_and_read_again_once_the_cache_is_old(database: pw.Database) -> None:
    put("pc1", NOW - 2 * 3600, 60, [50.0] * 120)
    cached = Baselines()
    assert cached.get("pc1")["disk_percent"] == Usual(50.0, 50.0)

    put("pc1", NOW, 60, [70.0] * 300)

    assert cached.get("pc1")["disk_percent"] == Usual(50.0, 50.0), "read at most once an hour"
    assert Baselines(refresh_s=0).get("pc1")["disk_percent"].high == 70.0


def test_a_command_gets_the_last_ranges_at_once_however_old_and_they_are_worked_out_again_behind_it(
    database: pw.Database,
) -> None:
    put("pc1", NOW - 2 * 3600, 60, [50.0] * 120)
    ranges = Baselines(refresh_s=0)  # every range is old as soon as it is worked out
    assert ranges.known("pc1") is None, "never worked out: only get() reads the history"
    assert ranges.get("pc1")["disk_percent"] == Usual(50.0, 50.0)
    learnt.save_usual(ranges.unsaved())

    put("pc1", NOW, 60, [70.0] * 300)

    assert ranges.known("pc1")["disk_percent"] == Usual(50.0, 50.0), "the old one, without reading the history"
    wait_until(lambda: ranges.known("pc1")["disk_percent"].high == 70.0, what="worked out again in the background")
    restarted = Baselines(refresh_s=0)
    assert restarted.known("pc1")["disk_percent"] == Usual(50.0, 50.0), "after a restart: what was kept, however old"


def test_each_filesystem_has_its_own_usual_range_shown_beside_it(database: pw.Database) -> None:
    from agent.wire import Sample
    from bot.chat import status

    samples = [Sample("nas1", NOW - 7200 + 60 * i, {"disk_percent": 60.0 + i % 10, "cpu_percent": 5.0},
                      filesystems={"/": 20.0, "/data": 60.0 + i % 10}) for i in range(120)]
    db.store_batch(samples, [0.1] * len(samples), 1, [])

    ranges = usual_ranges("nas1")
    shown = status.device_status(db.latest_sample("nas1"), 0.7, 1, now=NOW, usual=ranges)

    assert ranges["disk:/"] == Usual(20.0, 20.0)
    assert ranges["disk:/data"].low == pytest.approx(60.5, abs=1) and ranges["disk:/data"].high == pytest.approx(
        68.5, abs=1)
    rows = [line for line in shown.splitlines() if line.startswith("Disk /")]
    assert "usually 20–20 %" in rows[0] and "usually 60–68 %" in rows[1], rows
