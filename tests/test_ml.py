"""The model judged as an operator would: every edge alerts, busy healthy machines do not, labels move it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import sklearn

from agent.vocabulary import KNOWN_METRICS
from ml import model
from ml.augment import clearly_normal, edge_range, synthetic
from ml.features import FEATURES, ZONES, table
from ml.scenarios import BACKGROUNDS, BUSY_HEALTHY, evaluate, scenarios
from ml.training import Trained, train

SAMPLES_PER_MACHINE = 4 * 60 * 12  # 4 hours at one sample every 5 s


def p_stressed(pipeline: object, sample: dict[str, float]) -> float:
    [p] = model.predict(pipeline, [sample])
    return float(p)


def healthy_fleet(machines: int, samples: int, rng: np.random.Generator) -> pd.DataFrame:
    """Real samples of healthy machines, each with its own usual level, nobody labelled."""
    frames = []
    for _ in range(machines):
        level = {name: rng.uniform(0.1, 0.6) * ZONES[name].healthy for name in FEATURES}
        frames.append(pd.DataFrame({
            name: np.clip(level[name] * rng.normal(1.0, 0.15, samples), 0, ZONES[name].healthy) for name in FEATURES
        }))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def first_model() -> Trained:
    """What the bot trains with an empty store: synthetic data alone."""
    return train(pd.DataFrame())


@pytest.fixture(scope="module")
def fleet_model() -> Trained:
    """Retrained on 4 hours of 20 healthy machines, plus one whose disk sat at 99.5 % with nobody answering."""
    rng = np.random.default_rng(11)
    fleet = healthy_fleet(20, SAMPLES_PER_MACHINE, rng)
    full_disk = healthy_fleet(1, SAMPLES_PER_MACHINE, rng).assign(disk_percent=99.5)
    return train(pd.concat([fleet, full_disk], ignore_index=True))


@pytest.fixture(params=["first model", "retrained on a fleet"])
def any_model(request: pytest.FixtureRequest, first_model: Trained, fleet_model: Trained) -> Trained:
    return first_model if request.param == "first model" else fleet_model


def test_every_scenario_an_operator_recognises_holds(any_model: Trained) -> None:
    verdicts = evaluate(any_model.pipeline, scenarios(every_sensor_subset=True))

    failed = [(v.scenario.name, round(v.p, 3)) for v in verdicts if not v.holds]

    assert failed == []


@pytest.mark.parametrize("name", FEATURES)
def test_more_of_any_metric_never_lowers_p_stressed(any_model: Trained, name: str) -> None:
    zone = ZONES[name]
    grid = np.linspace(min(0.0, zone.typical), zone.top, 201)
    for background in [*BACKGROUNDS.values(), BUSY_HEALTHY, {}]:
        ps = model.predict(any_model.pipeline, [{**background, name: float(x)} for x in grid])
        assert np.all(np.diff(ps) >= -1e-12), f"P falls somewhere as {name} rises on {background}"


def test_a_full_disk_nobody_answered_does_not_teach_the_model_that_full_is_normal(fleet_model: Trained) -> None:
    fresh = {"cpu_percent": 4, "load_1m": 0.05, "mem_percent": 22, "disk_percent": 100, "cpu_temp_c": 40}

    assert fleet_model.meta["left_out_near_edge"] == SAMPLES_PER_MACHINE
    assert p_stressed(fleet_model.pipeline, fresh) >= 0.9


def test_only_rows_inside_every_healthy_range_count_as_normal() -> None:
    rows = pd.DataFrame([
        {"cpu_percent": 99, "disk_percent": 60},  # busy CPU alone: healthy
        {"disk_percent": 95},  # near the edge: an alert nobody answered, not a "no"
        {"mem_percent": 40, "cpu_temp_c": 91},
        {},  # nothing to judge by
    ], columns=FEATURES)

    assert clearly_normal(rows).tolist() == [True, False, False, True]


def test_synthetic_rows_are_reproducible_for_a_seed() -> None:
    first = synthetic(50, 80, seed=1)

    pd.testing.assert_frame_equal(first, synthetic(50, 80, seed=1))
    assert not first.equals(synthetic(50, 80, seed=2))
    assert list(first["label"]).count(1) == 50


def test_stressed_rows_have_one_or_two_edges_and_healthy_rows_none() -> None:
    rows = synthetic(400, 400, seed=3)

    at_edge = pd.DataFrame({
        name: rows[name].between(*edge_range(name)) for name in FEATURES if name != "cpu_percent"
    }).sum(axis=1)
    assert at_edge[rows["label"] == 1].between(1, 2).all(), "one or two metrics pushed, not the whole machine"
    assert (at_edge[rows["label"] == 0] == 0).all()
    assert rows[FEATURES].isna().any().any(), "some sensors are missing, as on real machines"


def test_stressed_rows_keep_the_backgrounds_they_are_given() -> None:
    backgrounds = pd.DataFrame([{name: ZONES[name].typical for name in FEATURES}])

    rows = synthetic(30, 0, seed=4, backgrounds=backgrounds)

    typical = backgrounds.iloc[0]
    kept = (rows[FEATURES] == typical).sum(axis=1)
    assert (kept >= len(FEATURES) - 3).all()


def test_a_sample_with_missing_metrics_still_gets_a_probability(first_model: Trained) -> None:
    for sample in [{}, {"cpu_temp_c": 50}, {"gpu_percent": 80, "uptime_s": 1e6}]:
        assert 0.0 <= p_stressed(first_model.pipeline, sample) <= 0.3
    assert p_stressed(first_model.pipeline, {"disk_percent": 99.5}) >= 0.9


def test_the_model_metadata_says_how_it_was_trained_and_how_calibrated_it_is(first_model: Trained) -> None:
    meta = first_model.meta

    assert (meta["rows"], meta["labels"]) == (0, 0)
    assert meta["holdout_rows"] == len(first_model.holdout) > 0
    assert {"precision", "recall", "f1", "roc_auc", "brier", "reliability"} == set(meta["scores"])
    assert 0.0 <= meta["scores"]["brier"] < 0.05
    bins = meta["scores"]["reliability"]
    assert len(bins) == 5 and sum(b["rows"] for b in bins) == meta["holdout_rows"]
    assert meta["libraries"]["scikit-learn"] == sklearn.__version__
    assert meta["features"] == FEATURES


def test_drivers_name_the_metric_at_its_edge_and_only_it(first_model: Trained) -> None:
    full_disk = {**BACKGROUNDS["typical"], "disk_percent": 99.4}

    assert model.drivers(first_model.pipeline, full_disk) == ["disk_percent"]
    assert model.drivers(first_model.pipeline, BACKGROUNDS["idle"]) == []
    two = model.drivers(first_model.pipeline, {**full_disk, "mem_percent": 99})
    assert set(two) == {"disk_percent", "mem_percent"}


def test_contributions_add_up_to_the_log_odds(first_model: Trained) -> None:
    sample = {**BACKGROUNDS["small board"], "cpu_temp_c": 97}
    typical = {name: zone.typical for name, zone in ZONES.items()}

    gap = np.log(p_stressed(first_model.pipeline, sample) / (1 - p_stressed(first_model.pipeline, sample))) - np.log(
        p_stressed(first_model.pipeline, typical) / (1 - p_stressed(first_model.pipeline, typical)))

    assert sum(model.contributions(first_model.pipeline, sample).values()) == pytest.approx(gap)


def test_wrong_prediction_lowers_and_correct_raises_the_labelled_sample() -> None:
    fleet = healthy_fleet(5, 600, np.random.default_rng(5))
    false_alarm = {**BACKGROUNDS["typical"], "disk_percent": 96.5}  # a disk that is fine this full
    borderline = {**BACKGROUNDS["typical"], "mem_percent": 93}  # this machine is in trouble at 93 %
    before = train(fleet).pipeline

    wrong = train(pd.concat([fleet, pd.DataFrame([false_alarm]).assign(label=0)], ignore_index=True)).pipeline
    correct = train(pd.concat([fleet, pd.DataFrame([borderline]).assign(label=1)], ignore_index=True)).pipeline

    assert p_stressed(before, false_alarm) >= 0.7 > p_stressed(wrong, false_alarm)
    assert p_stressed(before, borderline) < 0.7 <= p_stressed(correct, borderline)
    assert p_stressed(wrong, {**false_alarm, "disk_percent": 99.5}) >= 0.9, "one label must not hide a full disk"


def test_enough_human_labels_of_both_classes_become_the_holdout() -> None:
    rng = np.random.default_rng(9)
    fleet = healthy_fleet(3, 100, rng)
    confirmed = healthy_fleet(1, 30, rng).assign(mem_percent=rng.uniform(97, 100, 30), label=1)
    corrected = healthy_fleet(1, 30, rng).assign(label=0)

    trained = train(pd.concat([fleet, confirmed, corrected], ignore_index=True))

    assert "human-labelled" in trained.meta["holdout"]
    assert set(trained.holdout["label"]) == {0, 1}
    assert trained.meta["holdout_rows"] == len(trained.holdout) < 60


def test_rows_no_machine_can_report_are_left_out_of_training() -> None:
    fleet = healthy_fleet(3, 200, np.random.default_rng(2))
    garbage = pd.DataFrame([{"cpu_percent": 1e200}, {"mem_percent": np.inf}, {"disk_percent": -1e300}])

    trained = train(pd.concat([fleet, garbage], ignore_index=True))

    assert all(v.holds for v in evaluate(trained.pipeline))


def test_the_model_tools_do_not_import_the_bot() -> None:
    code = ("import sys, ml.training, ml.train, ml.evaluate, ml.export, ml.versions, ml.retrain, ml.data; "
            "sys.exit(1 if any(m == 'bot' or m.startswith('bot.') for m in sys.modules) else 0)")

    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_model_says_the_same_from_the_rows_the_store_writes_as_from_the_samples(any_model: Trained) -> None:
    # The bot predicts from the tuples of known metrics it also stores; a missing metric must stay missing.
    samples = [{"cpu_percent": 97.0, "load_1m": 3.1}, {"disk_percent": 99.5, "net_sent_bps": 5e5}, {},
               {**BUSY_HEALTHY, "uptime_s": 1e6}]
    rows = [tuple(map(sample.get, KNOWN_METRICS)) for sample in samples]

    from_rows = model.predict(any_model.pipeline, table(rows, list(KNOWN_METRICS)))

    assert from_rows.tolist() == model.predict(any_model.pipeline, samples).tolist()
    assert from_rows[1] > 0.9 > 0.3 > from_rows[3]
