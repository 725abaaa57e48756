"""Run the agent: `--once` prints one sample; otherwise it publishes to Kafka until stopped."""

from __future__ import annotations

import logging
import math
import select
import signal
import socket
import sys
import time

from agent.collect import Collector
from agent.config import AgentConfig, load_config
from agent.wire import encode

log = logging.getLogger("agent")

# Rates need two samples; this is how far apart they are for --once.
ONCE_GAP_S = 0.5
FLUSH_TIMEOUT_S = 10.0


class StopSignal:
    """Waits between samples and wakes at once on SIGTERM or SIGINT (Ctrl-C)."""

    def __init__(self) -> None:
        self.received: str | None = None
        # The C-level handler writes to this socket as the signal lands, so a wait in select() can never
        # miss it; setting a threading.Event from a handler instead can deadlock the main thread.
        self._wake, self._wake_write = socket.socketpair()  # both kept: a collected socket closes its fd
        self._wake_write.setblocking(False)
        signal.set_wakeup_fd(self._wake_write.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signal.Signals(signum).name

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when a stop was asked for."""
        if self.received is None and seconds > 0:
            select.select([self._wake], [], [], seconds)
        return self.received is not None


def run_once(config: AgentConfig) -> None:
    """Print one sample, with rates, as a wire-format JSON line."""
    collector = Collector(filesystems=config.filesystems, roots=config.roots, smart_every_s=config.smart_interval)
    collector.read()  # the first sample only gives the counters a starting point
    time.sleep(ONCE_GAP_S)
    reading = collector.read()
    print(encode(config.device, time.time(), *reading).decode())


def run(config: AgentConfig) -> None:
    """Sample and publish every interval until SIGTERM or SIGINT, then flush what is queued."""
    assert config.bootstrap_servers is not None  # load_config requires it without --once
    # Imported here, not at the top: `--once` must run on a machine that has only psutil.
    try:
        from agent.publish import Publisher
    except ModuleNotFoundError as exc:
        if exc.name != "confluent_kafka":
            raise
        sys.stderr.write("rigwatch agent: publishing to Kafka needs confluent-kafka (pip install confluent-kafka)\n")
        raise SystemExit(2) from None
    stop = StopSignal()
    collector = Collector(filesystems=config.filesystems, roots=config.roots, smart_every_s=config.smart_interval)
    publisher = Publisher(config.bootstrap_servers, config.topic)
    log.info(
        "publishing %s to %s at %s every %g s", config.device, config.topic, config.bootstrap_servers, config.interval
    )
    sent = 0
    next_at = time.monotonic()
    while not stop.received:
        publisher.publish(config.device, time.time(), collector.read())
        sent += 1
        # A fixed schedule, so samples do not drift by the time each one takes; after a stall (a
        # suspended laptop) skip the missed slots rather than firing them all at once.
        next_at += config.interval
        now = time.monotonic()
        if next_at < now:
            next_at += math.ceil((now - next_at) / config.interval) * config.interval
        if stop.wait(next_at - now):
            break
    log.info("stopping on %s; flushing queued samples", stop.received)
    publisher.close(FLUSH_TIMEOUT_S)
    missing = sent - publisher.delivered
    log.log(
        logging.WARNING if missing else logging.INFO,
        "stopped: %d of %d samples sent to Kafka; %d not delivered",
        publisher.delivered, sent, missing,
    )


def main() -> None:
    """Entry point of `python -m agent`."""
    config = load_config()
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config.once:
        run_once(config)
    else:
        run(config)


if __name__ == "__main__":
    main()
