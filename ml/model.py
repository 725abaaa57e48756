"""The model: a scikit-learn pipeline (imputation, scaling, logistic regression) and its artifact."""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ml.features import FEATURES, frame


def build_pipeline() -> Pipeline:
    """Missing metrics imputed, features scaled, and the rare stressed class weighted up."""
    return Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("scale", StandardScaler()),
        ("classify", LogisticRegression(class_weight="balanced", max_iter=1000)),
    ])


def to_bytes(pipeline: Pipeline) -> bytes:
    """The artifact saved in the model store."""
    return pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL)


def from_bytes(artifact: bytes) -> Pipeline:
    """Unpickle an artifact. Only call this on bytes whose SHA-256 the model store has verified."""
    pipeline = pickle.load(io.BytesIO(artifact))
    if not isinstance(pipeline, Pipeline):
        raise ValueError(f"artifact holds a {type(pipeline).__name__}, not a scikit-learn Pipeline")
    return pipeline


def predict(pipeline: Pipeline, samples: Sequence[Mapping[str, float]]) -> np.ndarray:
    """P(stressed) for each sample."""
    if not samples:
        return np.empty(0)
    return pipeline.predict_proba(frame(samples))[:, 1]


def drivers(pipeline: Pipeline, sample: Mapping[str, float], top: int = 3) -> list[str]:
    """The metrics of the sample that pushed its prediction most toward stressed, strongest first."""
    scaled = pipeline[:-1].transform(frame([sample]))[0]
    contributions = scaled * pipeline[-1].coef_[0]
    order = np.argsort(-contributions)
    return [FEATURES[i] for i in order[:top] if contributions[i] > 0 and FEATURES[i] in sample]
