"""The model the bot predicts with: loaded from the model store, verified, swapped without a restart."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

import pandas as pd
from sklearn.pipeline import Pipeline

from ml import model as ml_model
from ml.registry import ModelStore, StoreError
from ml.train import train

log = logging.getLogger(__name__)


class ActiveModel:
    """Holds (version, pipeline); every method but `predict` and `drivers` blocks on the store."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._current: tuple[int, Pipeline] | None = None  # replaced whole, so readers need no lock
        self._lock = threading.Lock()  # one writer at a time

    @property
    def version(self) -> int | None:
        current = self._current
        return current[0] if current else None

    @property
    def current(self) -> tuple[int, Pipeline] | None:
        """(version, pipeline) of the model in use, or None."""
        return self._current

    def ensure(self) -> None:
        """Load the active version; with an empty store, first train one from synthetic data and save it."""
        with self._lock:
            if not self.store.versions():
                trained = train(pd.DataFrame())
                saved = self.store.save(ml_model.to_bytes(trained.pipeline), trained.meta)
                self.store.activate(saved.version)
                log.info("model store %s was empty: trained model v%d from synthetic data", self.store.describe,
                         saved.version)
            active = self.store.active()
            if active is not None and active != self.version:
                self._load(active)

    def activate(self, version: int) -> None:
        """Make `version` active in the store and here; raises StoreError and keeps the current model."""
        with self._lock:
            self._load(version)
            self.store.activate(version)

    def _load(self, version: int) -> None:
        try:
            pipeline = ml_model.from_bytes(self.store.load(version))
        except StoreError as exc:
            kept = f"v{self.version}" if self._current else "no model"
            log.error("model v%d refused: %s; keeping %s", version, exc, kept)
            raise
        self._current = (version, pipeline)
        log.info("model v%d is active", version)

    def predict(self, samples: Sequence[Mapping[str, float]]) -> tuple[list[float | None], int | None]:
        """P(stressed) of each sample and the version that said it; None for all when no model is loaded."""
        current = self._current
        if current is None:
            return [None] * len(samples), None
        version, pipeline = current
        return [float(p) for p in ml_model.predict(pipeline, samples)], version

    def drivers(self, sample: Mapping[str, float]) -> list[str]:
        """The metrics that pushed this sample toward stressed."""
        current = self._current
        return ml_model.drivers(current[1], sample) if current else []
