"""The model: logistic regression over per-metric shape functions, additive and monotone.

log-odds(stressed) = intercept + Σᵢ fᵢ(metricᵢ) + Σᵢ mᵢ·[metricᵢ missing]

Each fᵢ is piecewise linear between fixed knots (a degree-1 B-spline basis): its coefficients are the
values of fᵢ at the knots, so a single metric at its edge can make a machine stressed on its own, and mild
excesses elsewhere add up to little. After the fit each fᵢ is projected onto the non-decreasing functions
(isotonic regression of its knot values), so more load never lowers P(stressed).
A missing metric counts as its typical value, plus a learned missing-indicator term.

Human labels are learnt in a second step, on top of the first: they may move each metric's shape above its
typical value and nothing else, neither the intercept, nor a missing-indicator term, nor a shape at or below
typical. Those are shared by every machine whatever it runs at: a label about a disk at 86 % that moved them
would move a small board's CPU and load too. So a label changes the verdict on samples like it, through the
metric that stands out in it, and a label whose sample stands out in nothing teaches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import LinearConstraint, brentq, minimize
from scipy.special import expit, log_expit, logit
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.isotonic import isotonic_regression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import SplineTransformer

from ml.features import FEATURES, ZONES, frame

REGULARISATION_C = 3.0  # inverse L2 strength: strong enough edges, smooth shapes between the knots
MIN_PUSH = 0.5  # log-odds a metric must add to count as a driver (odds times 1.6); less is noise
GUARD_MARGIN = 0.1  # log-odds kept between a guarded sample and its bound, so that rounding never crosses it


@dataclass(frozen=True)
class Guard:
    """A sample whose P(stressed) labels may not push out of [low, high] (an operator scenario)."""

    sample: Mapping[str, float]
    low: float
    high: float


def knots(name: str) -> np.ndarray:
    """Where the shape function of a metric may bend: dense around the healthy limit and the edge."""
    zone = ZONES[name]
    low = min(0.0, zone.typical)
    points = [low, zone.typical, (zone.typical + zone.healthy) / 2, zone.healthy,
              (zone.healthy + zone.edge) / 2, zone.edge, (zone.edge + zone.top) / 2, zone.top]
    return np.unique(np.array(points, dtype=float))


def build_pipeline() -> Pipeline:
    """Per-metric bases side by side, then logistic regression (training weighs the classes, see ml.training)."""
    bases = [
        (name, make_pipeline(
            SimpleImputer(strategy="constant", fill_value=ZONES[name].typical, keep_empty_features=True),
            SplineTransformer(knots=knots(name).reshape(-1, 1), degree=1, extrapolation="constant"),
        ), [name])
        for name in FEATURES
    ]
    missing = ("missing", MissingIndicator(features="all", error_on_new=False), FEATURES)
    return Pipeline([
        ("shape", ColumnTransformer([*bases, missing], remainder="drop")),
        ("classify", LogisticRegression(C=REGULARISATION_C, max_iter=2000)),
    ])


def _shape_slices(pipeline: Pipeline) -> dict[str, slice]:
    """The coefficient columns of each metric's shape function."""
    indices = pipeline.named_steps["shape"].output_indices_
    # A model trained before a metric joined FEATURES has no shape of it: it reads the metrics it knows.
    return {name: indices[name] for name in FEATURES if name in indices}


def fit(features: pd.DataFrame, target: np.ndarray, weights: np.ndarray, human: np.ndarray | None = None,
        guards: Sequence[Guard] = ()) -> Pipeline:
    """Fit the pipeline, make every shape function non-decreasing, and refit the intercept to match; then learn
    the rows marked `human` (labels) on top, as the module says, keeping each guard's sample in its range."""
    human = np.zeros(len(features), dtype=bool) if human is None else human
    pipeline = _fit_defaults(features[~human], target[~human], weights[~human])
    if human.any():
        _learn_labels(pipeline, pipeline.named_steps["shape"].transform(features), target, weights, guards)
    return pipeline


def _fit_defaults(features: pd.DataFrame, target: np.ndarray, weights: np.ndarray) -> Pipeline:
    pipeline = build_pipeline()
    pipeline.fit(features, target, classify__sample_weight=weights)
    basis = pipeline.named_steps["shape"].transform(features)
    classifier: LogisticRegression = pipeline.named_steps["classify"]
    coef = classifier.coef_[0]
    support = basis.sum(axis=0) + 1e-3  # how much data stands behind each knot: those move least
    for part in _shape_slices(pipeline).values():
        coef[part] = isotonic_regression(coef[part], sample_weight=support[part], increasing=True)
    # The projection moved the shapes a little: put the intercept where the weighted log-loss wants it.
    logits = basis @ coef

    def gradient(intercept: float) -> float:
        return float(np.dot(weights, expit(logits + intercept) - target))

    classifier.intercept_[0] = brentq(gradient, -50.0, 50.0)
    return pipeline


def _learn_labels(pipeline: Pipeline, basis: np.ndarray, target: np.ndarray, weights: np.ndarray,
                  guards: Sequence[Guard]) -> None:
    """Refit the knot values above each metric's typical value on every row, the labels included, with the same
    loss and L2 penalty as the first fit, keeping the rest of the model. Each free knot is its left neighbour
    plus a step of at least 0, so the shapes stay non-decreasing; the guards' log-odds, linear in the steps,
    stay within their bounds (SLSQP). Guards the first fit already broke are left out: they are not the
    labels' doing, and the scenario check reports them."""
    classifier: LogisticRegression = pipeline.named_steps["classify"]
    coef, intercept = classifier.coef_[0].copy(), float(classifier.intercept_[0])
    blocks = []  # (index of the typical knot's column, indices of the free columns above it)
    for name, part in _shape_slices(pipeline).items():
        at = part.start + int(np.searchsorted(knots(name), ZONES[name].typical))
        blocks.append((at, np.arange(at + 1, part.stop)))
    steps0 = np.concatenate([np.diff(coef[[at, *free]]) for at, free in blocks])

    def place(steps: np.ndarray) -> np.ndarray:
        values, used = coef.copy(), 0
        for at, free in blocks:
            values[free] = coef[at] + np.cumsum(steps[used:used + len(free)])
            used += len(free)
        return values

    def loss(steps: np.ndarray) -> tuple[float, np.ndarray]:
        values = place(steps)
        z = basis @ values + intercept
        value = float(np.dot(weights, -log_expit(z) + (1 - target) * z)) + values @ values / (2 * REGULARISATION_C)
        grad_values = basis.T @ (weights * (expit(z) - target)) + values / REGULARISATION_C
        grad, used = np.empty_like(steps), 0
        for _at, free in blocks:  # a step raises every knot after it
            grad[used:used + len(free)] = np.cumsum(grad_values[free][::-1])[::-1]
            used += len(free)
        return value, grad

    start = np.maximum(steps0, 0.0)
    constraints = []
    if guards:
        rows = pipeline.named_steps["shape"].transform(frame([g.sample for g in guards]))
        # log-odds = rows @ place(steps) + intercept = offset + steps @ lift: each step lifts the knots after it.
        offset = rows @ place(np.zeros_like(start)) + intercept
        lift = np.column_stack([rows @ (place(unit) - place(np.zeros_like(start))) for unit in np.eye(len(start))])
        low = np.array([logit(g.low) + GUARD_MARGIN if g.low > 0 else -np.inf for g in guards]) - offset
        high = np.array([logit(g.high) - GUARD_MARGIN if g.high < 1 else np.inf for g in guards]) - offset
        now = lift @ start
        kept = (now >= low) & (now <= high)
        if kept.any():
            constraints = [LinearConstraint(lift[kept], low[kept], high[kept])]
    found = minimize(loss, start, jac=True, method="SLSQP", bounds=[(0.0, None)] * len(start),
                     constraints=constraints, options={"maxiter": 300})
    classifier.coef_[0] = place(found.x)


def lift(pipeline: Pipeline, rows: pd.DataFrame) -> np.ndarray:
    """Per row, how far above its typical value each shape knot reaches (the basis of the knots labels move),
    zero elsewhere: two rows that share much of it are moved alike by a label."""
    basis = pipeline.named_steps["shape"].transform(rows)
    mask = np.zeros(basis.shape[1], dtype=bool)
    for name, part in _shape_slices(pipeline).items():
        mask[part.start + int(np.searchsorted(knots(name), ZONES[name].typical)) + 1:part.stop] = True
    return basis * mask


def predict(pipeline: Pipeline, samples: Sequence[Mapping[str, float]] | pd.DataFrame) -> np.ndarray:
    """P(stressed) for each sample: a mapping of its metrics, or a row of a frame made by `frame` or `table`."""
    if len(samples) == 0:
        return np.empty(0)
    return pipeline.predict_proba(samples if isinstance(samples, pd.DataFrame) else frame(samples))[:, 1]


def contributions(pipeline: Pipeline, sample: Mapping[str, float]) -> dict[str, float]:
    """How much each metric of the sample adds to the log-odds of stressed, compared with its typical value."""
    shape = pipeline.named_steps["shape"]
    coef = pipeline.named_steps["classify"].coef_[0]
    typical = {name: zone.typical for name, zone in ZONES.items()}
    rows = shape.transform(frame([sample, typical]))
    delta = (rows[0] - rows[1]) * coef
    missing = shape.output_indices_["missing"]
    return {
        name: float(delta[part].sum() + delta[missing][i])
        for i, (name, part) in enumerate(_shape_slices(pipeline).items())
    }


def drivers(pipeline: Pipeline, sample: Mapping[str, float], top: int = 3) -> list[str]:
    """The metrics of the sample that pushed its prediction toward stressed, strongest first.

    Only metrics the sample has, adding at least MIN_PUSH and a quarter of the strongest one's push.
    """
    pushes = {
        name: value for name, value in contributions(pipeline, sample).items() if name in sample and value >= MIN_PUSH
    }
    if not pushes:
        return []
    strongest = max(pushes.values())
    ranked = sorted(pushes, key=pushes.__getitem__, reverse=True)
    return [name for name in ranked[:top] if pushes[name] >= strongest / 4]

