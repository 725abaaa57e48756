"""The model the bot predicts with: loaded from the model store, verified, swapped without a restart, and
loaded again with backoff whenever the store could not give one."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence

import pandas as pd
from sklearn.pipeline import Pipeline
from telegram import Bot
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from ml import artifact
from ml import model as ml_model
from ml.registry import ModelStore, StoreError
from ml.train import train

log = logging.getLogger(__name__)
FIRST_RETRY_S = 2.0
MAX_RETRY_S = 60.0


class ActiveModel:
    """Holds (version, pipeline); every method but `predict` and `drivers` blocks on the store."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._current: tuple[int, Pipeline] | None = None  # replaced whole, so readers need no lock
        self._lock = threading.Lock()  # one writer at a time
        self._migrated = False
        self.notices: list[str] = []  # for the chats; whoever tells them empties it

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
        should hear about that in `notices`. Raises StoreError (an ArtifactError too), keeping the model.
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
            versions = ", ".join(f"v{n}" for n in migrated)
            self.notices.append(f"Model versions {versions} were pickles: converted to skops under the same numbers.")
        self.notices.extend(refused)

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
        return ml_model.predict(pipeline, samples).tolist(), version

    def drivers(self, sample: Mapping[str, float]) -> list[str]:
        """The metrics that pushed this sample toward stressed."""
        current = self._current
        return ml_model.drivers(current[1], sample) if current else []


class ModelKeeper:
    """Tries to load the active model until one is loaded, with backoff, and tells the log and the chats
    once when it fails (again when the reason changes) and once when a model is back."""

    def __init__(self, model: ActiveModel, chat_ids: frozenset[int]) -> None:
        self.model = model
        self.chat_ids = chat_ids
        self.delay = FIRST_RETRY_S
        self.next_try = 0.0
        self.failing: type[Exception] | None = None

    async def attempt(self, bot: Bot) -> None:
        """One try, unless a model is loaded or the backoff is not over; start-up and the repeating job call it."""
        if self.model.version is not None or time.monotonic() < self.next_try:
            return
        try:
            await asyncio.to_thread(self.model.ensure)
        except StoreError as exc:
            await self._tell_notices(bot)
            self.next_try = time.monotonic() + self.delay
            if type(exc) is not self.failing:
                log.error("no model loaded: %s; samples are stored without a prediction, retrying with backoff", exc)
                await self._tell(bot, f"⚠️ No model could be loaded: {exc}\nSamples are stored without a "
                                          "prediction; the bot keeps trying and says so here once a model is loaded.")
            else:
                log.debug("still no model: %s; next try in %.0f s", exc, self.delay)
            self.failing = type(exc)
            self.delay = min(self.delay * 2, MAX_RETRY_S)
            return
        await self._tell_notices(bot)
        if self.failing is not None:
            log.info("model v%s loaded after all; predictions resume", self.model.version)
            await self._tell(bot, f"✅ Model v{self.model.version} is loaded: predictions resume.")
        self.failing, self.delay = None, FIRST_RETRY_S

    async def _tell_notices(self, bot: Bot) -> None:
        while self.model.notices:
            await self._tell(bot, self.model.notices.pop(0))

    async def _tell(self, bot: Bot, text: str) -> None:
        for chat_id in self.chat_ids:
            try:
                await bot.send_message(chat_id, text)
            except TelegramError as exc:  # the log has it; the chat hears the next news
                log.warning("could not tell chat %d about the model: %s", chat_id, exc.message)


async def keep_model_loaded(context: ContextTypes.DEFAULT_TYPE) -> None:
    """The repeating job: the ModelKeeper comes in as job data."""
    await context.job.data.attempt(context.bot)
