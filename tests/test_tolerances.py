"""Machine tolerances against a real SQLite file and a real PostgreSQL server, with the real model the bot trains
on an empty store: a ❌ silences that machine at that value from its next sample and no other, the hard ceiling
alerts whatever anyone pressed, Undo restores, and "❌ Wrong forecast" holds that forecast until the metric is
back in its usual range."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.wire import Sample
from bot import db
from bot.chat import alerts, forecasts, tolerance
from bot.db import ForecastHold, Incident, Label, Tolerance
from bot.db import incidents as stored
from bot.db import tolerances as stored_tolerances
from bot.pipeline import tolerating
from bot.pipeline.active_model import ActiveModel
from bot.pipeline.baselines import Baselines
from bot.pipeline.decide import Decider
from bot.pipeline.forecast import Forecaster
from bot.pipeline.lifecycle import Incidents
from bot.pipeline.poller import predict
from bot.pipeline.tolerating import Tolerances
from ml.store import open_store
from schema.domain import Action, IncidentDetail, State
from tests.fakes.incidents import T0

HEALTHY = {"cpu_percent": 20.0, "load_1m": 0.3, "mem_percent": 50.0, "swap_percent": 5.0, "disk_percent": 50.0}
BOB, ALICE, ADMIN = 5, 6, 7


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ActiveModel:
    """The model the bot trains from synthetic data on an empty store, as on its first start."""
    active = ActiveModel(open_store(f"file:{tmp_path_factory.mktemp('models')}"))
    active.ensure()
    return active


@pytest.fixture
def tolerances(database: object) -> Tolerances:
    return Tolerances()


@pytest.fixture
def decider(incidents: Incidents, model: ActiveModel, tolerances: Tolerances) -> Decider:
    """The poller's decider: the real model's drivers, read with each machine's tolerances."""
    return Decider(incidents, model.drivers, Forecaster(4 * 3600, tolerances.edge), Baselines(), tolerances)


def ingest_batch(decider: Decider, model: ActiveModel, tolerances: Tolerances, samples: list[Sample]) -> list[float]:
    """A batch predicted and stored as the poller does it, deciding in its transaction; P(stressed) of each."""
    values, predictions, version = predict(model, samples, tolerances)
    now = samples[-1].ts
    db.store_batch(samples, predictions, version, [], on_stored=lambda new: decider.decide(new, now=now),
                   values=values)
    return [p for p in predictions if p is not None]


def ingest(decider: Decider, model: ActiveModel, tolerances: Tolerances, device: str, ts: float,
           **metrics: float) -> float:
    """One sample, as a batch of its own; its P(stressed)."""
    (p,) = ingest_batch(decider, model, tolerances, [Sample(device, ts, {**HEALTHY, **metrics})])
    return p


def open_incidents(device: str) -> list[Incident]:
    return list(Incident.select().where((Incident.device == device) & (Incident.state == State.OPEN)))


def test_a_wrong_prediction_silences_that_machine_at_that_value_from_its_next_sample_and_no_other(
    decider: Decider, model: ActiveModel, tolerances: Tolerances,
) -> None:
    assert ingest(decider, model, tolerances, "build1", T0, disk_percent=98.6) > 0.9
    (alert,) = open_incidents("build1")
    assert alert.detail.drivers == ["disk_percent"]

    pressed = stored.press(alert.id, Action.WRONG_PREDICTION, BOB, "Bob", T0 + 3, tolerating.wanted)

    assert pressed.state == State.FALSE_ALARM and pressed.detail.tolerated == {"disk_percent": 98.6}
    label = Label.get()
    assert (label.value, label.tolerance) == (0, True), "stored as now, marked as one that became a tolerance"
    edited = alerts.alert(pressed, {}, T0 + 4, tolerances.of("build1"))
    assert "Disk up to 98.6 % is now normal for build1 (❌ by Bob)" in edited
    buttons = [b.text for row in alerts.keyboard(pressed).inline_keyboard for b in row]
    assert buttons == ["↩️ Undo", "📈 Chart", "📄 Report"]

    assert ingest(decider, model, tolerances, "build1", T0 + 5, disk_percent=98.6) < 0.1, "from its next sample"
    assert ingest(decider, model, tolerances, "build1", T0 + 10, disk_percent=99.4) < 0.5, "below the ceiling"
    assert open_incidents("build1") == []
    assert ingest(decider, model, tolerances, "build2", T0 + 10, disk_percent=98.6) > 0.9, "no other machine"
    assert len(open_incidents("build2")) == 1

    assert ingest(decider, model, tolerances, "build1", T0 + 15, disk_percent=99.9) > 0.9, "past the hard ceiling"
    (past,) = open_incidents("build1")
    assert past.detail.drivers == ["disk_percent"]
    assert ("• Disk (root) 99.9 % (tolerated up to 98.6 % on build1, past its hard ceiling of 99.5 %)"
            in alerts.alert(past, {}, T0 + 20, tolerances.of("build1")))
    assert tolerating.wanted(past.detail) == {}, "a ❌ past the ceiling teaches the machine nothing"


def test_a_wrong_prediction_tolerates_every_metric_that_pushed_not_only_the_three_it_names(
    decider: Decider, model: ActiveModel, tolerances: Tolerances,
) -> None:
    everything = {"cpu_percent": 99.0, "mem_percent": 97.5, "swap_percent": 80.0, "cpu_temp_c": 97.0, "load_1m": 3.9,
                  "disk_percent": 96.0}
    assert ingest(decider, model, tolerances, "hpc1", T0, **everything) > 0.99
    (alert,) = open_incidents("hpc1")
    assert len(alert.detail.drivers) == 3, "its message names the strongest three"

    pressed = stored.press(alert.id, Action.WRONG_PREDICTION, BOB, "Bob", T0 + 3, tolerating.wanted)

    assert set(pressed.detail.tolerated) == {"mem_percent", "swap_percent", "cpu_temp_c", "load_1m", "disk_percent"}
    assert ingest(decider, model, tolerances, "hpc1", T0 + 5, **everything) < 0.7, "the same sample: normal now"

    past = {**everything, "mem_percent": 99.8}
    ingest(decider, model, tolerances, "hpc2", T0, **past)
    (other,) = open_incidents("hpc2")
    pressed = stored.press(other.id, Action.WRONG_PREDICTION, BOB, "Bob", T0 + 3, tolerating.wanted)
    assert "Not tolerated, past its hard ceiling: Memory at 99.8 % (ceiling 99.5 %)" in alerts.alert(
        pressed, {}, T0 + 4, tolerances.of("hpc2"))


def test_a_wrong_prediction_on_a_full_filesystem_tolerates_that_filesystem_and_not_the_others(
    decider: Decider, model: ActiveModel, tolerances: Tolerances,
) -> None:
    def nas(ts: float, root: float, data: float) -> float:
        metrics = {**HEALTHY, "disk_percent": max(root, data)}
        sample = Sample("nas1", ts, metrics, filesystems={"/": root, "/data": data})
        (p,) = ingest_batch(decider, model, tolerances, [sample])
        return p

    assert nas(T0, 40.0, 98.6) > 0.9
    (alert,) = open_incidents("nas1")
    pressed = stored.press(alert.id, Action.WRONG_PREDICTION, BOB, "Bob", T0 + 3, tolerating.wanted)

    assert pressed.detail.tolerated == {"disk:/data": 98.6}
    assert "Disk /data up to 98.6 % is now normal for nas1 (❌ by Bob)" in alerts.alert(pressed, {}, T0 + 4)
    assert nas(T0 + 5, 40.0, 98.6) < 0.1, "/data at that value is normal on nas1 now"
    assert nas(T0 + 10, 98.6, 98.6) > 0.9, "/ at the same value is not"
    (root,) = open_incidents("nas1")
    assert "• Disk / 98.6 %" in alerts.alert(root, {}, T0 + 11, tolerances.of("nas1"))
    assert "Disk /data up to 98.6 %" in tolerance.tolerance_list("nas1", stored_tolerances.tolerances("nas1"))


def test_a_second_wrong_raises_a_tolerance_never_lowers_it_and_the_ceiling_caps_what_is_tolerated(
    database: object,
) -> None:
    assert stored_tolerances.tolerate("db1", {"mem_percent": 97.0}, None, None, BOB, "Bob", T0) == {"mem_percent": 97.0}
    assert stored_tolerances.tolerate("db1", {"mem_percent": 95.0}, None, None, ALICE, "Alice", T0 + 1) == {}
    assert stored_tolerances.tolerate("db1", {"mem_percent": 98.0}, None, None, ALICE, "Alice", T0 + 2) == {
        "mem_percent": 98.0}
    assert [(t.metric, t.value, t.user_name) for t in stored_tolerances.tolerances("db1")] == [
        ("mem_percent", 98.0, "Alice")]

    detail = IncidentDetail(drivers=["swap_percent", "cpu_temp_c", "load_1m", "cpu_percent"],
                            peak={"swap_percent": 80.0, "cpu_temp_c": 101.0, "load_1m": 3.9, "cpu_percent": 100.0})
    assert tolerating.wanted(detail) == {"swap_percent": 80.0, "load_1m": 3.9}, (
        "101 °C is past the 100 °C ceiling; a busy CPU takes no tolerance of its own")
    assert tolerating.edge("disk_percent", 98.6) == 99.5, "a forecast aims at the ceiling at most"
    assert tolerating.edge("swap_percent", 40.0) == 90.0


def test_undo_belongs_to_whoever_pressed_or_an_admin_and_restores_the_alert(
    decider: Decider, model: ActiveModel, tolerances: Tolerances,
) -> None:
    ingest(decider, model, tolerances, "build1", T0, disk_percent=98.6)
    (alert,) = open_incidents("build1")
    stored.press(alert.id, Action.WRONG_PREDICTION, BOB, "Bob", T0 + 3, tolerating.wanted)

    _incident, removed = stored.undo_tolerance(alert.id, ALICE, "Alice", False, T0 + 4)
    assert removed is None and Tolerance.select().count() == 1
    assert tolerance.undone("build1", removed) == "Only admins or whoever pressed ❌ can undo this."

    undone, removed = stored.undo_tolerance(alert.id, BOB, "Bob", False, T0 + 5)
    assert removed == ["disk_percent"] and Tolerance.select().count() == 0
    assert "↩️ Undone by Bob: build1 alerts on Disk as every machine does." in alerts.alert(undone, {}, T0 + 6)
    assert [b.text for row in alerts.keyboard(undone).inline_keyboard for b in row] == ["📈 Chart", "📄 Report"]
    assert stored.undo_tolerance(alert.id, ADMIN, "Admin", True, T0 + 6)[1] == [], "nothing left to undo"

    assert ingest(decider, model, tolerances, "build1", T0 + 10, disk_percent=98.6) > 0.9
    assert len(open_incidents("build1")) == 1, "it alerts again at once"


def test_another_process_sees_a_new_tolerance_at_its_next_batch(
    decider: Decider, model: ActiveModel, tolerances: Tolerances,
) -> None:
    other = Tolerances()  # another process's cache, refreshed by its own batches
    assert ingest(decider, model, other, "build1", T0, disk_percent=98.6) > 0.9
    stored_tolerances.tolerate("build1", {"disk_percent": 98.6}, None, None, BOB, "Bob", T0 + 1)

    assert ingest(decider, model, other, "build1", T0 + 5, disk_percent=98.6) < 0.1
    stored_tolerances.untolerate("build1", ["disk_percent"])
    assert ingest(decider, model, other, "build1", T0 + 10, disk_percent=98.6) > 0.9


def test_a_wrong_forecast_holds_that_forecast_until_the_metric_is_back_in_its_usual_range(
    incidents: Incidents, model: ActiveModel, tolerances: Tolerances,
) -> None:
    # Usual ranges read afresh at every look: the simulated hours pass in seconds.
    decider = Decider(incidents, model.drivers, Forecaster(4 * 3600, tolerances.edge), Baselines(refresh_s=0.0),
                      tolerances)
    minute = 60.0

    def fill(device: str, start: int, end: int, level: float, per_minute: float, every: int = 1) -> None:
        """A sample a minute (or every few), in batches of half an hour."""
        samples = [Sample(device, T0 + i * minute, {**HEALTHY, "disk_percent": level + (i - start) * per_minute})
                   for i in range(start, end, every)]
        for at in range(0, len(samples), 30):
            ingest_batch(decider, model, tolerances, samples[at:at + 30])

    def forecasts(device: str) -> list[Incident]:
        return list(Incident.select().where((Incident.device == device) & (Incident.kind == "forecast")))

    for device in ("pc1", "pc2"):
        fill(device, 0, 1440, 40.0, 0.0, every=10)  # a day at 40 %: its usual range
        fill(device, 1440, 1590, 60.0, 0.15)  # then 9 %/h from 60 %
    (first,) = forecasts("pc1")
    pressed = stored.press(first.id, Action.WRONG_FORECAST, BOB, "Bob", T0 + 1590 * minute)
    assert alerts.pressed(Action.WRONG_FORECAST, "pc1", metric=pressed.detail.metric) == (
        "Thanks: stored as a wrong forecast. No forecast of disk on pc1 until it is back in its usual range.")
    assert db.ForecastLabel.get().value == 0, "stored as now"

    for device in ("pc1", "pc2"):
        fill(device, 1590, 1740, 82.5, 0.0)  # it stops: the forecast no longer holds
        fill(device, 1740, 1860, 82.5, 0.1)  # and fills again, still above its usual range
    assert [i.state for i in forecasts("pc2")] == ["resolved", "open"], "without the ❌: the same fill alerts again"
    assert len(forecasts("pc1")) == 1, "the same fill: no new alert"
    assert ForecastHold.select().count() == 1

    fill("pc1", 1860, 1900, 40.0, 0.0)  # cleaned up: back in its usual range
    assert ForecastHold.select().count() == 0
    fill("pc1", 1900, 2100, 60.0, 0.15)
    assert len(forecasts("pc1")) == 2, "a new fill alerts again"


def test_a_tolerated_machine_forecasts_toward_its_own_edge(
    database: object, tmp_path: Path, tolerances: Tolerances,
) -> None:
    stored_tolerances.tolerate("build1", {"disk_percent": 98.6}, None, None, BOB, "Bob", T0)
    tolerances.refresh()
    forecaster = Forecaster(4 * 3600, tolerances.edge)
    for i in range(120):  # 1.2 %/h from 92 %
        for device in ("build1", "build2"):
            forecaster.observe([(i, device, T0 + i * 60, {"disk_percent": 92 + i * 0.02}, None, None)])

    build1, build2 = forecaster.forecasts("build1")["disk_percent"], forecaster.forecasts("build2")["disk_percent"]
    assert build1 is not None and build2 is not None and build1.eta_s and build2.eta_s
    assert build2.eta_s / 3600 == pytest.approx((97 - build2.level) / build2.slope_per_h, rel=0.01)
    assert build1.eta_s / 3600 == pytest.approx((99.5 - build1.level) / build1.slope_per_h, rel=0.01)
    text = forecasts.forecast_alert(build1, None, tolerances.of("build1"))
    assert "it needs an intervention from 99.5 % on this machine" in text
