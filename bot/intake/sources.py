"""Where samples come in: a Kafka topic (fleet mode) or this machine's own collector (single-host mode).

Both hand the poller (bot/pipeline/poller.py) batches of parsed samples and rejected messages. Kafka offsets
are committed only after the batch is stored, so a crash redelivers instead of losing.

A topic missing at start is created (KAFKA_TOPIC_PARTITIONS partitions, the broker's default replication); one the
bot may not create is looked for every second until it appears. A consumer left without a partition (the topic
is missing, the group never settles, more processes than partitions) says so once KAFKA_UNASSIGNED_SECONDS have
passed, in the log and in /status, rather than waiting in silence.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from agent.collect import Collector, default_device_id
from agent.log_once import Once, Outage
from agent.wire import Sample, WireError, parse
from bot.config import Settings
from bot.db import Origin, Rejection

log = logging.getLogger(__name__)
# A batch also ends at this many bytes of messages: BATCH_SIZE messages of 60 KiB each would hold 300 MB.
MAX_BATCH_BYTES = 16 * 1024 * 1024
CONSUME_CHUNK = 500  # messages taken from librdkafka's queue at a time while a batch fills


class Origins(Sequence[Origin]):
    """Where each sample of a batch came from: its Kafka message. The store asks only for a sample it refuses,
    so an origin is made only then, not once per message."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages

    def __len__(self) -> int:
        return len(self.messages)

    def __getitem__(self, index: int) -> Origin:  # type: ignore[override]  # no slices
        return origin(self.messages[index])


def origin(message: Message) -> Origin:
    kind, sent_ms = message.timestamp()
    return Origin(f"{message.topic()}[{message.partition()}]@{message.offset()}", message.value(),
                        None if kind == TIMESTAMP_NOT_AVAILABLE else sent_ms)


@dataclass
class Batch:
    samples: list[Sample] = field(default_factory=list)
    origins: Sequence[Origin] | None = None  # one per sample: where it came from
    rejects: list[Rejection] = field(default_factory=list)
    # Kafka: the messages of the samples and those of the rejects, each in the order read. Their offsets are
    # worked out once a batch is stored (or fails), not kept up to date message by message.
    messages: list[Message] = field(default_factory=list)
    refused: list[Message] = field(default_factory=list)

    def offsets(self, first: bool) -> dict[int, int]:
        """The first or the last offset read of each partition."""
        offsets = {m.partition(): m.offset() for m in (reversed(self.messages) if first else self.messages)}
        pick = min if first else max
        for message in self.refused:
            partition, offset = message.partition(), message.offset()
            offsets[partition] = pick(offset, offsets.get(partition, offset))
        return offsets


# Errors librdkafka raises for a broker it cannot talk to, again on every retry and sometimes late.
CONNECTION_ERRORS = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE)
PROBE_TIMEOUT_S = 2.0
# While no partition is assigned, the topic is looked for this often while it is missing (it is read within seconds
# of its creation), and less often once it exists (a group that has not settled, more processes than partitions).
LOOK_MISSING_S, LOOK_EXISTING_S = 1.0, 30.0
CREATE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Unassigned:
    """A consumer that has had no partition of its topic for a while (KafkaSource.unassigned)."""

    topic: str
    group: str
    since: float  # Unix time
    partitions: int | None  # the topic's, when it was last looked at; None: it does not exist
    may_create: bool  # the bot creates the topic when it is missing

    def reason(self) -> str:
        if self.partitions is None:
            return ("the topic does not exist; it is read within seconds of its creation" if not self.may_create
                    else "the topic does not exist, and creating it failed; it is read within seconds of its creation")
        partitions = f"{self.partitions} partition{'' if self.partitions == 1 else 's'}"
        return (f"the topic has {partitions}, but the consumer group {self.group} has not settled, or more processes "
                "share the group than the topic has partitions")


class KafkaSource:
    """Batches of messages from the metrics topic, committed only once stored.

    The log says "unreachable" and "reachable again" once per outage, each only after asking the broker
    itself: librdkafka's connection errors repeat on every retry and can arrive after the broker is back,
    and messages it fetched before an outage still come out of its local queue during one.
    """

    streams = True  # fetch waits for the first message: ingestion asks again at once
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.kafka_topic
        self.group = settings.kafka_group_id
        self.bootstrap = settings.kafka_bootstrap
        self.batch_size = settings.batch_size
        self.partitions = settings.kafka_topic_partitions  # of the topic when the bot creates it; 0: never
        self.unassigned_after_s = settings.kafka_unassigned_s
        self.unassigned: Unassigned | None = None  # set once no partition was assigned for unassigned_after_s
        self._admin: AdminClient | None = None  # made when a topic is to be created, kept: its futures need it
        self._may_create = self.partitions > 0
        self._without_since: float | None = time.time()  # no partition assigned since
        self._look_at = 0.0  # monotonic time of the next look at the topic, while no partition is assigned
        self._missing_seen = False  # a look found the topic missing: once it is there, the group is joined anew
        self._looked = False  # at the topic, once at least
        self._found: int | None = None  # the topic's partitions at the last look; None: it was missing
        self.outage = Outage(log, "Kafka unreachable (%s); retrying, nothing is lost meanwhile",
                             "Kafka reachable again")
        self._connection_error: str | None = None  # since the last probe of the broker
        self.problems = Once(log)  # other errors: each said once, until messages come again
        self.consumer = Consumer({
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.kafka_group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.kafka_session_timeout_ms,
            "heartbeat.interval.ms": max(100, settings.kafka_session_timeout_ms // 4),
            # The default (5 minutes) leaves a topic created after the bot started unread for that long.
            "topic.metadata.refresh.interval.ms": 5000,
            # librdkafka's read-ahead (64 MiB by default) is memory of the bot too; 16 MiB keeps several batches.
            "queued.max.messages.kbytes": 16384,
            "error_cb": self._on_error,
            "on_commit": self._on_commit,
            # librdkafka logs each failed connection attempt at ERR, the same failures error_cb reports:
            # only its critical lines reach our log.
            "logger": logging.getLogger("librdkafka"),
            "log_level": 2,
        })
        self.consumer.subscribe([self.topic])

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in CONNECTION_ERRORS:
            self._connection_error = error.str()  # _check_broker decides whether it is an outage
        else:
            self._say(f"Kafka: {error.str()}")

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The broker's answer to a commit, delivered by a later fetch."""
        failed = error or next((p.error for p in partitions if p.error is not None), None)
        if failed is not None:
            self._say(f"could not commit the offsets of a stored batch ({failed.str()}); it may be read again, "
                      "which stores nothing twice")

    def _say(self, problem: str) -> None:
        self.problems.say(problem, "%s", problem)

    def _check_broker(self) -> None:
        """After a connection error, ask the broker for the topic's metadata; log a change of state."""
        error, self._connection_error = self._connection_error, None
        try:
            self.consumer.list_topics(self.topic, timeout=PROBE_TIMEOUT_S)
        except KafkaException:
            self.outage.down(error)
            self._connection_error = self._connection_error or error  # ask again on the next fetch
            return
        self.outage.up()

    @property
    def reachable(self) -> bool:
        """Whether the broker answered the last probe."""
        return not self.outage.is_down

    @property
    def receiving(self) -> bool:
        """Whether this consumer can receive: the broker answers and it has partitions to read."""
        return self.reachable and bool(self.consumer.assignment())

    def fetch(self, timeout: float) -> Batch:
        """Up to batch_size messages or MAX_BATCH_BYTES, parsed; an invalid one becomes a rejection with its
        reason. Waits up to `timeout` for the first message only, then takes what has already arrived."""
        self._watch_assignment()
        batch = Batch()
        batch.origins = Origins(batch.messages)
        samples, kept = batch.samples, batch.messages
        first = self.consumer.poll(timeout)
        messages = [first] if first is not None else []
        count = size = 0
        now = time.time()  # a sample from well ahead of it has a wrong clock (wire.MAX_AHEAD_S)
        while messages:
            for message in messages:  # the bot's hot loop: nothing but what each message needs
                if message.error() is not None:
                    self._message_error(message.error())
                    continue
                value = message.value()
                try:
                    samples.append(parse(value, message.key(), now))
                except Exception as exc:
                    self._refuse(batch, message, exc)
                else:
                    kept.append(message)
                if value:
                    size += len(value)
            count += len(messages)
            if kept or batch.refused:
                self.problems.forget()
            if count >= self.batch_size or size >= MAX_BATCH_BYTES:
                break
            messages = self.consumer.consume(num_messages=min(CONSUME_CHUNK, self.batch_size - count), timeout=0)
        if self._connection_error is not None:
            self._check_broker()
        return batch

    def _watch_assignment(self) -> None:
        """While no partition is assigned: look at the topic now and then (create it when it is missing, join the
        group anew the moment it appears), and say so once it has lasted unassigned_after_s."""
        now = time.time()
        assigned = self.consumer.assignment()
        if assigned:
            if self.unassigned is not None:
                log.info("Kafka: reading topic %s: %d partition%s assigned after %d s without any", self.topic,
                         len(assigned), "" if len(assigned) == 1 else "s", now - self.unassigned.since)
            self._without_since = self.unassigned = None
            return
        if self._without_since is None:
            self._without_since = now
        if time.monotonic() >= self._look_at:
            try:
                self._found, self._looked = self._look(), True
            except KafkaException as exc:  # the broker does not answer: its outage is said by _check_broker
                log.debug("Kafka: topic %s not looked at: %s", self.topic, exc)
            self._look_at = time.monotonic() + (LOOK_EXISTING_S if self._found is not None else LOOK_MISSING_S)
        if not self._looked or self.outage.is_down:  # the broker's outage is said already
            return
        if self.unassigned is not None:
            self.unassigned = replace(self.unassigned, partitions=self._found, may_create=self._may_create)
        elif now - self._without_since >= self.unassigned_after_s:
            self.unassigned = Unassigned(self.topic, self.group, self._without_since, self._found, self._may_create)
            log.warning("Kafka: no partition of topic %s assigned to this process for %d s: %s", self.topic,
                        now - self._without_since, self.unassigned.reason())

    def _look(self) -> int | None:
        """The topic's partitions (None: it does not exist), creating it when it is missing and the bot may; the
        group is joined anew when it appears. Raises KafkaException when the broker does not answer."""
        partitions = self._partitions()
        if partitions is None:
            self._missing_seen = True
            if self._may_create:
                partitions = self._create()
        if partitions is not None and self._missing_seen:
            self._missing_seen = False
            # librdkafka notices a new topic at its next metadata refresh, and not at all while a rebalance is
            # under way: a new subscription makes the group rebalance with the topic now.
            self.consumer.subscribe([self.topic])
        return partitions

    def _partitions(self) -> int | None:
        """The topic's partitions; None when it does not exist."""
        # All topics, not this one by name: a broker may create a topic that a request names.
        found = self.consumer.list_topics(timeout=PROBE_TIMEOUT_S).topics.get(self.topic)
        return len(found.partitions) if found is not None and found.error is None else None

    def _create(self) -> int | None:
        """Create the missing topic: its partitions, or None when it could not be (a refusal is said once, and the
        bot waits for someone else to create it; a broker that did not answer is asked again at the next look)."""
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap, "logger": logging.getLogger("librdkafka"),
                                       "log_level": 2})
        topic = NewTopic(self.topic, num_partitions=self.partitions, replication_factor=-1)  # -1: the broker's default
        future = self._admin.create_topics([topic], request_timeout=CREATE_TIMEOUT_S)[self.topic]
        try:
            future.result(timeout=CREATE_TIMEOUT_S + PROBE_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            return None
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:  # another process of the fleet, or an agent
                return self._partitions()
            if not error.retriable():
                self._may_create = False
                log.warning("Kafka: could not create topic %s (%s); waiting for it to be created: it is read within "
                            "seconds of its creation", self.topic, error.str())
            return None
        log.info("Kafka: topic %s did not exist: created it with %d partitions (KAFKA_TOPIC_PARTITIONS) and the "
                 "broker's default replication factor", self.topic, self.partitions)
        return self.partitions

    def _message_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            if self._found is None:  # not when it was created a moment ago: librdkafka had asked before
                self._say(f"Kafka topic {self.topic} does not exist yet; it is read as soon as it is created")
        else:
            self._say(f"Kafka: {error.str()}")

    @staticmethod
    def _refuse(batch: Batch, message: Message, exc: Exception) -> None:
        where = origin(message)
        if isinstance(exc, WireError):
            reason = str(exc)
        else:  # a bug in parse: still one message, never the whole partition
            log.exception("parsing %s failed", where.source)
            reason = f"could not be read: {exc!r}"
        batch.rejects.append(Rejection(where.source, reason, where.payload, where.sent_ms))
        batch.refused.append(message)

    def commit(self, batch: Batch) -> None:
        """Commit the offsets after the batch: it is stored. The next batch does not wait for the broker's
        answer (_on_commit hears it): a commit that fails makes a batch be read again, which stores nothing
        twice, and librdkafka sends the commits under way before it closes."""
        if offsets := batch.offsets(first=False):
            self.consumer.commit(offsets=[TopicPartition(self.topic, p, o + 1) for p, o in offsets.items()],
                                 asynchronous=True)

    def rewind(self, batch: Batch) -> None:
        """Read the batch again from its first message: storing it failed."""
        for partition, offset in batch.offsets(first=True).items():
            try:
                self.consumer.seek(TopicPartition(self.topic, partition, offset))
            except KafkaException as exc:
                # The partition moved to another consumer: it restarts from the committed offset there.
                log.warning("could not rewind %s[%d]: %s", self.topic, partition, exc)

    def close(self) -> None:
        self.consumer.close()


class LocalSource:
    """Single-host mode: one sample of this machine per call, through the agent's collector."""

    streams = False  # one sample per interval
    name = "local"
    receiving = False  # this machine cannot fall silent while the bot runs on it: no intake to watch
    unassigned: Unassigned | None = None  # nothing to be assigned: the sample is taken here

    def __init__(self) -> None:
        self.collector = Collector()
        self.device = default_device_id()
        self.collector.read()  # primes CPU percent, the rate counters and the processes' CPU times

    def fetch(self, timeout: float) -> Batch:
        reading = self.collector.read()
        return Batch(samples=[Sample(self.device, time.time(), reading.metrics, filesystems=reading.filesystems or None,
                                     processes=reading.processes or None, readings=reading.readings,
                                     notes=reading.notes or None, unreadable=reading.unreadable or None)])

    def commit(self, batch: Batch) -> None:
        """Nothing to commit: the sample was taken here."""

    def rewind(self, batch: Batch) -> None:
        """Nothing to rewind: a sample that could not be stored is gone, and the next one comes soon."""

    def close(self) -> None:
        """Nothing to close."""
