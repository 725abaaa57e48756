"""What people say reaches the global model only as far as it holds for every machine: labels read from the
store, retrained, and the operator scenarios still hold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import peewee as pw

from agent.wire import Sample
from bot import db
from ml.augment import healthy_rows, push_edges
from ml.data import training_frame
from ml.features import FEATURES
from ml.retrain import retrain
from ml.store import open_store

ROOT = Path(__file__).resolve().parents[1]
T0 = 1764226800.0


def store(rows: np.ndarray, rng: np.random.Generator, machines: int = 20) -> list[int]:
    """One sample per row, of random machines; their ids."""
    samples = [Sample(f"pc{rng.integers(machines)}", T0 + i, {n: float(v) for n, v in zip(FEATURES, row, strict=True)
                                                             if not np.isnan(v)}) for i, row in enumerate(rows)]
    return [s.id for s in db.store_batch(samples, [None] * len(samples), None, [])]


def test_200_random_labels_on_healthy_and_edge_samples_leave_every_operator_scenario_holding(
        database: pw.Database, tmp_path: Path) -> None:
    rng = np.random.default_rng(17)
    fleet = store(healthy_rows(2000, rng), rng)
    healthy, edge = store(healthy_rows(100, rng), rng), store(push_edges(healthy_rows(100, rng), rng), rng)
    for sample_id in rng.choice(fleet, 50, replace=False):
        db.add_label(int(sample_id), int(rng.integers(2)), 7, "@carol")
    for zone, ids in (("healthy", healthy), ("edge", edge)):
        for sample_id in ids:
            value = int(rng.integers(2))
            db.add_label(sample_id, value, 42, "@bob")
            if zone == "edge" and value == 0:  # a ❌ on an alert at an edge became that machine's tolerance
                db.Label.update(tolerance=True).where(db.Label.metric == sample_id).execute()
    model_store = open_store(f"file:{tmp_path}/models")

    result = retrain(model_store, None, lambda: training_frame(FEATURES))
    model_store.activate(result.saved.version)
    evaluated = subprocess.run([sys.executable, "-m", "ml.evaluate"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60, env={**os.environ, "MODEL_STORE": f"file:{tmp_path}/models"})

    assert result.failed_scenarios == [] and result.better, result.reason
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert evaluated.stdout.strip().endswith("scenarios hold")


def test_a_wrong_prediction_that_became_a_tolerance_is_not_read_for_training(database: pw.Database) -> None:
    rng = np.random.default_rng(3)
    corrected, tolerated, confirmed_then_tolerated = store(push_edges(healthy_rows(3, rng), rng), rng)
    db.add_label(corrected, 0, 42, "@bob")
    db.add_label(tolerated, 0, 42, "@bob")
    db.add_label(confirmed_then_tolerated, 1, 7, "@carol")
    db.add_label(confirmed_then_tolerated, 0, 42, "@bob")
    db.Label.update(tolerance=True).where(db.Label.metric.in_([tolerated, confirmed_then_tolerated])
                                          & (db.Label.value == 0)).execute()

    labels = training_frame(FEATURES)["label"]

    assert labels[corrected] == 0
    assert np.isnan(labels[tolerated]) and np.isnan(labels[confirmed_then_tolerated])


def test_a_label_set_that_truly_conflicts_with_a_scenario_is_named_by_the_retrain_gate(
        database: pw.Database, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    store(healthy_rows(500, rng), rng)
    # Thirty people call a disk at 86 % on an otherwise typical machine stressed: a busy but healthy machine
    # at 85 % is a scenario row, and in an additive model the two cannot part.
    typical = {"cpu_percent": 20, "load_1m": 0.3, "mem_percent": 50, "swap_percent": 5, "disk_percent": 86,
               "cpu_temp_c": 50}
    ids = store(np.array([[typical.get(n, np.nan) for n in FEATURES]] * 30, dtype=float), rng)
    for sample_id in ids:
        db.add_label(sample_id, 1, 42, "@bob")

    result = retrain(open_store(f"file:{tmp_path}/models"), None, lambda: training_frame(FEATURES))

    assert result.failed_scenarios == []
    assert f"label on sample {ids[0]} (CPU 20, load 0.3, memory 50, swap 5, disk 86, temperature 50) conflicts " \
           "with “busy but healthy" in result.reason
