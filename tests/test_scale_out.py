"""Scale-out: one bot and two workers in one consumer group on a 4-partition topic, sharing Postgres."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from bot import db
from bot.db.outbox import CLAIM_S
from tests.fakes.bot_process import BotProcess
from tests.fakes.scenario import CHAT, ask, bot_env, message, produce, wait_until
from tests.fakes.services import KafkaBroker
from tests.fakes.stores import empty_postgres
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow
DEVICES = 1000
SAMPLES = 30
STRESSED = {f"dev{i:04d}" for i in range(0, DEVICES, DEVICES // 20)}


def fleet(start: float, first: int, last: int) -> list[tuple[bytes, bytes]]:
    """Samples `first`..`last - 1` of every device; 20 devices have a full disk throughout."""
    out = []
    for i in range(first, last):
        for d in range(DEVICES):
            device = f"dev{d:04d}"
            disk = 99.5 if device in STRESSED else 40.0 + d % 20
            out.append((device.encode(), message(device, start + i * 5, cpu_percent=20.0, mem_percent=50.0,
                                                  disk_percent=disk, load_1m=0.3)))
    return out


def test_a_bot_and_two_workers_store_every_sample_once_and_alert_each_stressed_device_once(
    kafka_broker: KafkaBroker, telegram: FakeTelegram, tmp_path: Path, postgres_url: str
) -> None:
    topic = f"fleet.{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=4)
    empty_postgres(postgres_url)
    db.open_database(postgres_url)  # as the bot makes it: samples partitioned by day
    env = bot_env(telegram, tmp_path, postgres_url, KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap,
                  KAFKA_TOPIC=topic, BATCH_SIZE="2000",
                  ALERT_GROUP_MIN="1000")  # one alert per device, each counted: no group message
    start = time.time() - SAMPLES * 5
    produce(kafka_broker.bootstrap, topic, fleet(start, 0, SAMPLES // 2))

    bot = BotProcess(env, tmp_path / "bot.log").start()
    doomed = BotProcess(env, tmp_path / "worker1.log", ["--worker"]).start()
    worker = BotProcess(env, tmp_path / "worker2.log", ["--worker"]).start()
    try:
        wait_until(lambda: db.Metric.select().count() > 2000, timeout=60, what="ingestion under way")
        doomed.kill()  # mid-stream: what it read but did not commit is read again by the others
        produce(kafka_broker.bootstrap, topic, fleet(start, SAMPLES // 2, SAMPLES))
        wait_until(lambda: db.Metric.select().count() == DEVICES * SAMPLES, timeout=120,
                   what="every sample stored")
        # A worker killed while sending keeps the one row it claimed for CLAIM_S; then another process sends it.
        wait_until(lambda: len(alerts(telegram)) >= len(STRESSED), timeout=CLAIM_S + 30,
                   what="an alert per stressed device")
        time.sleep(2)  # a second alert for a device would be out by now
        assert "ingesting and sending" in worker.log
        assert ask(telegram, "/status").startswith(f"<b>Fleet: {DEVICES:,} machines</b> — 20 stressed")
        assert bot.stop() == 0 and worker.stop() == 0
    finally:
        for process in (bot, doomed, worker):
            process.__exit__()
    assert sorted(alerts(telegram)) == sorted(STRESSED), "one alert per stressed device, from whichever process"
    duplicates = db.db.execute_sql("SELECT COUNT(*) FROM (SELECT device, ts FROM metric GROUP BY device, ts "
                                      "HAVING COUNT(*) > 1) AS d").fetchone()[0]
    assert duplicates == 0
    assert db.Incident.select().count() == len(STRESSED)


def alerts(telegram: FakeTelegram) -> list[str]:
    """The devices of the stressed alerts sent to the chat."""
    return [c.params["text"].split("</b>")[0].removeprefix("🔴 <b>") for c in telegram.calls("sendMessage")
            if c.params.get("chat_id") == CHAT and c.params["text"].startswith("🔴") and c.status == 200]

