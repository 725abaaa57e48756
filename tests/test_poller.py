"""The poller against a real broker, store and model, with Telegram behind the fake Bot API."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from telegram.ext import ExtBot

from bot import db
from bot.chat import alerts
from bot.chat.rate_limits import FairRateLimiter
from bot.chat.sender import Sender
from bot.config import load_settings
from bot.db.outbox import Route
from bot.intake.sources import Batch, KafkaSource
from bot.pipeline.active_model import ActiveModel
from bot.pipeline.baselines import Baselines
from bot.pipeline.decide import Decider
from bot.pipeline.forecast import Forecaster
from bot.pipeline.lifecycle import Incidents, Rules
from bot.pipeline.poller import Poller
from ml.store import open_store
from tests.fakes.scenario import CHAT, TOKEN, WAIT_S, bot_env, message, produce
from tests.fakes.services import KafkaBroker
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow


def test_a_failed_offset_commit_after_storing_does_not_cancel_the_batch_alerts(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ts = time.time() - 5
    devices = [f"pc{i}" for i in range(10)]
    produce(kafka, topic, [(d.encode(), message(d, ts, cpu_percent=99.0, mem_percent=98.0)) for d in devices])
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    settings = load_settings(bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic))
    db.open_database(url)
    model = ActiveModel(open_store(settings.model_store))
    model.ensure()
    source = KafkaSource(settings)
    commits: list[Batch] = []

    def broker_gone(batch: Batch) -> None:  # the broker went away right after the batch was stored
        commits.append(batch)
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))

    source.commit = broker_gone  # type: ignore[method-assign]
    rules = Rules(settings.alert_threshold, settings.alert_hysteresis, settings.recover_samples, 1800, None,
                  Route(tuple(settings.allowed_chat_ids)))
    decider = Decider(Incidents(rules, alerts.reply), model.drivers, Forecaster(3600), Baselines())
    sender = Sender(lambda incident: (alerts.alert(incident, {}, time.time()), None), alerts.group_message, 60)
    poller = Poller(source, model, decider, lambda: asyncio.sleep(0))  # the test sends itself, below

    async def poll_until_stored() -> None:
        deadline = time.monotonic() + WAIT_S
        while db.Metric.select().count() < len(devices):
            assert time.monotonic() < deadline, "the batch was not stored"
            await asyncio.to_thread(poller.run_batch)
        async with ExtBot(TOKEN, base_url=f"{telegram.url}/bot", rate_limiter=FairRateLimiter()) as bot:
            await sender.run(bot)

    try:
        asyncio.run(poll_until_stored())
    finally:
        source.close()

    assert commits, "no commit was attempted: nothing was tested"
    sent = [c.params["text"] for c in telegram.calls("sendMessage") if c.params["chat_id"] == CHAT]
    assert sent and all(any(f"<b>{device}</b>" in text for text in sent) for device in devices), sent
    assert "could not commit the offsets of a stored batch" in caplog.text
    assert "storing a batch failed" not in caplog.text


def read(source: KafkaSource, count: int) -> Batch:
    """Fetch until `count` messages (samples and rejects) were read: one batch of them all."""
    whole = Batch()
    deadline = time.monotonic() + WAIT_S
    while len(whole.samples) + len(whole.rejects) < count:
        assert time.monotonic() < deadline, f"read {len(whole.samples) + len(whole.rejects)} of {count} messages"
        batch = source.fetch(0.5)
        whole.samples += batch.samples
        whole.rejects += batch.rejects
        whole.messages += batch.messages
        whole.refused += batch.refused
    return whole


def test_a_batch_commits_past_its_last_message_of_each_partition_malformed_or_not_and_rewinds_to_its_first(
    kafka_broker: KafkaBroker, telegram: FakeTelegram, tmp_path: Path
) -> None:
    topic = f"metrics.{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=2)
    ts = time.time() - 60
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for partition, value in [(0, message("pc1", ts, cpu_percent=1.0)), (0, b"{"),
                             (1, b"not json"), (1, message("pc2", ts, cpu_percent=2.0))]:
        producer.produce(topic, value=value, partition=partition)
    assert producer.flush(10) == 0
    settings = load_settings(bot_env(telegram, tmp_path, f"sqlite:///{tmp_path}/unused.sqlite3",
                                     KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap, KAFKA_TOPIC=topic))
    source = KafkaSource(settings)
    try:
        first = read(source, 4)
        source.rewind(first)  # storing it failed
        again = read(source, 4)
        source.commit(again)
    finally:
        source.close()

    for batch in (first, again):
        assert sorted(s.device for s in batch.samples) == ["pc1", "pc2"]
        assert sorted(r.source for r in batch.rejects) == [f"{topic}[0]@1", f"{topic}[1]@0"]
    producer.produce(topic, value=message("pc3", ts + 5, cpu_percent=3.0), partition=1)
    assert producer.flush(10) == 0
    later = KafkaSource(settings)  # the same group, as after a restart
    try:
        after = read(later, 1)
    finally:
        later.close()
    assert [s.device for s in after.samples] == ["pc3"] and after.rejects == [], "nothing stored was read again"
