"""Ingestion: batch after batch from a source, predicted as a whole, stored in one transaction together with
the incident decisions it causes, then committed at the source.

Kafka offsets are committed only after the batch is stored, so a crash redelivers instead of losing, and the
(device, ts) uniqueness makes a redelivered message change nothing. When a batch queued a message, the poller
calls the `on_queued` it was handed; it knows nothing of the chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence

from confluent_kafka import KafkaException

from agent.log_once import Outage
from agent.vocabulary import KNOWN_METRICS
from agent.wire import Sample
from bot import db
from bot.intake.sources import Batch, KafkaSource, LocalSource
from bot.pipeline.active_model import ActiveModel
from bot.pipeline.decide import Decider
from bot.pipeline.tolerating import Tolerances
from ml import features

log = logging.getLogger(__name__)
BEAT_S = 2.0  # the intake's heartbeat (bot/db/ingest.beat) is written at most this often


Values = list[tuple[float | None, ...]]  # each sample's known metrics, in the order of KNOWN_METRICS


def predict(model: ActiveModel, samples: list[Sample],
            tolerances: Tolerances | None = None) -> tuple[Values, list[float | None], int | None]:
    """(each sample's known metrics, P(stressed) of each, the model version) of one batch, predicted as a whole; the
    rows of machines with tolerances are read with them. Blocks on the store (has any tolerance changed?)."""
    # Each sample's known metrics, once: the columns of its row in the store, and the model's input.
    values = db.known_values(samples)
    frame = features.table(values, KNOWN_METRICS)
    if tolerances is not None:  # a ❌ pressed since the last batch holds from this one
        tolerances.refresh()
        frame = tolerances.apply(frame, samples)
    predictions, version = model.predict(frame)
    return values, predictions, version


class Poller:
    """Ingestion, a long-lived task of the bot: a source, the model, the machines' tolerances, what decides
    incidents, and what to call when their messages are queued."""

    def __init__(self, source: KafkaSource | LocalSource, model: ActiveModel, decider: Decider,
                 on_queued: Callable[[], Awaitable[None]], interval: float = 1.0,
                 tolerances: Tolerances | None = None) -> None:
        self.source = source
        self.model = model
        self.decider = decider
        self.tolerances = tolerances
        self.on_queued = on_queued
        self.interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._beaten = 0.0
        # One batch at a time through prediction, the store and the decisions, whichever way it came; reentrant,
        # so that the remote-write receiver can take it before its own transaction, around a store (Receiver).
        self.store_lock = threading.RLock()
        self.storing = Outage(log, "storing a batch failed; it will be read again: %s", "storing works again",
                              level=logging.ERROR)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingestion")

    async def stop(self) -> None:
        """Stop after the batch under way (what is not stored is read again); its messages still go out."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        await asyncio.gather(*self._sending)

    async def _run(self) -> None:
        """Batch after batch as fast as they come, not one per tick of a timer: ingestion runs at the pace
        of the machine. An idle source is waited on for up to one interval at a time."""
        while not self._stopping.is_set():
            try:
                stored = await self.step()
            except Exception:  # a bug must not end ingestion for good
                log.exception("ingestion step failed")
                stored = False
            if not stored or not self.source.streams:
                # A failing store is tried again, and this machine sampled, once per interval.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.interval)

    def run_batch(self, timeout: float = 0.5) -> list[db.StoredSample]:
        """Fetch, predict and store one batch; return the samples that are new. Blocks."""
        batch = self.source.fetch(timeout)
        new = self._store(batch) if batch.samples or batch.rejects else []
        now = time.time()
        if self.source.receiving and now - self._beaten >= BEAT_S:
            # The intake works, even when no machine sent anything; three missed beats are an outage of it.
            db.beat(self.source.name, now, 3 * max(BEAT_S, self.interval))
            self._beaten = now
        return new

    def _store(self, batch: Batch) -> list[db.StoredSample]:
        try:
            new = self.store(batch.samples, batch.rejects, batch.origins)
        except Exception:
            self.source.rewind(batch)
            raise
        try:
            self.source.commit(batch)
        except KafkaException as exc:
            # The batch is stored: its alerts must go out now, because when it is read again (after a
            # restart or a rebalance) the store finds nothing new in it. A later commit covers it.
            log.warning("could not commit the offsets of a stored batch (%s); it may be read again, which "
                        "stores nothing twice", exc)
        self.storing.up()
        for reject in batch.rejects:
            log.warning("rejected message %s: %s", reject.source, reject.reason)
        return new

    def store(self, samples: list[Sample], rejects: list[db.Rejection],
              origins: Sequence[db.Origin] | None = None) -> list[db.StoredSample]:
        """Predict and store samples in one transaction with the incidents they decide; return those that were new.
        Blocks; raises what the store raised (nothing of the batch is stored then)."""
        with self.store_lock:
            values, predictions, version = predict(self.model, samples, self.tolerances)
            return db.store_batch(samples, predictions, version, rejects, origins, on_stored=self.decider.decide,
                                  values=values)

    def send_queued(self) -> None:
        """Send, beside ingestion, the messages the batches stored so far queued. On the event loop."""
        if self.decider.incidents.take_queued():
            task = asyncio.create_task(self.on_queued(), name="send")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def step(self) -> bool:
        """One batch, waiting up to one interval for its first message; False when storing it failed."""
        try:
            # In a thread: the event loop answers commands and sends messages meanwhile.
            await asyncio.to_thread(self.run_batch, self.interval)
        except Exception as exc:
            self.storing.down(exc, exc_info=True)
            return False
        self.send_queued()  # its messages go out now
        return True
