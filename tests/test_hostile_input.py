"""What a hostile or broken sender, or a forged update, does to the real bot process: nothing but a rejection."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from agent.wire import Sample
from bot import db
from tests.fakes.bot_process import BotProcess
from tests.fakes.samples import with_devices
from tests.fakes.scenario import ask, bot_env, message, produce, wait_until
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow


def test_poison_messages_in_one_batch_are_rejected_and_every_valid_one_is_stored(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    ts = time.time() - 60
    head = b'{"v":1,"device":"pc1","ts":%d,' % ts
    poison = {
        "too large for a float": head + b'"metrics":{"cpu_percent":' + b"9" * 400 + b"}}",
        "depth limit exceeded": head + b'"metrics":{"x":' + b"[" * 3000 + b"]" * 3000 + b"}}",
        "out of range (expected from 0 to 100)": head + b'"metrics":{"cpu_percent":1e200}}',
        "unknown version v=true": b'{"v":true,"device":"pc1","ts":%d,"metrics":{}}' % ts,
        "surrogate": head + b'"metrics":{"\\udc80":1}}',
        # A clock a year ahead: stored, it would stay the machine's newest sample and hide every real one.
        "365 d ahead of the receiver": b'{"v":1,"device":"pc1","ts":%d,"metrics":{}}' % (ts + 365 * 86400),
    }
    valid = [(f"ok{i}".encode(), message(f"ok{i}", ts + i, cpu_percent=10.0 + i)) for i in range(len(poison) + 1)]
    messages = [valid[0]]
    for good, bad in zip(valid[1:], poison.values(), strict=True):
        messages += [(b"pc1", bad), good]
    produce(kafka, topic, messages)
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    db.open_database(url)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        wait_until(lambda: db.Metric.select().count() == len(valid), what="every valid message stored")
        bot.wait_log("rejected message", count=len(poison))
        listing = ask(telegram, "/rejected")
        assert bot.stop() == 0
    assert sorted(m.device for m in db.Metric.select()) == sorted(key.decode() for key, _ in valid)
    reasons = [r.reason for r in db.Rejected.select().order_by(db.Rejected.id)]
    assert len(reasons) == len(poison)
    for expected, reason in zip(poison, reasons, strict=True):
        assert expected in reason
        assert expected.split(" (")[0] in listing
    assert "storing a batch failed" not in bot.log and "Traceback" not in bot.log


def test_status_of_a_machine_with_a_lone_surrogate_in_a_metric_name_is_answered(
    telegram: FakeTelegram, tmp_path: Path
) -> None:
    # A row stored before the wire format refused such names: what the bot says about it must still be sendable.
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    db.open_database(url)
    db.store_batch([Sample("pc1", time.time(), {"cpu_percent": 12.0, "fan\udc80": 900.0})], [0.1], 1, [],
                   on_stored=with_devices)
    env = bot_env(telegram, tmp_path, url, SAMPLE_INTERVAL_SECONDS="60")
    with BotProcess(env, tmp_path / "bot.log") as bot:
        own_alert = re.compile(r"<b>\w+</b> is stressed")  # the bot's machine, when the tests load it
        status = ask(telegram, "/status pc1", answer=lambda text: not own_alert.search(text))
        assert "pc1" in status and "CPU" in status and "fan?" in status
        assert "pc1" in ask(telegram, "/status", answer=lambda text: not own_alert.search(text))
        assert ask(telegram, "/status pc\udc80", answer=lambda text: not own_alert.search(text)).startswith(
            "Usage: /status")
        assert bot.stop() == 0
    assert "Traceback" not in bot.log
