"""Forecasts of disk, memory and swap: the trend, its episodes, and its state rebuilt from the store."""

from __future__ import annotations

import random
from itertools import count, groupby
from operator import itemgetter

import peewee as pw
import pytest
from scipy.stats import theilslopes

from agent.wire import Sample
from bot import db
from bot.pipeline.forecast import REBUILD_S, TRENDED, WINDOW_BUCKETS, Forecast, Forecaster, theil_sen
from tests.fakes.samples import with_devices

T0 = 1764226800.0  # 2025-11-27 07:00:00 UTC
HORIZON_S = 4 * 3600
MINUTE = 60.0
_ids = count(1)


def feed(forecaster: Forecaster, start: float, values: list[float], step: float = MINUTE, device: str = "pc1",
         name: str = "disk_percent") -> tuple[list[Forecast], float]:
    """One sample per `step` seconds from `start`; the forecasts that came due, and the time after the last."""
    due = []
    for index, value in enumerate(values):
        due += forecaster.observe([(next(_ids), device, start + index * step, {name: value}, None, None)])
    return due, start + len(values) * step


def filling(start: float, minutes: int, per_10_min: float = 1.0) -> list[float]:
    """A disk that grows by `per_10_min` points every 10 minutes, sampled every minute."""
    return [min(100.0, start + per_10_min * (minute // 10)) for minute in range(minutes)]


def alerting(forecaster: Forecaster, start: float, values: list[float], step: float = MINUTE,
             device: str = "pc1") -> tuple[list[Forecast], float]:
    """Feed samples as the bot does: every forecast that comes due is alerted. Returns those."""
    alerted = []
    for index, value in enumerate(values):
        observed = (next(_ids), device, start + index * step, {"disk_percent": value}, None, None)
        for forecast in forecaster.observe([observed]):
            forecaster.mark_alerted(forecast)
            alerted.append(forecast)
    return alerted, start + len(values) * step


@pytest.mark.parametrize("points", [2, 3, 4, 7, WINDOW_BUCKETS])
def test_the_trend_is_the_theil_sen_line_of_scipy(points: int) -> None:
    rng = random.Random(points)
    for _ in range(20):
        times = [T0 + 600.0 * i + 300.0 for i in sorted(rng.sample(range(40), points))]
        values = [rng.choice([50.0, rng.uniform(0.0, 100.0)]) for _ in times]  # ties, as in a flat metric

        expected = theilslopes(values, times, method="joint")

        assert theil_sen(times, values) == pytest.approx((expected.slope, expected.intercept), rel=1e-9)


def test_a_disk_filling_1_percent_every_10_minutes_from_80_is_forecast_once_before_it_reaches_95() -> None:
    forecaster = Forecaster(HORIZON_S)
    values = filling(80.0, 300)  # past 97 % and on to 100 %

    alerted, _ = alerting(forecaster, T0, values)

    assert len(alerted) == 1, "one fill, one forecast"
    [forecast] = alerted
    assert forecast.metric == "disk_percent" and forecast.device == "pc1"
    assert forecast.level < 95
    assert forecast.slope_per_h == pytest.approx(6.0, rel=0.1)
    assert forecast.eta_s == pytest.approx((97 - forecast.level) / 6.0 * 3600, rel=0.1)


def test_due_forecasts_come_back_until_one_is_alerted() -> None:
    forecaster = Forecaster(HORIZON_S)
    due, now = feed(forecaster, T0, filling(80.0, 60))
    assert len(due) > 1, "a forecast that was not alerted (not above its usual level yet) is due again later"

    forecaster.mark_alerted(due[-1])
    more, _ = feed(forecaster, now, filling(86.0, 60))

    assert more == []


def test_a_flat_disk_at_90_never_is() -> None:
    forecaster = Forecaster(HORIZON_S)

    due, _ = feed(forecaster, T0, [90.0 + (minute % 3) * 0.1 for minute in range(10 * 60)])

    assert due == []
    [forecast] = forecaster.forecasts("pc1").values()
    assert forecast is not None and not forecast.within(HORIZON_S)


def test_a_disk_filled_then_cleaned_does_not_keep_alerting_and_a_new_fill_alerts_again() -> None:
    forecaster = Forecaster(HORIZON_S)

    alerted, now = alerting(forecaster, T0, filling(80.0, 120))
    assert len(alerted) == 1
    alerted, now = alerting(forecaster, now, [50.0] * 180)
    assert alerted == []
    assert not forecaster.forecasts("pc1")["disk_percent"] or \
        not forecaster.forecasts("pc1")["disk_percent"].within(HORIZON_S), "the cleaned disk has no forecast"
    assert forecaster.alerted == set(), "the cleanup ended the episode"

    alerted, _ = alerting(forecaster, now, filling(50.0, 300, per_10_min=2.0))
    assert len(alerted) == 1, "a new fill is a new episode"


def test_one_outlier_sample_does_not_trigger_a_forecast() -> None:
    forecaster = Forecaster(HORIZON_S)
    values = [90.0] * 600
    values[300] = 99.9

    due, _ = feed(forecaster, T0, values)

    assert due == []


def test_one_outlier_sample_does_not_cancel_a_forecast() -> None:
    forecaster = Forecaster(HORIZON_S)
    alerted, now = alerting(forecaster, T0, filling(80.0, 60))
    assert len(alerted) == 1

    alerted, now = alerting(forecaster, now, [86.0, 86.0, 20.0, 86.0, 86.0, 86.0, 86.0, 86.0, 86.0, 86.0])
    alerted_after, _ = alerting(forecaster, now, filling(87.0, 30))

    assert alerted + alerted_after == [], "the episode went on: a cancelled one would alert again"
    forecast = forecaster.forecasts("pc1")["disk_percent"]
    assert forecast is not None and forecast.within(HORIZON_S)


def test_one_outlier_of_a_device_that_reports_every_10_minutes_neither_triggers_nor_cancels() -> None:
    flat = Forecaster(HORIZON_S)
    values = [60.0] * 30
    values[15] = 99.0
    due, _ = feed(flat, T0, values, step=600)
    assert due == []

    values = [70.0 + 2 * i for i in range(12)]
    values[8] = 5.0
    alerted, _ = alerting(Forecaster(HORIZON_S), T0, values, step=600, device="pi")
    assert len(alerted) == 1


def test_memory_and_swap_are_forecast_too_and_other_metrics_are_not() -> None:
    forecaster = Forecaster(HORIZON_S)
    due = []
    for minute in range(90):
        metrics = {"mem_percent": 70 + minute / 5, "swap_percent": 20 + minute / 3, "cpu_percent": minute}
        due += forecaster.observe([(next(_ids), "db1", T0 + minute * MINUTE, metrics, None, None)])

    assert {f.metric for f in due} == {"mem_percent", "swap_percent"}
    assert set(forecaster.forecasts("db1")) == {"mem_percent", "swap_percent"}


def test_each_filesystem_is_forecast_by_its_mount_point_instead_of_the_fullest() -> None:
    forecaster = Forecaster(HORIZON_S)
    deep = "/var/lib/postgresql/16/main/pg_wal/archive"  # longer than an incident's metric column
    due = []
    for minute in range(90):
        filesystems = {"/": 95.0, deep: 70 + minute / 5, "/boot": 30.0}
        metrics = {"disk_percent": max(filesystems.values()), "mem_percent": 40.0}
        due += forecaster.observe([(next(_ids), "db1", T0 + minute * MINUTE, metrics, filesystems, None)])

    assert {(f.metric, round(f.slope_per_h)) for f in due} == {(f"disk:{deep}", 12)}
    assert list(forecaster.forecasts("db1")) == ["disk:/", "disk:/boot", f"disk:{deep}", "mem_percent"]


def test_the_state_of_a_device_stays_bounded_over_a_long_run() -> None:
    forecaster = Forecaster(HORIZON_S)

    feed(forecaster, T0, [50.0 + (minute % 7) for minute in range(3 * 24 * 60)])

    assert len(forecaster.trends["pc1"]["disk_percent"].medians) <= WINDOW_BUCKETS + 1


def test_a_device_that_reports_every_second_is_forecast_as_one_that_reports_every_20_seconds() -> None:
    chatty, calm = Forecaster(HORIZON_S), Forecaster(HORIZON_S)

    chatty_due, _ = feed(chatty, T0, [80.0 + second // 600 for second in range(3600)], step=1.0)
    calm_due, _ = feed(calm, T0, [80.0 + second // 600 for second in range(0, 3600, 20)], step=20.0)

    assert [(f.level, f.slope_per_h, f.eta_s) for f in chatty_due] == [(f.level, f.slope_per_h, f.eta_s)
                                                                      for f in calm_due] != []
    assert len(chatty.trends["pc1"]["disk_percent"].open_values) <= 30, "one value per 20 s is kept"


def test_the_state_rebuilt_from_the_store_gives_the_same_forecasts_as_the_one_built_live(
    database: pw.Database,
) -> None:
    live = Forecaster(HORIZON_S)
    alerted: list[Forecast] = []
    start = T0 - 10 * 3600
    for minute in range(5 * 60):  # hours of history, then pc1's disk and db1's memory fill; pc2 stays flat
        ts = start + minute * MINUTE
        fill = max(0, minute - 200)
        samples = [
            Sample("pc1", ts, {"disk_percent": 50.0 + (minute % 4) if fill == 0 else 80.0 + fill // 10}),
            Sample("pc2", ts + 7, {"disk_percent": 40.0, "mem_percent": 30.0 + minute % 5}),
            Sample("db1", ts + 13, {"mem_percent": 60.0 + minute / 10, "cpu_percent": 50.0}),
            Sample("srv", ts + 17, {"disk_percent": 80.0 + fill // 10},
                   filesystems={"/": 30.0, "/data": 80.0 + fill // 10}),
        ]
        new = db.store_batch(samples, [None] * 4, None, [], on_stored=with_devices)
        for forecast in live.observe([(s.id, s.device, s.ts, s.metrics, s.filesystems, None) for s in new]):
            live.mark_alerted(forecast)
            alerted.append(forecast)
    assert {(f.device, f.metric) for f in alerted} == {("pc1", "disk_percent"), ("db1", "mem_percent"),
                                                        ("srv", "disk:/data")}

    rebuilt = Forecaster(HORIZON_S)  # as after an upgrade from a version that kept no trends (bot/pipeline/learnt.py)
    rebuilt.begin_restoring()
    rebuilt.expect_alerted({(f.device, f.metric) for f in alerted})  # the open forecast incidents
    recent = db.recent_per_device(REBUILD_S, list(TRENDED))
    for device, samples in groupby(recent, key=itemgetter(1)):
        rebuilt.restore(device, None, [(*sample, None) for *sample, _readings in samples])
    rebuilt.finish_restoring()

    for device in ("pc1", "pc2", "db1", "srv"):
        assert rebuilt.forecasts(device) == live.forecasts(device)
    assert rebuilt.alerted == live.alerted, "an episode alerted before the restart is not alerted again"


def daily_logs(days: int, per_hour: float = 3.0) -> list[float]:
    """Logs that grow from 20 % at midnight by `per_hour` and are rotated every midnight, a sample a minute."""
    return [20.0 + per_hour * (minute % 1440) / 60 for minute in range(days * 1440)]


def test_logs_rotated_every_midnight_alert_while_the_cycle_is_new_and_never_once_it_is_learnt() -> None:
    forecaster = Forecaster(HORIZON_S)
    midnight = T0 - 7 * 3600  # 2025-11-27 00:00 UTC

    learning, after = alerting(forecaster, midnight, daily_logs(3))
    learnt, _ = alerting(forecaster, after, daily_logs(4))

    assert len(learning) == 3  # each evening the edge is in sight, before a midnight rotation has been seen
    assert learnt == []


def test_a_learnt_daily_cycle_still_alerts_when_the_edge_comes_before_the_rotation() -> None:
    forecaster = Forecaster(HORIZON_S)
    midnight = T0 - 7 * 3600
    _, after = alerting(forecaster, midnight, daily_logs(4))

    faster, _ = alerting(forecaster, after, daily_logs(1, per_hour=6.0))  # 97 % at 13:00, long before midnight

    assert len(faster) == 1 and faster[0].ts < after + 13 * 3600


def test_a_learnt_daily_cycle_alerts_soon_after_the_rotation_it_expected_did_not_come() -> None:
    forecaster = Forecaster(HORIZON_S)
    midnight = T0 - 7 * 3600
    _, after = alerting(forecaster, midnight, daily_logs(4))

    missed, _ = alerting(forecaster, after, [92.0 + 3.0 * minute / 60 for minute in range(150)])

    assert len(missed) == 1 and missed[0].ts - after <= 50 * MINUTE  # 92 % at midnight: full at 02:30
