"""What the pipeline learnt survives a restart: the trends (with their daily cycles) and the usual ranges are kept in
the database as they are learnt, and a start reads one row per machine back, not the machines' history."""

from __future__ import annotations

import peewee as pw

from agent.wire import Sample
from bot import db
from bot.chat.status import device_status
from bot.db import learnt as kept
from bot.pipeline import learnt
from bot.pipeline.baselines import Baselines
from bot.pipeline.decide import Decider
from bot.pipeline.forecast import SAVE_EVERY_S, Forecast, Forecaster
from schema.tables import TrendState, UsualRange
from tests.fakes.samples import stored, with_devices

T0 = 1764226800.0  # 2025-11-27 07:00:00 UTC
MINUTE = 60.0
HORIZON_S = 4 * 3600


def fleet(minute: int, start: float) -> list[Sample]:
    """One minute of four machines: pc1's disk fills from minute 200, db1's memory grows, pc2 stays flat, srv's
    /data fills beside a quiet /."""
    ts = start + minute * MINUTE
    fill = max(0, minute - 200)
    return [
        Sample("pc1", ts, {"disk_percent": 50.0 + (minute % 4) if fill == 0 else 80.0 + fill // 10}),
        Sample("pc2", ts + 7, {"disk_percent": 40.0, "mem_percent": 30.0 + minute % 5}),
        Sample("db1", ts + 13, {"mem_percent": 60.0 + minute / 10, "cpu_percent": 50.0}),
        Sample("srv", ts + 17, {"disk_percent": 80.0 + fill // 10},
               filesystems={"/": 30.0, "/data": 80.0 + fill // 10}),
    ]


def decide(decider: Decider, samples: list[Sample], now: float) -> None:
    """Store and decide a batch as the poller does: what it taught is kept in its transaction."""
    db.store_batch(samples, [0.1] * len(samples), 1, [], on_stored=lambda new: decider.decide(new, now=now))


def learnt_state(forecaster: Forecaster) -> dict[str, dict[str, tuple]]:
    """Everything the forecaster learnt, device by device and trend by trend."""
    return {device: {name: trend.dump() for name, trend in trends.items()}
            for device, trends in forecaster.trends.items()}


def restarted() -> tuple[Forecaster, learnt.Restored]:
    forecaster = Forecaster(HORIZON_S)
    forecaster.begin_restoring()
    return forecaster, learnt.restore(forecaster)


def test_a_restart_takes_back_the_same_trends_from_one_kept_row_per_machine_and_the_samples_after_it(
    decider: Decider,
) -> None:
    start = T0 - 10 * 3600
    for minute in range(5 * 60):  # the bot's clock is the samples': a machine's trends are written every 2 min
        decide(decider, fleet(minute, start), now=start + minute * MINUTE + 30)
    live = decider.forecaster
    assert {(d, m) for d, m in live.alerted} == {("pc1", "disk_percent"), ("db1", "mem_percent"),
                                                ("srv", "disk:/data")}
    assert TrendState.select().count() == 4

    forecaster, done = restarted()

    assert learnt_state(forecaster) == learnt_state(live)
    assert forecaster.slots == live.slots
    for device in ("pc1", "pc2", "db1", "srv"):
        assert forecaster.forecasts(device) == live.forecasts(device)
    assert forecaster.alerted == live.alerted, "an episode alerted before the restart is not alerted again"
    assert (done.states, done.rebuilt) == (4, 0)
    # The last minute's samples were stored after the trends were last written: read back, and only those.
    assert 0 < done.after <= 4 * SAVE_EVERY_S / MINUTE


def test_a_restart_reads_as_many_rows_for_a_long_history_as_for_a_short_one(decider: Decider) -> None:
    start = T0 - 3600
    for minute in range(60):
        decide(decider, [Sample(f"m{n:03}", start + minute * MINUTE, {"disk_percent": 50.0 + minute / 60,
                                                                        "mem_percent": 40.0}) for n in range(50)],
               now=start + minute * 3 * SAVE_EVERY_S)  # every machine's trends written with each batch
    _, short = restarted()
    for day in range(1, 4):  # three days more of history, before the hour the trends were learnt from
        older = start - day * 86400
        db.store_batch([Sample(f"m{n:03}", older + minute * 120, {"disk_percent": 50.0}) for n in range(50)
                        for minute in range(720)], [0.1] * 36000, 1, [], on_stored=with_devices)
    assert db.Metric.select().count() == 50 * 60 + 3 * 36000

    forecaster, long = restarted()

    assert (long.states, long.after, long.rebuilt, long.recent) == (short.states, short.after, 0, 0) == (50, 0, 0, 0)
    assert learnt_state(forecaster) == learnt_state(decider.forecaster)


def test_samples_that_arrive_while_the_trends_come_back_are_taken_after_them(database: pw.Database) -> None:
    live = Forecaster(HORIZON_S)
    start = T0 - 10 * 3600
    for minute in range(240):
        new = db.store_batch(fleet(minute, start), [0.1] * 4, 1, [], on_stored=with_devices)
        live.observe([(s.id, s.device, s.ts, s.metrics, s.filesystems, None) for s in new])
        if minute == 200:
            with db.transaction():
                learnt.save(live, Baselines(), now=start + minute * MINUTE)
    forecaster = Forecaster(HORIZON_S)
    forecaster.begin_restoring()
    late = []
    for minute in range(240, 300):  # ingestion goes on while the trends are read back
        new = db.store_batch(fleet(minute, start), [0.1] * 4, 1, [], on_stored=with_devices)
        late = [(s.id, s.device, s.ts, s.metrics, s.filesystems, None) for s in new]
        live.observe(late)
        assert forecaster.observe(late) == []
    assert not forecaster.back("pc1") and forecaster.forecasts("pc1") == {}

    learnt.restore(forecaster)

    assert forecaster.back("pc1")
    assert learnt_state(forecaster) == learnt_state(live)
    forecaster.observe(late)  # a sample read back and held both is taken once
    assert learnt_state(forecaster) == learnt_state(live)


def test_an_upgrade_without_kept_trends_rebuilds_them_from_the_last_hours_and_keeps_them(
    database: pw.Database,
) -> None:
    live = Forecaster(HORIZON_S)
    start = T0 - 10 * 3600
    for minute in range(5 * 60):  # a version that kept no trends
        new = db.store_batch(fleet(minute, start), [0.1] * 4, 1, [], on_stored=with_devices)
        live.observe([(s.id, s.device, s.ts, s.metrics, s.filesystems, None) for s in new])

    forecaster, done = restarted()

    assert (done.states, done.rebuilt) == (0, 4)
    for device in ("pc1", "pc2", "db1", "srv"):
        assert forecaster.forecasts(device) == live.forecasts(device)
    with db.transaction():
        assert learnt.save(forecaster, Baselines(), now=T0) == 4, "kept, so that the next start reads no history"
    _, again = restarted()
    assert (again.states, again.after, again.rebuilt) == (4, 0, 0)


def test_a_machine_without_kept_trends_beside_others_is_rebuilt_alone(decider: Decider) -> None:
    start = T0 - 3 * 3600
    for minute in range(180):
        decide(decider, fleet(minute, start), now=start + minute * MINUTE + 600)
    TrendState.delete().where(TrendState.device == "db1").execute()

    forecaster, done = restarted()

    assert (done.states, done.rebuilt) == (3, 1)
    assert forecaster.forecasts("db1") == decider.forecaster.forecasts("db1")


def daily_logs(days: int, per_hour: float = 3.0) -> list[float]:
    """Logs that grow from 20 % at midnight by `per_hour` and are rotated every midnight, a sample a minute."""
    return [20.0 + per_hour * (minute % 1440) / 60 for minute in range(days * 1440)]


def alerting(forecaster: Forecaster, start: float, values: list[float]) -> tuple[list[Forecast], float]:
    """Store and take a sample a minute as the bot does, keeping the trends as it goes; every forecast that comes
    due is alerted. Returns those, and the time after the last sample."""
    alerted = []
    for hour in range(0, len(values), 60):
        batch = [Sample("logs", start + (hour + m) * MINUTE, {"disk_percent": v})
                 for m, v in enumerate(values[hour:hour + 60])]
        with db.transaction():
            new = db.store_batch(batch, [0.1] * len(batch), 1, [], on_stored=with_devices)
            for forecast in forecaster.observe([(s.id, s.device, s.ts, s.metrics, None, None) for s in new]):
                forecaster.mark_alerted(forecast)
                alerted.append(forecast)
            learnt.save(forecaster, Baselines(), now=batch[-1].ts)
    return alerted, start + len(values) * MINUTE


def test_a_learnt_daily_cycle_survives_a_restart(database: pw.Database) -> None:
    midnight = T0 - 7 * 3600  # 2025-11-27 00:00 UTC
    learning, after = alerting(Forecaster(HORIZON_S), midnight, daily_logs(4))
    assert len(learning) == 3, "each evening before the cycle was learnt"

    forecaster, _ = restarted()
    learnt_nights, _ = alerting(forecaster, after, daily_logs(3))

    assert learnt_nights == []
    forgetful, _ = alerting(Forecaster(HORIZON_S), after + 3 * 86400, daily_logs(3))
    assert len(forgetful) == 3, "a bot that forgot the cycle alerts until it learnt it again"


def test_trends_are_written_at_most_every_save_every_s_and_at_most_so_many_a_batch() -> None:
    forecaster = Forecaster(HORIZON_S, save_every_s=60.0)
    forecaster.observe([(n, f"m{n:04}", T0, {"disk_percent": 50.0}, None, None) for n in range(1200)])

    first = forecaster.unsaved(T0, most=500)
    second = forecaster.unsaved(T0 + 1, most=500)
    third = forecaster.unsaved(T0 + 2, most=500)
    assert [len(first), len(second), len(third)] == [500, 500, 200]
    assert len({device for device, _ts, _state in first + second + third}) == 1200

    forecaster.observe([(n, f"m{n:04}", T0 + 30, {"disk_percent": 50.0}, None, None) for n in range(1200)])
    assert forecaster.unsaved(T0 + 59, most=500) == [], "written less than a minute ago"
    assert len(forecaster.unsaved(T0 + 60, most=None)) == 500, "those written first are due first"
    assert len(forecaster.unsaved(T0 + 60, early=True)) == 700, "when the bot stops: all of them"
    assert forecaster.unsaved(T0 + 400) == []


def put(device: str, start: float, step: float, values: list[float]) -> None:
    samples = [Sample(device, start + i * step, {"disk_percent": value, "cpu_percent": 20.0})
               for i, value in enumerate(values)]
    db.store_batch(samples, [None] * len(samples), None, [], on_stored=with_devices)


def test_usual_ranges_are_kept_and_read_back_after_a_restart_until_they_are_an_hour_old(
    database: pw.Database,
) -> None:
    put("pc1", T0 - 2 * 86400, 600, [40.0 + i % 16 for i in range(288)])
    before = Baselines().get("pc1")
    kept.save_usual(Baselines().unsaved())  # nothing worked out by that one
    assert UsualRange.select().count() == 0
    baselines = Baselines()
    assert baselines.get("pc1") == before
    kept.save_usual(baselines.unsaved())
    assert UsualRange.select().count() == 2  # disk and CPU
    put("pc1", T0, 60, [90.0] * 3000)  # two days later the disk sits at 90 %

    assert Baselines().get("pc1") == before, "read back, not worked out again from the history"

    UsualRange.update(computed=UsualRange.computed - 3600).execute()
    assert Baselines().get("pc1")["disk_percent"].high == 90.0, "an hour old: worked out again"


def test_status_says_a_machine_s_trends_are_still_being_read_back_rather_than_that_it_has_none() -> None:
    forecaster = Forecaster(HORIZON_S)
    forecaster.begin_restoring()

    def shown() -> str:
        return device_status(stored("pc1", disk_percent=50.0), 0.7, 1, now=T0, forecasts=forecaster.forecasts("pc1"),
                             restoring=not forecaster.back("pc1"))

    assert "Forecast: the trends are being read back after a restart" in shown()
    forecaster.restore("pc1", None, [(1, "pc1", T0, {"disk_percent": 50.0}, None, None)])
    assert "Forecast: none yet" in shown()
