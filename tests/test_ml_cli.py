"""The ml command lines: train from the store, list versions, export for a notebook."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from agent.wire import Sample
from bot import db

ROOT = Path(__file__).resolve().parents[1]


def run(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_train_versions_and_export_work_on_a_stored_fleet(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    db.open_database(url)
    samples = [Sample(f"pc{i % 4}", 1.7e9 + i, {"cpu_percent": 10.0 + i % 30, "mem_percent": 40.0}) for i in range(400)]
    stored = db.store_batch(samples, [0.2] * 400, None, [])
    db.add_label(stored[7].id, 0, 42, "@bob")
    env = {"DATABASE_URL": url, "MODEL_STORE": f"file:{tmp_path}/models"}

    assert "empty" in run("ml.versions", env=env).stdout
    first = run("ml.train", env=env)
    assert first.returncode == 0, first.stderr
    assert "v1 active" in first.stdout
    second = run("ml.train", "--seed", "1", env=env)
    assert "v2 " in second.stdout
    listing = run("ml.versions", env=env).stdout.splitlines()
    assert listing[1].lstrip("▶ ").startswith("v2") and "400" in listing[1]
    assert listing[2].lstrip("▶ ").startswith("v1")

    out = tmp_path / "data.csv"
    exported = run("ml.export", "--out", str(out), env=env)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 400
    assert rows[7]["label"] == "0" and rows[8]["label"] == ""
    assert rows[0]["cpu_percent"] == "10.0" and rows[0]["cpu_temp_c"] == ""
    assert rows[0]["time_utc"].startswith("2023-11-14T22:13:20")


def test_a_bad_model_store_is_one_clear_line(tmp_path: Path) -> None:
    result = run("ml.versions", env={"MODEL_STORE": "ftp://models"})
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "MODEL_STORE" in result.stderr


def test_evaluate_passes_on_the_first_model_and_fails_on_a_model_taught_to_cry_wolf(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    from ml import artifact
    from ml.augment import synthetic
    from ml.features import FEATURES
    from ml.model import fit
    from ml.scenarios import BACKGROUNDS
    from ml.store import open_store
    from ml.training import train

    env = {"MODEL_STORE": f"file:{tmp_path}/models"}
    first = run("ml.evaluate", env=env)  # the replay table is bot.replay's: tests/test_replay.py
    assert first.returncode == 0, first.stdout + first.stderr
    assert "no active model" in first.stdout and "disk 100 % on idle machine" in first.stdout
    assert first.stdout.strip().endswith("scenarios hold")

    # A model fitted on typical machines called stressed (labels could not do this: the scenarios guard them).
    wolf = pd.concat([synthetic(500, 500, seed=0), pd.DataFrame([BACKGROUNDS["typical"]] * 500).assign(label=1)])
    model_store = open_store(env["MODEL_STORE"])
    pipeline = fit(wolf[FEATURES], wolf["label"].to_numpy(), np.ones(len(wolf)))
    model_store.activate(model_store.save(artifact.dumps(pipeline), train(pd.DataFrame()).meta).version)

    failing = run("ml.evaluate", env=env)
    assert failing.returncode == 1
    assert "model v1 of file:" in failing.stdout
    assert any(line.startswith("typical machine") and line.endswith("FAIL") for line in failing.stdout.splitlines())
    assert "scenarios FAIL" in failing.stdout.splitlines()[-1]
