"""Training: daily readings (Backblaze's or the bot's, with people's labels) in; the fitted pipeline and its
metadata out, with the alert threshold and the held-out figures it was picked from.

The held-out evaluation comes first (ml/disks/evaluate.py: each drive scored by a model that never saw it), then
the model is fitted on every drive: that is the model shipped, used at the threshold the evaluation picked.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.metadata import version

import pandas as pd
from sklearn.pipeline import Pipeline

from ml.disks.backblaze import tidy
from ml.disks.evaluate import FOLDS, SEED, evaluate
from ml.disks.features import FEATURES, features
from ml.disks.labels import HORIZON_DAYS, failed_on, target
from ml.disks.model import fit

LIBRARIES = ("scikit-learn", "scipy", "numpy", "pandas", "skops")


def train(frame: pd.DataFrame, labels: Mapping[str, int] | None = None, folds: int = FOLDS,
          seed: int = SEED) -> tuple[Pipeline, dict]:
    """The model fitted on every drive of `frame` (daily readings in Backblaze's column names), and its metadata.

    `labels` maps a serial number to 1 (the drive failed, on its last reading) or 0 (it is fine); they win over
    the readings' own `failure` column. Needs at least 2 drives that failed and 2 that did not.
    """
    readings = tidy(frame)
    evaluation = evaluate(readings, labels, folds, seed)
    failed = failed_on(readings, labels)
    pipeline = fit(features(readings), target(readings, failed))
    meta = {
        "kind": f"P(the disk fails within {HORIZON_DAYS} days)",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "threshold": evaluation.threshold,
        "features": FEATURES,
        "trained_on": {
            "drives": len(failed), "failed": int(failed.notna().sum()), "readings": len(readings),
            "first_day": readings["date"].min().date().isoformat(),
            "last_day": readings["date"].max().date().isoformat(),
            "labels": len(labels or {}),
        },
        "evaluation": evaluation.as_dict(),
        "versions": {"python": platform.python_version(), **{name: version(name) for name in LIBRARIES}},
    }
    return pipeline, meta
