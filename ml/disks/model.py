"""The disk model: logistic regression over per-feature shape functions, additive and monotone, like the
machine model (ml/model.py).

log-odds(fails within 30 days) = intercept + Σ fᵢ(countᵢ) + g(age) + h(model)

Each count (a level or a growth, ml/disks/features.py) has a piecewise linear fᵢ between fixed knots, written as
steps: fᵢ(x) = Σⱼ sⱼ·ramp(x, knotⱼ₋₁, knotⱼ), each ramp rising from 0 to 1 between two knots. The fit keeps every
step sⱼ of a count at 0 or above (L-BFGS-B with bounds), so more sectors or faster growth never lowers P, and a
count at 0 adds nothing. Age takes any shape (young drives fail too); each model a drive may be has its own term,
the models seen on few readings one shared term. A missing count adds nothing, as if it were 0; a count the
training readings never showed keeps all its steps at 0.

The fitted pipeline is plain scikit-learn (ColumnTransformer of SplineTransformer and OneHotEncoder, then
LogisticRegression holding the fitted coefficients), so it saves and loads as a skops artifact (ml/artifact.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import minimize
from scipy.special import expit, log_expit, logit
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer

from ml.disks.features import AGE, COUNTS, MODEL

# Sector and error counts matter most in their first doublings: 0 → 8 says more than 1,000 → 1,008.
COUNT_KNOTS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 65536], dtype=float)
AGE_KNOTS = np.array([0, 0.5, 1, 2, 3, 4, 5, 6], dtype=float)  # years powered on
REGULARISATION_C = 1.0  # inverse L2 strength on every step and model term, as scikit-learn's C
MIN_MODEL_READINGS = 200  # a model read fewer times (5 drives over 40 days) shares the term of the rare ones
UNKNOWN_MODEL = "unknown"


def _spline(knots: np.ndarray, fill: str | float) -> Pipeline:
    imputer = SimpleImputer(strategy="median", keep_empty_features=True) if fill == "median" else \
        SimpleImputer(strategy="constant", fill_value=fill, keep_empty_features=True)
    return make_pipeline(imputer, SplineTransformer(knots=knots.reshape(-1, 1), degree=1,
                                                    extrapolation="constant", sparse_output=True))


def build_pipeline() -> Pipeline:
    """The bases of every feature side by side, then the logistic regression that `fit` fills in."""
    bases = [
        *((name, _spline(COUNT_KNOTS, 0.0), [name]) for name in COUNTS),
        (AGE, _spline(AGE_KNOTS, "median"), [AGE]),  # a missing age counts as the typical one
        (MODEL, make_pipeline(
            SimpleImputer(strategy="constant", fill_value=UNKNOWN_MODEL),
            OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=MIN_MODEL_READINGS),
        ), [MODEL]),
    ]
    return Pipeline([
        ("shape", ColumnTransformer(bases, sparse_threshold=1.0)),
        ("classify", LogisticRegression(C=REGULARISATION_C)),
    ])


def _steps(shape: ColumnTransformer) -> tuple[sparse.csr_array, list[tuple[float | None, float | None]]]:
    """The matrix from steps to knot values (coefficients = steps_matrix @ steps) and each step's bounds.

    A spline of k knots has k-1 steps, its first knot's value being 0 (the intercept holds the level); a model
    term is its own coefficient."""
    blocks, bounds = [], []
    for name, part in shape.output_indices_.items():
        width = part.stop - part.start
        if width == 0:
            continue
        if name == MODEL:
            blocks.append(sparse.eye_array(width))
            bounds += [(None, None)] * width
        else:
            blocks.append(sparse.csr_array(np.tril(np.ones((width, width - 1)), k=-1)))
            bounds += [(0.0, None) if name in COUNTS else (None, None)] * (width - 1)
    return sparse.csr_array(sparse.block_diag(blocks)), bounds


def fit(features: pd.DataFrame, target: np.ndarray) -> Pipeline:
    """The pipeline fitted on `features` (ml.disks.features.FEATURES) and `target` (1: fails within 30 days)."""
    if len(np.unique(target)) != 2:
        raise ValueError("training needs readings of drives that failed and of drives that did not")
    pipeline = build_pipeline()
    shape: ColumnTransformer = pipeline.named_steps["shape"]
    basis = sparse.csr_array(shape.fit_transform(_typed(features)))
    to_knots, bounds = _steps(shape)
    design = sparse.csr_array(basis @ to_knots)
    y = np.asarray(target, dtype=float)
    rows, penalty = len(y), 1.0 / REGULARISATION_C

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        steps, intercept = theta[:-1], theta[-1]
        z = design @ steps + intercept
        residual = (expit(z) - y) / rows
        value = float(np.sum(-log_expit(z) + (1 - y) * z)) / rows + 0.5 * penalty * steps @ steps / rows
        return value, np.append(design.T @ residual + penalty * steps / rows, residual.sum())

    start = np.append(np.zeros(design.shape[1]), logit(y.mean()))
    found = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=[*bounds, (None, None)],
                     options={"maxiter": 5000})
    classify: LogisticRegression = pipeline.named_steps["classify"]
    classify.classes_ = np.array([0, 1])
    classify.coef_ = (to_knots @ found.x[:-1]).reshape(1, -1)
    classify.intercept_ = found.x[-1:].copy()
    classify.n_features_in_ = basis.shape[1]
    classify.n_iter_ = np.array([found.nit])
    return pipeline


def _typed(features: pd.DataFrame) -> pd.DataFrame:
    """The numbers as floats and the model as Python strings (None when unknown), whatever types pandas chose:
    the imputers refuse a float fill value for a column of integers."""
    out = features.copy()
    out[[*COUNTS, AGE]] = out[[*COUNTS, AGE]].astype(float)
    out[MODEL] = out[MODEL].astype(object).where(out[MODEL].notna(), None)
    return out


def predict(pipeline: Pipeline, features: pd.DataFrame) -> np.ndarray:
    """P(fails within 30 days) of each row of `features`."""
    if len(features) == 0:
        return np.empty(0)
    return pipeline.predict_proba(_typed(features))[:, 1]


def contributions(pipeline: Pipeline, features: pd.DataFrame) -> pd.DataFrame:
    """Per row, how much each feature adds to the log-odds of failing: a count compared with 0, the age with the
    typical age, the model with no model term at all. Positive pushes toward failing."""
    shape: ColumnTransformer = pipeline.named_steps["shape"]
    coef = pipeline.named_steps["classify"].coef_[0]
    rows = _typed(features)
    reference = rows.iloc[:1].copy()
    reference[COUNTS] = 0.0
    reference[AGE] = np.nan  # imputed to the typical age
    basis = sparse.csr_array(shape.transform(rows))
    base = sparse.csr_array(shape.transform(reference)).toarray()[0]
    out = pd.DataFrame(index=features.index)
    for name, part in shape.output_indices_.items():
        if part.stop > part.start:
            at_reference = 0.0 if name == MODEL else base[part] @ coef[part]
            out[name] = basis[:, part] @ coef[part] - at_reference
    return out
