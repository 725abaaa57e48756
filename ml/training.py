"""Training: real samples, human labels and synthetic edge values in; a fitted pipeline and its scores out.

``python -m ml.train`` (ml/train.py) trains from the store and saves a new version, as /retrain does.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sklearn
from sklearn.metrics import brier_score_loss, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from ml.augment import clearly_normal, synthetic
from ml.features import FEATURES, ZONES
from ml.model import fit
from ml.scenarios import conflicts, guards

# A label always beats a default: each weighs at least LABEL_WEIGHT unlabelled samples, and all of them
# together at least LABEL_SHARE of the synthetic stressed samples, so one "wrong prediction" is heard.
LABEL_WEIGHT = 20.0
LABEL_SHARE = 0.05
SYNTHETIC_NORMAL = 4000  # healthy rows from idle to busy, whatever the fleet looks like
SYNTHETIC_NORMAL_SHARE = 0.3  # of the weight of normal rows: busy-but-healthy is never drowned by a quiet fleet
SYNTHETIC_STRESSED = 4000
MAX_REAL_ROWS = 200_000  # unlabelled real rows beyond this are subsampled (and weighted up): same fit, less memory
MIN_LABELS_FOR_HOLDOUT = 20  # per class, human labels needed before they become the holdout
HOLDOUT_SHARE = 0.3
RELIABILITY_BINS = 5
# Values no machine can report (stored before the wire format refused them): such a row is left out.
PLAUSIBLE = 1e6

Progress = Callable[[str], None]


@dataclass
class Trained:
    pipeline: Pipeline
    meta: dict
    holdout: pd.DataFrame  # FEATURES + label: the rows the scores were measured on
    human_holdout: bool  # the holdout is human labels (else a split of the training rows)


def reliability(y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict]:
    """Predicted against observed: per bin of P(stressed), the rows, the mean P and the share truly stressed."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        table.append({
            "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "rows": count,
            "predicted": float(p[inside].mean()) if count else None,
            "observed": float(y[inside].mean()) if count else None,
        })
    return table


def scores(pipeline: Pipeline, holdout: pd.DataFrame) -> dict:
    """Precision, recall, F1 and ROC AUC of stressed (1) on the holdout; Brier score and reliability table."""
    y = holdout["label"].to_numpy()
    p = pipeline.predict_proba(holdout[FEATURES])[:, 1]
    predicted = (p >= 0.5).astype(int)
    both_classes = len(np.unique(y)) == 2
    return {
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)) if both_classes else None,
        "brier": float(brier_score_loss(y, p, labels=[0, 1])),
        "reliability": reliability(y, p),
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
    human_holdout: bool
    counts: dict[str, int]
    human: np.ndarray  # which rows are human labels
    label_ids: np.ndarray  # their sample ids


def _plausible(real: pd.DataFrame) -> pd.DataFrame:
    """Rows whose metrics are all missing or finite and sane; values are clipped into their metric's range."""
    values = real[FEATURES]
    sane = (values.isna() | (values.abs() < PLAUSIBLE)).all(axis=1)
    real = real[sane].copy()
    for name in FEATURES:
        real[name] = real[name].clip(lower=min(0.0, ZONES[name].typical), upper=ZONES[name].top)
    return real


def _training_set(real: pd.DataFrame, seed: int) -> _TrainingSet:
    """Real rows, labels and synthetic rows joined and weighted, and the holdout set apart.

    Unlabelled real rows count as normal only when clearly normal (see augment.clearly_normal); human
    labels always count. Weights: the synthetic healthy rows hold SYNTHETIC_NORMAL_SHARE of the normal
    weight, the stressed rows as much as all normal rows together, each label at least LABEL_WEIGHT.
    A function of its own so that its intermediate frames are freed before the fit allocates its own.
    """
    real = _plausible(real.reindex(columns=[*FEATURES, "label"]))
    labelled_mask = real["label"].notna()
    labels = real[labelled_mask].astype({"label": int})
    unlabelled = real[~labelled_mask]
    normal_real = unlabelled[clearly_normal(unlabelled)][FEATURES].assign(label=0)
    left_out = len(unlabelled) - len(normal_real)
    real_weight = 1.0
    if len(normal_real) > MAX_REAL_ROWS:
        real_weight = len(normal_real) / MAX_REAL_ROWS
        normal_real = normal_real.sample(MAX_REAL_ROWS, random_state=seed)

    split = _labelled_holdout(labels, seed)
    if split is not None:
        train_labels, holdout = split
        holdout_kind = f"{len(holdout)} human-labelled samples"
    else:
        train_labels, holdout = labels, None
        holdout_kind = (
            f"stratified {HOLDOUT_SHARE:.0%} split (fewer than {MIN_LABELS_FOR_HOLDOUT} human labels of each class)"
        )
    made_normal = synthetic(0, SYNTHETIC_NORMAL, seed)
    real_total = real_weight * len(normal_real)
    synthetic_weight = max(1.0, SYNTHETIC_NORMAL_SHARE / (1 - SYNTHETIC_NORMAL_SHARE) * real_total / SYNTHETIC_NORMAL)
    normal = pd.concat([normal_real, made_normal], ignore_index=True)
    normal_weights = np.r_[np.full(len(normal_real), real_weight), np.full(len(made_normal), synthetic_weight)]
    stressed = synthetic(SYNTHETIC_STRESSED, 0, seed, backgrounds=normal, background_weights=normal_weights)
    stressed_weight = normal_weights.sum() / len(stressed)
    rows = pd.concat([normal, stressed], ignore_index=True)
    weights = np.r_[normal_weights, np.full(len(stressed), stressed_weight)]
    if holdout is None:
        kept, held = train_test_split(np.arange(len(rows)), test_size=HOLDOUT_SHARE, stratify=rows["label"],
                                      random_state=seed)
        holdout, rows, weights = rows.iloc[held], rows.iloc[kept], weights[kept]
    label_weight = max(LABEL_WEIGHT * real_weight, LABEL_SHARE * normal_weights.sum() / max(1, len(train_labels)))
    data = pd.concat([rows, train_labels[[*FEATURES, "label"]]], ignore_index=True)
    weights = np.r_[weights, np.full(len(train_labels), label_weight)]
    counts = {"rows": len(real), "labels": len(labels), "synthetic": len(made_normal) + len(stressed),
              "left_out_near_edge": int(left_out)}
    human = np.r_[np.zeros(len(rows), dtype=bool), np.ones(len(train_labels), dtype=bool)]
    return _TrainingSet(data[FEATURES], data["label"].to_numpy(), weights, holdout[[*FEATURES, "label"]], holdout_kind,
                        split is not None, counts, human, train_labels.index.to_numpy())


def train(real: pd.DataFrame, seed: int = 0, progress: Progress | None = None) -> Trained:
    """Fit a pipeline on `real` (FEATURES + `label`: 1, 0, or NaN when nobody labelled it) plus synthetic rows."""
    say = progress or (lambda _step: None)
    say("preparing data")
    data = _training_set(real, seed)
    del real  # the caller's frame is ours now: free it before the fit
    holdout = data.holdout
    say("training")
    pipeline = fit(data.features, data.target, data.weights, data.human, guards())
    say("evaluating")
    labels = data.features[data.human].assign(label=data.target[data.human]).set_axis(data.label_ids)
    meta = {
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **data.counts,
        "seed": seed,
        "holdout": data.holdout_kind,
        "holdout_rows": len(holdout),
        "scores": scores(pipeline, holdout),
        "held_back": conflicts(pipeline, labels),  # labels an operator scenario kept the model from learning
        "features": FEATURES,
        "libraries": {"python": platform.python_version(), "scikit-learn": sklearn.__version__,
                      "numpy": np.__version__, "pandas": pd.__version__},
    }
    return Trained(pipeline, meta, holdout.reset_index(drop=True), data.human_holdout)
