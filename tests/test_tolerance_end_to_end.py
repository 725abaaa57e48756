"""Tolerances with the real bot process, a real broker and the fake Bot API: what the operator who pressed ❌
sees, what the machine does next, and what a restart keeps."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot import db
from tests.fakes.bot_process import BotProcess
from tests.fakes.samples import messages
from tests.fakes.scenario import CHAT, ask, bot_env, current, press, produce, wait_until
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow
HEALTHY = {"cpu_percent": 20.0, "load_1m": 0.3, "mem_percent": 50.0, "disk_percent": 50.0}
FULLISH = {**HEALTHY, "disk_percent": 98.6}  # a build server's disk that is meant to sit there
FULL = {**HEALTHY, "disk_percent": 99.9}  # past the disk's hard ceiling of 99.5 %


def buttons(message: dict) -> list[str]:
    return [b["text"] for row in message.get("reply_markup", {}).get("inline_keyboard", []) for b in row]


def alerts(telegram: FakeTelegram, device: str) -> list[dict]:
    return [m for m in telegram.messages(CHAT) if m.get("text", "").startswith(f"🔴 <b>{device}</b> is stressed")
            or (m.get("text", "").startswith(("✅", "❌")) and f"<b>{device}</b>" in m["text"]
                and "reply_to_message" not in m)]


def stored(device: str) -> list[float]:
    """P(stressed) of the device's stored samples, oldest first."""
    query = db.Metric.select(db.Metric.p_stressed).where(db.Metric.device == device).order_by(db.Metric.ts)
    return [m.p_stressed for m in query]


def test_a_wrong_prediction_silences_that_machine_at_once_survives_a_restart_and_undo_restores_it(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path,
) -> None:
    env = bot_env(telegram, tmp_path, f"sqlite:///{tmp_path}/rigwatch.sqlite3", KAFKA_BOOTSTRAP_SERVERS=kafka,
                  KAFKA_TOPIC=topic, ALERT_EDIT_SECONDS="1", ALERT_GROUP_MIN="1000")  # each alert on its own
    t = time.time() - 600
    with BotProcess(env, tmp_path / "bot.log") as bot:
        produce(kafka, topic, messages("build1", t, [FULLISH] * 2))
        alert = telegram.wait_for_message(CHAT, lambda text: "<b>build1</b> is stressed" in text)
        assert "Disk (root) 98.6 %" in alert["text"]

        assert press(telegram, alert, "❌ Wrong prediction", "bob") == (
            "Thanks: Disk up to 98.6 % is now normal for build1. Undo on the alert takes it back.")
        wait_until(lambda: "is now normal" in current(telegram, alert["message_id"])["text"], what="the edit")
        edited = current(telegram, alert["message_id"])
        assert "Disk up to 98.6 % is now normal for build1 (❌ by @bob)" in edited["text"]
        assert buttons(edited) == ["↩️ Undo", "📈 Chart", "📄 Report"]

        produce(kafka, topic, messages("build1", t + 10, [FULLISH] * 3))
        produce(kafka, topic, messages("build2", t + 10, [FULLISH] * 2))
        telegram.wait_for_message(CHAT, lambda text: "<b>build2</b> is stressed" in text)
        db.open_database(env["DATABASE_URL"])
        wait_until(lambda: len(stored("build1")) == 5, what="build1's new samples stored")
        assert all(p < 0.1 for p in stored("build1")[2:]), "that machine, from its next sample"

        mark = telegram.call_count()
        produce(kafka, topic, messages("build1", t + 25, [FULL] * 2))
        past = telegram.wait_for_message(CHAT, lambda text: "<b>build1</b> is stressed" in text, after=mark)
        assert "Disk (root) 99.9 % (tolerated up to 98.6 % on build1, past its hard ceiling of 99.5 %)" in past["text"]
        produce(kafka, topic, messages("build1", t + 35, [HEALTHY] * 3))
        wait_until(lambda: "recovered" in current(telegram, past["message_id"])["text"], what="recovered")
        assert bot.stop() == 0

    with BotProcess(env, tmp_path / "bot.log") as bot:
        listed = ask(telegram, "/tolerance build1")
        assert "• Disk up to 98.6 % (❌ by @bob, " in listed and "hard ceiling 99.5 %" in listed
        produce(kafka, topic, messages("build1", t + 50, [FULLISH] * 2))
        wait_until(lambda: len(stored("build1")) == 12, what="build1's samples after the restart")
        assert max(stored("build1")[-2:]) < 0.1, "a restart keeps the tolerance"

        assert press(telegram, current(telegram, alert["message_id"]), "↩️ Undo", "bob") == (
            "Undone: build1 alerts on Disk as every machine does.")
        wait_until(lambda: "Undone by @bob" in current(telegram, alert["message_id"])["text"], what="undo shown")
        assert buttons(current(telegram, alert["message_id"])) == ["📈 Chart", "📄 Report"]
        mark = telegram.call_count()
        produce(kafka, topic, messages("build1", t + 60, [FULLISH] * 2))
        again = telegram.wait_for_message(CHAT, lambda text: "<b>build1</b> is stressed" in text, after=mark)
        assert "(tolerated" not in again["text"]
        assert bot.stop() == 0
    assert len(alerts(telegram, "build1")) == 3, "98.6 % before the ❌, 99.9 % past the ceiling, 98.6 % after Undo"
    assert "Traceback" not in bot.log
