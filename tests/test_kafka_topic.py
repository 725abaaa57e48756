"""The bot's Kafka topic on a fresh install, with the real broker: created at start when it is missing, so the first
agent's samples are read at once; and a consumer left without a partition says so, in the log and in /status,
instead of waiting in silence. (A topic the bot may not create: tests/test_outages.py.)"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest

from bot import db
from tests.fakes.bot_process import BotProcess
from tests.fakes.scenario import ask, bot_env, message, produce, wait_until
from tests.fakes.services import KafkaBroker
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow
UNASSIGNED = r"Kafka: no partition of topic {} assigned to this process for \d+ s: "


def test_a_bot_started_before_its_topic_exists_creates_it_and_reads_a_sample_sent_right_after(
        kafka_broker: KafkaBroker, telegram: FakeTelegram, tmp_path: Path) -> None:
    topic = f"metrics.fresh.{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap, KAFKA_TOPIC=topic,
                  KAFKA_TOPIC_PARTITIONS="3")
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log(f"Kafka: topic {re.escape(topic)} did not exist: created it with 3 partitions", timeout=30)
        assert kafka_broker.partitions(topic) == 3
        sent = time.monotonic()
        produce(kafka_broker.bootstrap, topic, [(f"pc{i}".encode(), message(f"pc{i}", time.time(), cpu_percent=10.0))
                                                for i in range(6)])  # on every partition

        db.open_database(url)
        wait_until(lambda: db.Metric.select().count() == 6, what="the first agents' samples stored")
        assert time.monotonic() - sent < 10
        assert bot.stop() == 0
    assert "Kafka: no partition" not in bot.log


def test_a_bot_without_a_partition_for_a_while_says_so_in_its_log_and_in_status_until_it_reads(
        kafka_broker: KafkaBroker, telegram: FakeTelegram, tmp_path: Path) -> None:
    topic = f"metrics.none.{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap, KAFKA_TOPIC=topic,
                  KAFKA_TOPIC_PARTITIONS="0", KAFKA_UNASSIGNED_SECONDS="2")
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log(UNASSIGNED.format(re.escape(topic)) + "the topic does not exist", timeout=30)
        missing = ask(telegram, "/status")
        kafka_broker.create_topic(topic)
        produce(kafka_broker.bootstrap, topic, [(b"pc1", message("pc1", time.time(), cpu_percent=10.0))])
        db.open_database(url)
        wait_until(lambda: db.Metric.select().count() == 1, what="a sample in the new topic stored")
        bot.wait_log(rf"Kafka: reading topic {re.escape(topic)}: 1 partition assigned after \d+ s without any")
        reading = ask(telegram, "/status")
        assert bot.stop() == 0

    assert missing.startswith(f"⚠️ Kafka topic <code>{topic}</code> does not exist (for ")
    assert "No machine has reported yet." in missing
    assert "Kafka" not in reading and "pc1" in reading
    assert len(re.findall(UNASSIGNED.format(re.escape(topic)), bot.log)) == 1  # said once, not at every look


def test_a_process_left_without_a_partition_by_its_group_says_why(
        kafka_broker: KafkaBroker, telegram: FakeTelegram, tmp_path: Path, postgres_url: str) -> None:
    """Two processes in one consumer group on a topic of one partition: one of them reads it, the other one has
    none, and says so."""
    topic = f"metrics.one.{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=1)
    database = db.open_database(postgres_url)
    database.drop_tables(db.TABLES)
    env = bot_env(telegram, tmp_path, postgres_url, KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap,
                  KAFKA_TOPIC=topic, KAFKA_UNASSIGNED_SECONDS="8")
    bot = BotProcess(env, tmp_path / "bot.log")
    worker = BotProcess(env, tmp_path / "worker.log", ["--worker"])
    said = UNASSIGNED.format(re.escape(topic)) + "the topic has 1 partition, but the consumer group"
    try:
        bot.start().wait_log("Application started", timeout=30)
        worker.start().wait_log("worker: ingesting", timeout=30)
        produce(kafka_broker.bootstrap, topic, [(b"pc1", message("pc1", time.time(), cpu_percent=10.0))])
        database.connect(reuse_if_open=True)
        wait_until(lambda: db.Metric.select().count() == 1, what="the sample stored by the process that reads")
        wait_until(lambda: any(re.search(said, p.log) for p in (bot, worker)), timeout=30,
                   what="the process without a partition saying so")
        idle = bot if re.search(said, bot.log) else worker
        status = ask(telegram, "/status")
        assert bot.stop() == 0 and worker.stop() == 0
    finally:
        bot.__exit__()
        worker.__exit__()

    busy = worker if idle is bot else bot
    assert not re.search(said, busy.log) or "assigned after" in busy.log  # said only while it had none
    assert "share the group than the topic has partitions" in idle.log
    if idle is bot:
        assert "I have read no partition of Kafka topic" in status and "(1 partition)" in status
    else:
        assert "Kafka" not in status
