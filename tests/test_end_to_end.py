"""The whole product as a user meets it: agent-format messages in Kafka, `python -m bot`, a Telegram chat."""

from __future__ import annotations

import json
import time
from pathlib import Path

import peewee as pw
import pytest

from bot import db
from tests.fakes.bot_process import BotProcess
from tests.fakes.scenario import ADMIN, CHAT, ask, bot_env, message, produce, wait_until
from tests.fakes.telegram_api import FakeTelegram

STRANGER_CHAT = 9999

pytestmark = pytest.mark.slow


def test_a_stressed_machine_is_alerted_labelled_and_shown_in_status(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, database_url: str
) -> None:
    ts = time.time() - 1
    produce(kafka, topic, [(b"pc1", message("pc1", ts, cpu_percent=99.0, mem_percent=97.5, disk_percent=40.0))])
    env = bot_env(telegram, tmp_path, database_url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        alert = telegram.wait_for_message(CHAT, lambda text: "pc1" in text, timeout=30)
        first_line = alert["text"].splitlines()[0]
        assert "pc1" in first_line and "%" in first_line
        buttons = alert["reply_markup"]["inline_keyboard"][0]
        assert [b["text"] for b in buttons] == ["✅ Correct", "❌ Wrong prediction"]

        query = telegram.press_button(CHAT, alert["message_id"], buttons[1]["callback_data"], user_id=ADMIN,
                                      username="alice")
        assert "normal" in telegram.answer_for(query).params["text"]
        edit = telegram.wait_for_call("editMessageText")
        assert "a false alarm" in edit.params["text"] and "by @alice" in edit.params["text"]

        status = ask(telegram, "/status pc1")
        assert "pc1" in status and "Memory" in status and "97.5" in status and "v1" in status
        overview = ask(telegram, "/status")
        assert "pc1" in overview and "stressed" in overview
        assert bot.stop() == 0

    db.open_database(database_url)
    (label,) = db.Label.select()
    labelled = db.Metric.get_by_id(label.metric)  # an id: on PostgreSQL the samples are partitioned by day
    assert (label.value, label.user_id, labelled.device, labelled.ts) == (0, ADMIN, "pc1", ts)


def test_every_message_is_stored_exactly_once_across_a_sigkill(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    total = 6000
    start = time.time() - total
    batch = [(f"pc{i % 7}".encode(), message(f"pc{i % 7}", start + i, cpu_percent=20.0 + i % 50)) for i in range(total)]
    batch[100] = (b"pc1", b"not json")  # a rejected message must be recorded once as well
    produce(kafka, topic, batch)
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic, BATCH_SIZE="250")
    db.open_database(url)

    with BotProcess(env, tmp_path / "bot.log") as bot:
        wait_until(lambda: db.Metric.select().count() > 0, what="first rows stored")
        bot.kill()
    stored_before_restart = db.Metric.select().count()
    assert stored_before_restart < total - 1, "the bot finished before it was killed: nothing was tested"

    with BotProcess(env, tmp_path / "bot.log") as bot:
        wait_until(lambda: db.Metric.select().count() + db.Rejected.select().count() >= total, timeout=60,
                   what="all messages stored")
        time.sleep(1)  # anything stored twice would arrive now
        assert bot.stop() == 0
    assert db.Metric.select().count() == total - 1
    assert db.Rejected.select().count() == 1
    distinct = db.Metric.select(db.Metric.device, db.Metric.ts).distinct().count()
    assert distinct == total - 1


def test_malformed_messages_are_rejected_with_a_reason_and_neighbours_are_stored(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    ts = time.time() - 10
    bad = {
        "not JSON": b"{cpu: 1",
        "not a finite number": b'{"v":1,"device":"pc1","ts":%f,"metrics":{"cpu_percent":NaN}}' % ts,
        "device must be": json.dumps({"v": 1, "ts": ts, "metrics": {"cpu_percent": 1}}).encode(),
        "ts": json.dumps({"v": 1, "device": "pc1", "ts": "yesterday", "metrics": {}}).encode(),
        "unknown version": json.dumps({"v": 2, "device": "pc1", "ts": ts, "metrics": {}}).encode(),
        "bytes, more than": b'{"v":1,"device":"pc1","ts":1,"metrics":{},"pad":"' + b"x" * 1_000_000 + b'"}',
    }
    messages = [(b"good1", message("good1", ts, cpu_percent=10.0))]
    messages += [(b"pc1", value) for value in bad.values()]
    messages += [(b"good2", message("good2", ts + 1, cpu_percent=11.0))]
    produce(kafka, topic, messages)
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("rejected message", count=len(bad))
        db.open_database(url)
        wait_until(lambda: db.Metric.select().count() == 2, what="both valid messages stored")
        listing = ask(telegram, "/rejected")
        assert "unknown version" in listing and f"{topic}[0]@" in listing
        assert bot.stop() == 0
    assert sorted(m.device for m in db.Metric.select()) == ["good1", "good2"]
    reasons = [r.reason for r in db.Rejected.select().order_by(db.Rejected.id)]
    assert len(reasons) == len(bad)
    for expected, reason in zip(bad, reasons, strict=True):
        assert expected in reason
    big = db.Rejected.select().order_by(db.Rejected.size.desc()).first()
    assert big.size > 1_000_000 and len(big.payload) <= 512


def test_a_chat_that_is_not_allowed_gets_no_data_and_forged_buttons_store_nothing(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    produce(kafka, topic, [(b"secret-host", message("secret-host", time.time(), cpu_percent=99.5, mem_percent=99.0))])
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        alert = telegram.wait_for_message(CHAT, lambda text: "secret-host" in text, timeout=30)
        data = alert["reply_markup"]["inline_keyboard"][0][1]["callback_data"]

        for command in ("/status", "/status secret-host", "/help"):
            reply = ask(telegram, command, chat=STRANGER_CHAT, user=66)
            assert "secret-host" not in reply
            assert str(STRANGER_CHAT) in reply and "ALLOWED_CHAT_IDS" in reply
        assert all(call.params["chat_id"] != STRANGER_CHAT for call in telegram.calls("sendMessage")
                   if "secret-host" in call.params["text"])

        refused = telegram.answer_for(telegram.press_button(STRANGER_CHAT, alert["message_id"], data, user_id=66))
        assert "not allowed" in refused.params["text"]
        incident_id = int(data.split(":")[1])
        for forged in (f"i:{incident_id}:yes", f"i:{incident_id + 1}:no", "drop table", f"label:{incident_id}:0",
                       f"i:{incident_id}:right"):  # the last one is a forecast's button, on a stressed incident
            answer = telegram.answer_for(telegram.press_button(CHAT, alert["message_id"], forged, user_id=ADMIN))
            assert "not valid" in answer.params["text"]
        assert "refused chat 9999" in bot.log
        assert bot.stop() == 0
    db.open_database(url)
    assert db.Label.select().count() == 0


def test_without_kafka_the_bot_watches_its_own_machine(telegram: FakeTelegram, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, SAMPLE_INTERVAL_SECONDS="0.3")
    env.pop("KAFKA_SESSION_TIMEOUT_MS")
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("single-host mode")
        db.open_database(url)
        wait_until(lambda: db.Metric.select().count() >= 2, what="two samples of this machine")
        device = db.Metric.select().first().device
        status = ask(telegram, f"/status {device}")
        assert device in status and "CPU" in status and "Memory" in status
        assert bot.stop() == 0


def test_an_alert_waits_out_a_telegram_outage_and_the_data_is_stored_meanwhile(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("Application started")
        telegram.set_down(True)
        produce(kafka, topic, [(b"pc1", message("pc1", time.time(), cpu_percent=99.0, mem_percent=98.0))])
        bot.wait_log("Telegram did not take a message")
        db.open_database(url)
        assert db.Metric.select().count() == 1
        telegram.set_down(False)
        alert = telegram.wait_for_message(CHAT, lambda text: "pc1" in text, timeout=15)
        assert alert["reply_markup"]["inline_keyboard"]
        assert bot.stop() == 0
    assert db.Notice.select().where(db.Notice.sent.is_null(False)).count() == 1


def test_a_dead_broker_is_logged_once_and_the_bot_keeps_answering(telegram: FakeTelegram, tmp_path: Path) -> None:
    from tests.fakes.services import free_port

    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("Kafka unreachable")
        assert "No machine has reported yet" in ask(telegram, "/status")
        time.sleep(2)  # librdkafka retries meanwhile: each retry must not be another log line
        assert bot.log.count("Kafka unreachable") == 1
        assert bot.stop() == 0


def test_a_tampered_active_model_is_refused_at_start_and_the_chat_is_told(
    telegram: FakeTelegram, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, SAMPLE_INTERVAL_SECONDS="0.3")
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("model v1 is active")
        assert bot.stop() == 0
    artifact = tmp_path / "models" / "v0001.skops"
    artifact.write_bytes(artifact.read_bytes() + b"tampered")
    db.open_database(url)
    before = db.Metric.select().count()

    with BotProcess(env, tmp_path / "bot.log") as bot:
        warning = telegram.wait_for_message(CHAT, lambda text: "No model could be loaded" in text)
        assert "SHA-256" in warning["text"]
        wait_until(lambda: db.Metric.select().count() >= before + 2, what="samples stored without a model")
        assert bot.stop() == 0
    unpredicted = db.Metric.select().order_by(db.Metric.id).offset(before)
    assert [m.p_stressed for m in unpredicted] == [None] * (db.Metric.select().count() - before)


def test_alerts_that_waited_out_a_long_backoff_arrive_within_seconds_of_telegram_coming_back(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("Application started")
        telegram.set_down(True)
        produce(kafka, topic, [(b"pc1", message("pc1", time.time(), cpu_percent=99.0, mem_percent=98.0))])
        db.open_database(url)
        wait_until(lambda: db.Notice.select(pw.fn.MAX(db.Notice.attempts)).scalar() == 1, what="a failed try")
        # 25 s out: retried after 5 and 15 s of backoff, the alert's next try would have been a minute away; the
        # bot asks Telegram (getMe) every few seconds instead, and sends what waited as soon as it answers.
        time.sleep(25)
        back = time.monotonic()
        telegram.set_down(False)
        alert = telegram.wait_for_message(CHAT, lambda text: "pc1" in text, timeout=30)
        arrived_after = time.monotonic() - back
        bot.wait_log("Telegram answers again: what waited is due at once")
        assert bot.stop() == 0
    assert alert["text"].startswith("🔴 <b>pc1</b> is stressed")
    assert arrived_after < 12, f"arrived {arrived_after:.0f} s after Telegram came back, not after its backoff"
