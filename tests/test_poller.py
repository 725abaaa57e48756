"""The poller against a real broker, store and model, with Telegram behind the fake Bot API."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from telegram import Bot

from bot import store, texts
from bot.active_model import ActiveModel
from bot.baselines import Baselines
from bot.config import load_settings
from bot.forecast import Forecaster
from bot.incidents import Decider, Rules
from bot.poller import Batch, KafkaSource, Poller
from bot.sender import Sender
from ml.registry import open_store
from tests.fakes.scenario import CHAT, TOKEN, WAIT_S, bot_env, message, produce
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
    store.open_database(url)
    model = ActiveModel(open_store(settings.model_store))
    model.ensure()
    source = KafkaSource(settings)
    commits: list[Batch] = []

    def broker_gone(batch: Batch) -> None:  # the broker went away right after the batch was stored
        commits.append(batch)
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))

    source.commit = broker_gone  # type: ignore[method-assign]
    rules = Rules(settings.alert_threshold, settings.alert_hysteresis, settings.recover_samples, 1800, None,
                  tuple(settings.allowed_chat_ids))
    decider = Decider(rules, model.drivers, Forecaster(3600), Baselines())
    sender = Sender(lambda incident: (texts.incident(incident, {}, time.time()), None), 60)
    poller = Poller(source, model, decider, sender)

    async def poll_until_stored() -> None:
        deadline = time.monotonic() + WAIT_S
        while store.Metric.select().count() < len(devices):
            assert time.monotonic() < deadline, "the batch was not stored"
            await asyncio.to_thread(poller.run_batch)
        async with Bot(TOKEN, base_url=f"{telegram.url}/bot") as bot:
            await sender.run(bot)

    try:
        asyncio.run(poll_until_stored())
    finally:
        source.close()

    assert commits, "no commit was attempted: nothing was tested"
    sent = [c.params["text"] for c in telegram.calls("sendMessage") if c.params["chat_id"] == CHAT]
    first_lines = [text.splitlines()[0] for text in sent]
    assert sorted(line.split("</b>")[0].removeprefix("🔴 <b>") for line in first_lines) == devices
    assert "could not commit the offsets of a stored batch" in caplog.text
    assert "storing a batch failed" not in caplog.text
