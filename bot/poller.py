"""Where samples come in: a Kafka topic (fleet mode) or this machine's own collector (single-host mode).

Both feed one batched path: parse, predict the whole batch, store it in one transaction, then alert.
Kafka offsets are committed only after the batch is stored, so a crash redelivers instead of losing,
and the (device, ts) uniqueness makes a redelivered message change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from telegram import Bot
from telegram.ext import ContextTypes

from agent.collect import Collector, default_device_id
from agent.wire import Sample, WireError, parse
from bot import store
from bot.active_model import ActiveModel
from bot.alerts import Alerter
from bot.config import Settings

log = logging.getLogger(__name__)
MODEL_RETRY_S = 60.0


@dataclass
class Batch:
    samples: list[Sample] = field(default_factory=list)
    rejects: list[store.Rejection] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # what to commit once stored
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # where to rewind on failure


class KafkaSource:
    """Batches of messages from the metrics topic, committed only once stored."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.kafka_topic
        self.batch_size = settings.batch_size
        self._broker_down = False
        self.consumer = Consumer({
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.kafka_group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.kafka_session_timeout_ms,
            "heartbeat.interval.ms": max(100, settings.kafka_session_timeout_ms // 4),
            "error_cb": self._on_error,
            # librdkafka repeats its connection failures on every retry: _on_error says it once instead.
            "logger": logging.getLogger("librdkafka"),
        })
        self.consumer.subscribe([self.topic])

    def _on_error(self, error: KafkaError) -> None:
        # librdkafka reports a dead broker again and again; say it once per outage.
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            if not self._broker_down:
                log.warning("Kafka unreachable: %s; retrying, nothing is lost meanwhile", error.str())
            self._broker_down = True
        else:
            log.warning("Kafka: %s", error.str())

    def fetch(self, timeout: float) -> Batch:
        """Up to batch_size messages, parsed; an invalid one becomes a rejection with its reason."""
        batch = Batch()
        for message in self.consumer.consume(num_messages=self.batch_size, timeout=timeout):
            if message.error():
                log.warning("Kafka: %s", message.error().str())
                continue
            if self._broker_down:
                log.info("Kafka reachable again")
                self._broker_down = False
            self._add(batch, message)
        return batch

    @staticmethod
    def _add(batch: Batch, message: Message) -> None:
        partition = (message.topic(), message.partition())
        batch.first_offsets.setdefault(partition, message.offset())
        batch.next_offsets[partition] = message.offset() + 1
        value = message.value()
        try:
            batch.samples.append(parse(value, message.key()))
        except WireError as exc:
            source = f"{partition[0]}[{partition[1]}]@{message.offset()}"
            batch.rejects.append(store.Rejection(source, str(exc), value))

    def commit(self, batch: Batch) -> None:
        """Commit the offsets after the batch: it is stored."""
        if batch.next_offsets:
            offsets = [TopicPartition(t, p, o) for (t, p), o in batch.next_offsets.items()]
            self.consumer.commit(offsets=offsets, asynchronous=False)

    def rewind(self, batch: Batch) -> None:
        """Read the batch again from its first message: storing it failed."""
        for (topic, partition), offset in batch.first_offsets.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # The partition moved to another consumer: it restarts from the committed offset there.
                log.warning("could not rewind %s[%d]: %s", topic, partition, exc)

    def close(self) -> None:
        self.consumer.close()


class LocalSource:
    """Single-host mode: one sample of this machine per call, through the agent's collector."""

    def __init__(self) -> None:
        self.collector = Collector()
        self.device = default_device_id()
        self.collector.sample()  # primes CPU percent and the rate counters

    def fetch(self, timeout: float) -> Batch:
        return Batch(samples=[Sample(self.device, time.time(), self.collector.sample())])

    def commit(self, batch: Batch) -> None:
        """Nothing to commit: the sample was taken here."""

    def rewind(self, batch: Batch) -> None:
        """Nothing to rewind: a sample that could not be stored is gone, and the next one comes soon."""

    def close(self) -> None:
        """Nothing to close."""


class Poller:
    """The repeating job's state: a source, the model and the alerter."""

    def __init__(self, source: KafkaSource | LocalSource, model: ActiveModel, alerter: Alerter) -> None:
        self.source = source
        self.model = model
        self.alerter = alerter
        self._running = asyncio.Lock()
        self._model_tried = 0.0
        self._store_failing = False
        # Called with the new samples of every stored batch, after the alerts (e.g. the forecasts).
        self.after_store: list[Callable[[Bot, list[store.StoredSample]], Awaitable[None]]] = []

    def run_batch(self, timeout: float = 0.5) -> list[store.StoredSample]:
        """Fetch, predict and store one batch; return the samples that are new. Blocks."""
        batch = self.source.fetch(timeout)
        if not batch.samples and not batch.rejects:
            return []
        predictions, version = self.model.predict([s.metrics for s in batch.samples])
        try:
            new = store.store_batch(batch.samples, predictions, version, batch.rejects)
        except Exception:
            self.source.rewind(batch)
            raise
        self.source.commit(batch)
        if self._store_failing:
            log.info("storing works again")
            self._store_failing = False
        for reject in batch.rejects:
            log.warning("rejected message %s: %s", reject.source, reject.reason)
        return new

    def _retry_model(self) -> None:
        try:
            self.model.ensure()
        except Exception as exc:  # the store may be down: predictions wait, ingestion goes on
            log.error("no model loaded (%s); retrying in %.0f s", exc, MODEL_RETRY_S)

    async def tick(self, context: ContextTypes.DEFAULT_TYPE) -> None:
        """One run of the repeating job; a run that finds the previous one still busy does nothing."""
        if self._running.locked():
            return
        async with self._running:
            if self.model.version is None and time.monotonic() - self._model_tried > MODEL_RETRY_S:
                self._model_tried = time.monotonic()
                await asyncio.to_thread(self._retry_model)
            try:
                new = await asyncio.to_thread(self.run_batch)
            except Exception as exc:
                if not self._store_failing:
                    log.exception("storing a batch failed; it will be read again: %s", exc)
                self._store_failing = True
                return
            await self.alerter.alert(context.bot, new, self.model)
            for hook in self.after_store:
                await hook(context.bot, new)


async def poll(context: ContextTypes.DEFAULT_TYPE) -> None:
    """The repeating job: the Poller comes in as job data."""
    await context.job.data.tick(context)
