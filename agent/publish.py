"""Sending samples to Kafka, buffering them in librdkafka's queue while the broker is away."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, Message, Producer

from agent.collect import Reading
from agent.log_once import Once, Outage
from agent.vocabulary import producer_settings
from agent.wire import encode

log = logging.getLogger(__name__)

# A sample waits up to an hour in the local queue for the broker to come back before it is dropped.
MESSAGE_TIMEOUT_S = 60 * 60
# Enough for an hour at 10 samples per second; bounded so a long outage cannot eat the machine's memory.
MAX_QUEUED = 36_000
# When the broker is known to be down at shutdown, waiting the full flush timeout cannot help and only
# delays the stop (service managers kill slow stoppers); give it a short last chance instead.
FLUSH_WHEN_DOWN_S = 1.0


class Publisher:
    """Produces wire-format samples to one topic, keyed by device id."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.delivered = 0  # samples Kafka has acknowledged
        self.broker = Outage(log, f"Kafka unreachable at {bootstrap_servers}: %s; buffering samples",
                             f"Kafka reachable again at {bootstrap_servers}; delivering buffered samples")
        self.losses = Once(log)  # samples dropped, or not queued: said once until deliveries succeed again
        self._producer = Producer(producer_settings(
            bootstrap_servers, "rigwatch-agent", MESSAGE_TIMEOUT_S, MAX_QUEUED, linger_ms=50,
            logger=logging.getLogger("librdkafka"), error_cb=self._on_error))

    def publish(self, device: str, ts: float, reading: Reading) -> None:
        """Queue one sample for sending and serve the callbacks of earlier ones."""
        try:
            self._producer.produce(
                self.topic, encode(device, ts, *reading), key=device.encode(), on_delivery=self._on_delivery
            )
        except BufferError:
            self.losses.say("full", "local queue full (%d samples waiting for Kafka); skipping new samples until "
                                    "Kafka takes them", len(self._producer))
        self._producer.poll(0)

    def close(self, timeout: float = 10.0) -> int:
        """Send what is queued, waiting at most `timeout` seconds; returns how many were not delivered."""
        if self.broker.is_down:
            timeout = min(timeout, FLUSH_WHEN_DOWN_S)
        return self._producer.flush(timeout)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("Kafka producer failed: %s", err.str())
        elif not self.broker.down(err.str()):
            log.debug("Kafka still unreachable: %s", err.str())

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            self.losses.forget()
            self.broker.up()
            return
        self.losses.say("dropped", "samples are being dropped: Kafka did not accept them (%s)", err.str())
