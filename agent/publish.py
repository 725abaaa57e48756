"""Sending samples to Kafka, buffering them in librdkafka's queue while the broker is away."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, Message, Producer

from agent.collect import Reading
from agent.wire import encode

log = logging.getLogger(__name__)

# A sample waits up to an hour in the local queue for the broker to come back before it is dropped.
MESSAGE_TIMEOUT_MS = 60 * 60 * 1000
# Enough for an hour at 10 samples per second; bounded so a long outage cannot eat the machine's memory.
MAX_QUEUED = 36_000
# When the broker is known to be down at shutdown, waiting the full flush timeout cannot help and only
# delays the stop (service managers kill slow stoppers); give it a short last chance instead.
FLUSH_WHEN_DOWN_S = 1.0


class _LibrdkafkaLog:
    """Routes librdkafka's own log lines to debug level: they repeat on every reconnect attempt."""

    def log(self, level: int, msg: str, *args: object) -> None:
        log.debug("librdkafka: " + msg, *args)


class Publisher:
    """Produces wire-format samples to one topic, keyed by device id."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.delivered = 0  # samples Kafka has acknowledged
        self._down = False  # the broker is unreachable; said once, until deliveries succeed again
        self._failure_logged = False
        self._full_logged = False
        self._producer = Producer({
            "bootstrap.servers": bootstrap_servers,
            "client.id": "rigwatch-agent",
            "linger.ms": 50,
            "message.timeout.ms": MESSAGE_TIMEOUT_MS,
            "queue.buffering.max.messages": MAX_QUEUED,
            "error_cb": self._on_error,
            "logger": _LibrdkafkaLog(),
        })

    def publish(self, device: str, ts: float, reading: Reading) -> None:
        """Queue one sample for sending and serve the callbacks of earlier ones."""
        try:
            self._producer.produce(
                self.topic, encode(device, ts, *reading), key=device.encode(), on_delivery=self._on_delivery
            )
        except BufferError:
            if not self._full_logged:
                self._full_logged = True
                log.warning(
                    "local queue full (%d samples waiting for Kafka); skipping new samples until Kafka takes them",
                    len(self._producer),
                )
        self._producer.poll(0)

    def close(self, timeout: float = 10.0) -> int:
        """Send what is queued, waiting at most `timeout` seconds; returns how many were not delivered."""
        if self._down:
            timeout = min(timeout, FLUSH_WHEN_DOWN_S)
        return self._producer.flush(timeout)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("Kafka producer failed: %s", err.str())
        elif not self._down:
            self._down = True
            log.warning("Kafka unreachable at %s: %s; buffering samples", self.bootstrap_servers, err.str())
        else:
            log.debug("Kafka still unreachable: %s", err.str())

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            self._failure_logged = self._full_logged = False
            if self._down:
                self._down = False
                log.info("Kafka reachable again at %s; delivering buffered samples", self.bootstrap_servers)
            return
        if not self._failure_logged:
            self._failure_logged = True
            log.warning("samples are being dropped: Kafka did not accept them (%s)", err.str())
