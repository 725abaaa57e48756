"""Two real bot processes behind a load balancer, on one PostgreSQL and one Kafka topic: Prometheus split each scrape
over two writes, and each process got one, posted over HTTP as Prometheus posts them. Every scrape becomes one sample
with the series of both writes, produced to the topic once, whichever process got which half, in which order,
even at the same moment; and a process killed after keeping its half loses nothing."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from agent.wire import parse
from bot import db
from bot.intake.remote_write_http import PATH
from tests.fakes.bot_process import BotProcess
from tests.fakes.node_exporter import body, machine, write_request
from tests.fakes.scenario import bot_env, wait_until
from tests.fakes.services import KafkaBroker, free_port
from tests.fakes.telegram_api import FakeTelegram
from tests.test_remote_write_shared import halves

pytestmark = pytest.mark.slow
DEVICE = "edge-split"


@dataclass
class Fleet:
    """The two processes and their remote-write ports."""

    processes: list[BotProcess]
    ports: list[int]
    topic: str
    bootstrap: str

    def post(self, which: int, data: bytes) -> int:
        answer = httpx.post(f"http://127.0.0.1:{self.ports[which]}{PATH}", content=data, timeout=30, headers={
            "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"})
        return answer.status_code

    def at_once(self, first: tuple[int, bytes], second: tuple[int, bytes]) -> list[int]:
        """Post two writes to their processes, released at the same moment."""
        start = threading.Barrier(2)

        def post(which: int, data: bytes) -> int:
            start.wait(10)
            return self.post(which, data)

        with ThreadPoolExecutor(2) as pool:
            return [f.result(30) for f in [pool.submit(post, *first), pool.submit(post, *second)]]

    def produced(self) -> Counter[tuple[str, float]]:
        """How many messages of each (device, ts) the topic holds."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"count-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        seen: Counter[tuple[str, float]] = Counter()
        try:
            while (message := consumer.poll(3.0)) is not None:
                if message.error() is None:
                    sample = parse(message.value(), message.key(), time.time())
                    seen[sample.device, sample.ts] += 1
        finally:
            consumer.close()
        return seen


@contextmanager
def two_bots(kafka_broker: KafkaBroker, telegram: FakeTelegram, tmp_path: Path, postgres_url: str) -> Iterator[Fleet]:
    database = db.open_database(postgres_url)
    database.drop_tables(db.TABLES)
    database.create_tables(db.TABLES)
    topic = f"split.{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic)
    ports = [free_port(), free_port()]
    processes = [
        BotProcess(bot_env(telegram, tmp_path, postgres_url, KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap,
                           KAFKA_TOPIC=topic, REMOTE_WRITE_LISTEN=f"127.0.0.1:{port}"),
                   tmp_path / f"bot{i}.log", ["--worker"] if i else None)
        for i, port in enumerate(ports)]
    try:
        for process in processes:  # one after the other: the second loads the model the first trained
            process.start().wait_log("remote write: listening", timeout=30)
        yield Fleet(processes, ports, topic, kafka_broker.bootstrap)
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n{processes[0].log[-2500:]}\n{processes[1].log[-2500:]}") from None
    finally:
        for process in processes:
            process.__exit__()


def stored(ts: float) -> db.Metric | None:
    return db.Metric.get_or_none(db.Metric.device == DEVICE, db.Metric.ts == ts)


def with_both(ts: float) -> bool:
    sample = stored(ts)
    return sample is not None and sample.mem_percent == pytest.approx(87.5) and sample.disk_percent == pytest.approx(85)


def test_two_bots_each_with_half_of_every_scrape_store_one_sample_of_each_with_both_halves(
        kafka_broker: KafkaBroker, telegram: FakeTelegram, tmp_path: Path, postgres_url: str) -> None:
    now = round(time.time(), 3)
    with two_bots(kafka_broker, telegram, tmp_path, postgres_url) as fleet:
        assert fleet.post(0, body(write_request({f"{DEVICE}:9100": [(now - 120, machine())]}))) == 204
        wait_until(lambda: stored(now - 120) is not None, what="the machine's first, whole scrape")
        times = [now - 105 + 5 * i for i in range(16)]
        for i, ts in enumerate(times):
            first, rest = halves(ts, DEVICE)
            which = i % 2  # the first half goes to one process, then to the other
            if i < 12:  # at the same moment, each order in turn
                answers = fleet.at_once((which, first), (1 - which, rest))
            else:  # one after the other, half a second apart
                answers = [fleet.post(which, first)]
                time.sleep(0.5)
                answers.append(fleet.post(1 - which, rest))
            assert answers == [204, 204]
        wait_until(lambda: all(with_both(ts) for ts in times), what="every scrape stored with both halves")
        time.sleep(12)  # the grace of a part waiting: nothing more may come of it
        produced = fleet.produced()
        assert [process.stop() for process in fleet.processes] == [0, 0]

    assert produced == Counter({(DEVICE, ts): 1 for ts in [now - 120, *times]}), "each scrape produced once"
    assert db.Metric.select().where(db.Metric.device == DEVICE).count() == 17
    assert db.HeldPart.select().count() == 0


def test_a_bot_killed_after_keeping_half_a_scrape_loses_nothing(
        kafka_broker: KafkaBroker, telegram: FakeTelegram, tmp_path: Path, postgres_url: str) -> None:
    now = round(time.time(), 3)
    with two_bots(kafka_broker, telegram, tmp_path, postgres_url) as fleet:
        assert fleet.post(1, body(write_request({f"{DEVICE}:9100": [(now - 30, machine())]}))) == 204
        first, rest = halves(now - 15, DEVICE)
        assert fleet.post(0, first) == 204  # answered: kept in the database
        fleet.processes[0].kill()
        assert fleet.post(1, rest) == 204
        wait_until(lambda: with_both(now - 15), what="the scrape stored with the half of the killed process")
        produced = fleet.produced()
        assert fleet.processes[1].stop() == 0

    assert produced == Counter({(DEVICE, now - 30): 1, (DEVICE, now - 15): 1})
    assert db.HeldPart.select().count() == 0
