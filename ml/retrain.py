"""A retrain: train on the store's data, check it on operator scenarios, compare with the active model on the
same holdout, save.

Shared by /retrain in the bot and `python -m ml.train`; the caller decides on activation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from sklearn.pipeline import Pipeline

from ml import artifact
from ml.scenarios import describe_conflict, evaluate
from ml.store import ModelStore, ModelVersion
from ml.training import Progress, scores, train


@dataclass(frozen=True)
class Retrained:
    saved: ModelVersion
    old_version: int | None
    old_scores: dict | None
    new_scores: dict
    better: bool  # passes every operator scenario, and not worse on F1 on a human-labelled holdout
    reason: str
    failed_scenarios: list[str]


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
    say("checking operator scenarios")
    failed = [v.scenario.name for v in evaluate(trained.pipeline) if not v.holds]
    meta["scenarios_failed"] = failed
    say("saving")
    saved = model_store.save(artifact.dumps(trained.pipeline), meta)
    better, reason = _verdict(trained.human_holdout, new_scores, old_version, old_scores, failed)
    held_back = trained.meta["held_back"]
    if held_back:
        more = f" (and {len(held_back) - 1} more)" if len(held_back) > 1 else ""
        reason += f"; the operator scenarios held back {len(held_back)} label{'s' if len(held_back) > 1 else ''}: " \
                  f"{describe_conflict(held_back[0])}{more}"
    return Retrained(saved, old_version, old_scores, new_scores, better, reason, failed)


def _verdict(
    human_holdout: bool, new: dict, old_version: int | None, old: dict | None, failed: list[str]
) -> tuple[bool, str]:
    """Whether the new model may replace the active one by itself, and why.

    The scenario table always counts. F1 counts only on human labels: on synthetic rows every model
    scores near 1, so a difference there means nothing.
    """
    if failed:
        shown = "; ".join(failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
        return False, f"it fails {len(failed)} operator scenario{'s' if len(failed) > 1 else ''} ({shown})"
    if old is None:
        return True, "it passes every operator scenario and there was no active model"
    if not human_holdout:
        return True, "it passes every operator scenario (too few human labels to compare F1)"
    if new["f1"] >= old["f1"]:
        return True, f"it passes every operator scenario, and F1 {new['f1']:.3f} on human labels is not worse " \
                     f"than v{old_version}'s {old['f1']:.3f}"
    return False, f"F1 {new['f1']:.3f} on human labels is worse than v{old_version}'s {old['f1']:.3f}"
