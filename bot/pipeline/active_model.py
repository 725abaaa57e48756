"""The model the bot predicts with: loaded from the model store, verified, swapped without a restart, and
loaded again with backoff whenever the store could not give one."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
from sklearn.pipeline import Pipeline

from agent.log_once import Outage
from bot.retry import retrying_async
from ml import artifact, model
from ml.store import ModelStore, StoreError
from ml.training import train

log = logging.getLogger(__name__)
FIRST_RETRY_S = 2.0
MAX_RETRY_S = 60.0


@dataclass(frozen=True)
class ModelNews:
    """What the chats hear about the model: it cannot be loaded (`error`), it is loaded after all (`loaded`),
    versions were converted (`migrated`), or what the store said of a version it refused to convert."""

    error: StoreError | None = None
    loaded: int | None = None
    migrated: tuple[int, ...] = ()  # versions converted from pickle to skops
    store_said: str | None = None


class ActiveModel:
    """Holds (version, pipeline); every method but `predict` and `drivers` blocks on the store."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._current: tuple[int, Pipeline] | None = None  # replaced whole, so readers need no lock
        self._lock = threading.Lock()  # one writer at a time
        self._migrated = False
        self.news: list[ModelNews] = []  # for the chats; whoever tells them empties it

    @property
    def version(self) -> int | None:
        current = self._current
        return current[0] if current else None

    @property
    def current(self) -> tuple[int, Pipeline] | None:
        """(version, pipeline) of the model in use, or None."""
        return self._current

    def ensure(self) -> None:
        """Load the active version; with an empty store, first train one from synthetic data and save it.

        The first call that reaches the store migrates pickle versions to skops, and leaves what people
        should hear about that in `news`. Raises StoreError (an ArtifactError too), keeping the model.
        """
        with self._lock:
            if not self._migrated:
                self._migrate()
            if not self.store.versions():
                trained = train(pd.DataFrame())
                saved = self.store.save(artifact.dumps(trained.pipeline), trained.meta)
                self.store.activate(saved.version)
                log.info("model store %s was empty: trained model v%d from synthetic data", self.store.describe,
                         saved.version)
            active = self.store.active()
            if active is not None and active != self.version:
                self._load(active)

    def _migrate(self) -> None:
        migrated, refused = self.store.migrate(artifact.from_legacy_pickle)
        self._migrated = True
        for line in refused:
            log.error("%s", line)
        if migrated:
            self.news.append(ModelNews(migrated=tuple(migrated)))
        self.news.extend(ModelNews(store_said=line) for line in refused)

    def activate(self, version: int) -> None:
        """Make `version` active in the store and here; raises StoreError and keeps the current model."""
        with self._lock:
            self._load(version)
            self.store.activate(version)

    def _load(self, version: int) -> None:
        try:
            pipeline = artifact.loads(self.store.load(version))
        except StoreError as exc:
            kept = f"v{self.version}" if self._current else "no model"
            log.error("model v%d refused: %s; keeping %s", version, exc, kept)
            raise
        self._current = (version, pipeline)
        log.info("model v%d is active", version)

    def predict(self, samples: Sequence[Mapping[str, float]] | pd.DataFrame) -> tuple[list[float | None], int | None]:
        """P(stressed) of each sample (its metrics, or a row of ml.features' frame) and the version that said
        it; None for all when no model is loaded."""
        current = self._current
        if current is None:
            return [None] * len(samples), None
        version, pipeline = current
        return model.predict(pipeline, samples).tolist(), version

    def drivers(self, sample: Mapping[str, float]) -> list[str]:
        """The metrics that pushed this sample toward stressed."""
        current = self._current
        return model.drivers(current[1], sample) if current else []


class ModelKeeper:
    """Tries to load the active model until one is loaded, with backoff, and tells `tell` once when it fails
    (again when the reason changes) and once when a model is back."""

    def __init__(self, model: ActiveModel, tell: Callable[[ModelNews], Awaitable[None]]) -> None:
        self.model = model
        self.tell = tell
        self.tried = asyncio.Event()  # the first try is over
        self.outage = Outage(log, "no model loaded: %s; samples are stored without a prediction, retrying with "
                                  "backoff", "a model is loaded after all; predictions resume", level=logging.ERROR)

    async def keep_loaded(self) -> None:
        """Until a model is loaded: try, and after a failure wait with backoff and try again."""
        # Whatever failed is tried again (a bug too, logged); only a cancellation ends the loop.
        async for attempt in retrying_async(lambda error: isinstance(error, Exception), self._failed, FIRST_RETRY_S,
                                            MAX_RETRY_S):
            with attempt:
                await asyncio.to_thread(self.model.ensure)
        await self._tell_store()
        if self.outage.up():
            await self.tell(ModelNews(loaded=self.model.version))
        self.tried.set()

    async def _failed(self, exc: BaseException) -> None:
        if not isinstance(exc, StoreError):  # a bug: logged, and tried again like an outage of the store
            log.error("loading the model failed", exc_info=exc)
        else:
            await self._tell_store()
            if self.outage.down(exc, cause=type(exc)):
                await self.tell(ModelNews(error=exc))
            else:
                log.debug("still no model: %s", exc)
        self.tried.set()

    async def _tell_store(self) -> None:
        while self.model.news:
            await self.tell(self.model.news.pop(0))
