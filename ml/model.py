"""The model: logistic regression over per-metric shape functions, additive and monotone.

log-odds(stressed) = intercept + Σᵢ fᵢ(metricᵢ) + Σᵢ mᵢ·[metricᵢ missing]

Each fᵢ is piecewise linear between fixed knots (a degree-1 B-spline basis): its coefficients are the
values of fᵢ at the knots, so a single metric at its edge can make a machine stressed on its own, and mild
excesses elsewhere add up to little. After the fit each fᵢ is projected onto the non-decreasing functions
(isotonic regression of its knot values), so more load never lowers P(stressed).
A missing metric counts as its typical value, plus a learned missing-indicator term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.isotonic import isotonic_regression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import SplineTransformer

from ml.features import FEATURES, ZONES, frame

REGULARISATION_C = 3.0  # inverse L2 strength: strong enough edges, smooth shapes between the knots
MIN_PUSH = 0.5  # log-odds a metric must add to count as a driver (odds times 1.6); less is noise


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
    return {name: pipeline.named_steps["shape"].output_indices_[name] for name in FEATURES}


def fit(features: pd.DataFrame, target: np.ndarray, weights: np.ndarray) -> Pipeline:
    """Fit the pipeline, make every shape function non-decreasing, and refit the intercept to match."""
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

