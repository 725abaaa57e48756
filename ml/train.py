"""Training: real samples, human labels and synthetic edge values in; a fitted pipeline and its scores out.

Run as ``python -m ml.train`` to train from the store and save a new version (what /retrain does).
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sklearn
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from ml.augment import normal_ranges, synthetic
from ml.features import FEATURES
from ml.model import build_pipeline

# A label always beats a default: each weighs at least LABEL_WEIGHT unlabelled samples, and all of them
# together at least LABEL_SHARE of the synthetic stressed samples, so one "wrong prediction" is heard.
LABEL_WEIGHT = 20.0
LABEL_SHARE = 0.2
MIN_SYNTHETIC_STRESSED = 500
SYNTHETIC_SHARE = 0.05  # synthetic stressed rows per real row, so real data never drowns them
MIN_ROWS = 2000  # with fewer real rows, synthetic normal rows fill the training set up to this
MIN_LABELS_FOR_HOLDOUT = 20  # per class, human labels needed before they become the holdout
HOLDOUT_SHARE = 0.3

Progress = Callable[[str], None]


@dataclass
class Trained:
    pipeline: Pipeline
    meta: dict
    holdout: pd.DataFrame  # FEATURES + label: the rows the scores were measured on


def scores(pipeline: Pipeline, holdout: pd.DataFrame) -> dict[str, float | None]:
    """Precision, recall, F1 and ROC AUC of stressed (1) on the holdout."""
    y = holdout["label"].to_numpy()
    p = pipeline.predict_proba(holdout[FEATURES])[:, 1]
    predicted = (p >= 0.5).astype(int)
    both_classes = len(np.unique(y)) == 2
    return {
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)) if both_classes else None,
    }


def _labelled_holdout(labelled: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    counts = labelled["label"].value_counts()
    if len(counts) < 2 or counts.min() < MIN_LABELS_FOR_HOLDOUT:
        return None
    train, held = train_test_split(labelled, test_size=HOLDOUT_SHARE, stratify=labelled["label"], random_state=seed)
    return train, held


@dataclass
class _TrainingSet:
    features: pd.DataFrame
    target: np.ndarray
    weights: np.ndarray
    holdout: pd.DataFrame
    holdout_kind: str
    counts: dict[str, int]


def _training_set(real: pd.DataFrame, seed: int) -> _TrainingSet:
    """Real rows, labels and synthetic rows joined and weighted, and the holdout set apart.

    A function of its own so that its intermediate frames (hundreds of MB for a million rows) are freed
    before the fit allocates its own.
    """
    real = real.reindex(columns=[*FEATURES, "label"])
    labelled_mask = real["label"].notna()
    labels = real[labelled_mask].astype({"label": int})
    unlabelled = real[~labelled_mask].assign(label=0)  # nobody complained: a real sample is normal
    n_stressed = max(MIN_SYNTHETIC_STRESSED, int(SYNTHETIC_SHARE * len(real)))
    made = synthetic(n_stressed, max(0, MIN_ROWS - len(real)), normal_ranges(real), seed)

    split = _labelled_holdout(labels, seed)
    if split is not None:
        train_labels, holdout = split
        holdout_kind = f"{len(holdout)} human-labelled samples"
        rest = pd.concat([unlabelled[[*FEATURES, "label"]], made], ignore_index=True)
    else:
        train_labels = labels
        holdout_kind = (
            f"stratified {HOLDOUT_SHARE:.0%} split (fewer than {MIN_LABELS_FOR_HOLDOUT} human labels of each class)"
        )
        pool = pd.concat([unlabelled[[*FEATURES, "label"]], made], ignore_index=True)
        rest, holdout = train_test_split(pool, test_size=HOLDOUT_SHARE, stratify=pool["label"], random_state=seed)
    data = pd.concat([rest, train_labels[[*FEATURES, "label"]]], ignore_index=True)
    label_weight = max(LABEL_WEIGHT, LABEL_SHARE * n_stressed / max(1, len(train_labels)))
    weights = np.r_[np.ones(len(rest)), np.full(len(train_labels), label_weight)]
    counts = {"rows": len(real), "labels": len(labels), "synthetic": len(made)}
    return _TrainingSet(data[FEATURES], data["label"].to_numpy(), weights, holdout, holdout_kind, counts)


def train(real: pd.DataFrame, seed: int = 0, progress: Progress | None = None) -> Trained:
    """Fit a pipeline on `real` (FEATURES + `label`: 1, 0, or NaN when nobody labelled it) plus synthetic rows."""
    say = progress or (lambda _step: None)
    say("preparing data")
    data = _training_set(real, seed)
    del real  # the caller's frame is ours now: free it before the fit
    holdout = data.holdout
    say("training")
    pipeline = build_pipeline()
    pipeline.fit(data.features, data.target, classify__sample_weight=data.weights)
    say("evaluating")
    meta = {
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **data.counts,
        "seed": seed,
        "holdout": data.holdout_kind,
        "holdout_rows": len(holdout),
        "scores": scores(pipeline, holdout),
        "features": FEATURES,
        "libraries": {"python": platform.python_version(), "scikit-learn": sklearn.__version__,
                      "numpy": np.__version__, "pandas": pd.__version__},
    }
    return Trained(pipeline, meta, holdout.reset_index(drop=True))


def main(argv: list[str] | None = None) -> None:
    """Train from the store like /retrain: save a new version, activate it when it is not worse."""
    import argparse
    import logging
    import sys

    from ml import artifact, data
    from ml.config import ConfigError, load_store_settings
    from ml.registry import StoreError, open_store
    from ml.retrain import retrain

    parser = argparse.ArgumentParser(prog="python -m ml.train", description=main.__doc__)
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic samples and the split")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        settings = load_store_settings()
        database = data.connect(settings.database_url)
        model_store = open_store(settings.model_store, settings.model_signing_key)
        active_version = model_store.active()
        active = None
        if active_version is not None:
            active = (active_version, artifact.loads(model_store.load(active_version)))
        result = retrain(model_store, active, lambda: data.training_frame(database, FEATURES), print, args.seed)
        if result.better:
            model_store.activate(result.saved.version)
    except (ConfigError, StoreError, ValueError) as exc:
        sys.exit(f"rigwatch: {exc}")
    state = "active" if result.better else f"saved, not active (v{result.old_version} stays)"
    print(f"v{result.saved.version} {state}: {result.reason}")


if __name__ == "__main__":
    main()
