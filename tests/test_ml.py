"""Synthetic edge values, training, the artifact and what the model says about real-looking samples."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import sklearn

from ml import model
from ml.augment import DEFAULT_NORMAL, EDGES, MIN_OBSERVED, normal_ranges, synthetic
from ml.features import FEATURES
from ml.train import Trained, train

PINNED = {"cpu_percent": 99, "mem_percent": 97}
QUIET = {"cpu_percent": 12, "mem_percent": 35, "disk_percent": 40, "load_1m": 0.1, "swap_percent": 1}


def p_stressed(pipeline: object, sample: dict[str, float]) -> float:
    [p] = model.predict(pipeline, [sample])
    return float(p)


def quiet_fleet(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Real samples of healthy machines, nobody labelled."""
    return pd.DataFrame({
        "cpu_percent": rng.uniform(5, 40, n),
        "load_1m": rng.uniform(0.05, 0.4, n),
        "mem_percent": rng.uniform(30, 50, n),
        "swap_percent": rng.uniform(0, 5, n),
        "disk_percent": rng.uniform(30, 50, n),
        "cpu_temp_c": rng.uniform(40, 55, n),
    })


@pytest.fixture(scope="module")
def first_model() -> Trained:
    """What the bot trains with an empty store: synthetic data alone."""
    return train(pd.DataFrame())


def test_synthetic_rows_are_reproducible_for_a_seed() -> None:
    ranges = normal_ranges(pd.DataFrame())

    first = synthetic(50, 80, ranges, seed=1)

    pd.testing.assert_frame_equal(first, synthetic(50, 80, ranges, seed=1))
    assert not first.equals(synthetic(50, 80, ranges, seed=2))
    assert len(first) == 130
    assert list(first["label"]).count(1) == 50


def test_stressed_rows_have_an_edge_value_and_normal_rows_none() -> None:
    rows = synthetic(300, 300, normal_ranges(pd.DataFrame()), seed=3)

    at_edge = pd.DataFrame({
        name: rows[name].between(low, high) for name, (low, high) in EDGES.items()
    }).sum(axis=1)
    assert (at_edge[rows["label"] == 1] >= 1).all()
    assert (at_edge[rows["label"] == 1] <= 2).all(), "one or two metrics pushed, not the whole machine"
    assert (at_edge[rows["label"] == 0] == 0).all()


def test_normal_ranges_use_the_fleet_when_it_has_enough_values() -> None:
    observed = pd.DataFrame({"cpu_percent": np.linspace(10, 20, MIN_OBSERVED)})
    too_few = pd.DataFrame({"cpu_percent": np.linspace(10, 20, MIN_OBSERVED - 1)})

    low, high = normal_ranges(observed)["cpu_percent"]
    assert (low, high) == pytest.approx((10.5, 19.5))
    assert normal_ranges(too_few)["cpu_percent"] == DEFAULT_NORMAL["cpu_percent"]
    assert normal_ranges(observed)["mem_percent"] == DEFAULT_NORMAL["mem_percent"], "a metric nobody sent"


def test_normal_ranges_stay_below_the_edge_on_a_busy_fleet() -> None:
    busy = pd.DataFrame({"cpu_percent": np.full(100, 99.0)})

    low, high = normal_ranges(busy)["cpu_percent"]

    assert low <= high < EDGES["cpu_percent"][0]


def test_the_first_model_tells_a_pinned_machine_from_a_quiet_one(first_model: Trained) -> None:
    assert p_stressed(first_model.pipeline, PINNED) >= 0.7
    assert p_stressed(first_model.pipeline, QUIET) < 0.3


@pytest.mark.parametrize(
    "sample",
    [{}, {"cpu_temp_c": 50}, {"disk_percent": 99.5}, {"gpu_percent": 80, "uptime_s": 1e6}],
    ids=["nothing", "only-temperature", "only-disk", "only-unknown-metrics"],
)
def test_a_sample_with_missing_metrics_still_gets_a_probability(first_model: Trained, sample: dict) -> None:
    p = p_stressed(first_model.pipeline, sample)

    assert 0.0 <= p <= 1.0


def test_the_model_metadata_says_how_it_was_trained(first_model: Trained) -> None:
    meta = first_model.meta

    assert (meta["rows"], meta["labels"]) == (0, 0)
    assert isinstance(meta["holdout"], str) and meta["holdout"]
    assert meta["holdout_rows"] == len(first_model.holdout) > 0
    assert set(meta["scores"]) == {"precision", "recall", "f1", "roc_auc"}
    assert all(0.0 <= value <= 1.0 for value in meta["scores"].values())
    assert meta["scores"]["roc_auc"] > 0.9
    assert meta["libraries"]["scikit-learn"] == sklearn.__version__
    assert {"python", "numpy", "pandas"} <= set(meta["libraries"])
    assert meta["features"] == FEATURES


def test_the_artifact_round_trips_to_the_same_predictions(first_model: Trained) -> None:
    samples = [PINNED, QUIET, {}, {"cpu_temp_c": 95, "load_1m": 2.5}]

    loaded = model.from_bytes(model.to_bytes(first_model.pipeline))

    np.testing.assert_array_equal(model.predict(loaded, samples), model.predict(first_model.pipeline, samples))


def test_an_artifact_that_is_not_a_pipeline_is_refused() -> None:
    with pytest.raises(ValueError, match="not a scikit-learn Pipeline"):
        model.from_bytes(pickle.dumps({"coef": [1, 2, 3]}))


def test_drivers_name_the_pinned_cpu_first(first_model: Trained) -> None:
    sample = {"cpu_percent": 100, "mem_percent": 40, "load_1m": 0.2, "disk_percent": 40, "swap_percent": 1}

    drivers = model.drivers(first_model.pipeline, sample)

    assert drivers[0] == "cpu_percent"
    assert set(drivers) <= set(sample)


def test_human_labels_teach_the_model_what_stressed_means_here() -> None:
    rng = np.random.default_rng(5)
    quiet = quiet_fleet(400, rng)
    # A render farm where 70 % CPU means the job queue is stuck: people press "Correct" on those.
    stuck = quiet_fleet(60, rng).assign(cpu_percent=rng.uniform(68, 72, 60))
    probe = {"cpu_percent": 70, "load_1m": 0.2, "mem_percent": 40, "swap_percent": 1, "disk_percent": 40,
             "cpu_temp_c": 48}

    unlabelled = train(pd.concat([quiet, stuck], ignore_index=True))
    labelled = train(pd.concat([quiet, stuck.assign(label=1)], ignore_index=True))

    assert labelled.meta["labels"] == 60
    assert p_stressed(labelled.pipeline, probe) > p_stressed(unlabelled.pipeline, probe) + 0.3
    assert p_stressed(labelled.pipeline, probe) >= 0.7
    assert p_stressed(labelled.pipeline, QUIET) < 0.3, "the labels must not make every machine stressed"


def test_enough_human_labels_of_both_classes_become_the_holdout() -> None:
    rng = np.random.default_rng(9)
    quiet = quiet_fleet(300, rng)
    confirmed = quiet_fleet(30, rng).assign(cpu_percent=rng.uniform(96, 100, 30), label=1)
    corrected = quiet_fleet(30, rng).assign(label=0)

    trained = train(pd.concat([quiet, confirmed, corrected], ignore_index=True))

    assert "human-labelled" in trained.meta["holdout"]
    assert set(trained.holdout["label"]) == {0, 1}
    assert trained.meta["holdout_rows"] == len(trained.holdout) < 60
