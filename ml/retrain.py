"""A retrain: train on the store's data, compare with the active model on the same holdout, save.

Shared by /retrain in the bot and `python -m ml.train`; the caller decides on activation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from sklearn.pipeline import Pipeline

from ml import artifact
from ml.registry import ModelStore, ModelVersion
from ml.train import Progress, scores, train


@dataclass(frozen=True)
class Retrained:
    saved: ModelVersion
    old_version: int | None
    old_scores: dict | None
    new_scores: dict
    better: bool  # not worse on F1 than the active model on the same holdout
    reason: str


def retrain(
    model_store: ModelStore,
    active: tuple[int, Pipeline] | None,
    load_data: Callable[[], pd.DataFrame],
    progress: Progress | None = None,
    seed: int = 0,
) -> Retrained:
    """Train, score old and new on the new holdout, save the new version; raises StoreError unsaved."""
    say = progress or (lambda _step: None)
    say("loading data")
    trained = train(load_data(), seed=seed, progress=say)
    new_scores = trained.meta["scores"]
    old_version, old_scores = None, None
    if active is not None:
        old_version = active[0]
        old_scores = scores(active[1], trained.holdout)
    meta = {**trained.meta, "compared_with": old_version, "old_scores": old_scores}
    say("saving")
    saved = model_store.save(artifact.dumps(trained.pipeline), meta)
    if old_scores is None:
        better, reason = True, "there was no active model"
    elif new_scores["f1"] >= old_scores["f1"]:
        better, reason = True, f"F1 {new_scores['f1']:.3f} is not worse than v{old_version}'s {old_scores['f1']:.3f}"
    else:
        better, reason = False, f"F1 {new_scores['f1']:.3f} is worse than v{old_version}'s {old_scores['f1']:.3f}"
    return Retrained(saved, old_version, old_scores, new_scores, better, reason)
