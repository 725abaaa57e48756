"""Incidents with the real bot process, a real broker and the fake Bot API: what an operator sees in the chat."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from bot import db
from bot.db import outbox
from tests.fakes.bot_process import BotProcess
from tests.fakes.samples import messages
from tests.fakes.scenario import ADMIN, CHAT, WAIT_S, ask, bot_env, current, message, press, produce, wait_until
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow
HEALTHY = {"cpu_percent": 20.0, "load_1m": 0.3, "mem_percent": 50.0, "disk_percent": 50.0}
FULL_DISK = {**HEALTHY, "disk_percent": 99.5}
OTHER_CHAT = -100123  # a group: sorted first


def incident_messages(telegram: FakeTelegram, device: str) -> list[dict]:
    """The bot's incident messages about the device (its alerts, however edited since)."""
    return [m for m in telegram.messages(CHAT) if m["from"]["is_bot"] and "reply_to_message" not in m
            and m.get("text", "").startswith(("🔴", "✅", "❌", "⚪", "📈")) and f"<b>{device}</b>" in m["text"]]


def replies_to(telegram: FakeTelegram, message_id: int) -> list[str]:
    return [m["text"] for m in telegram.messages(CHAT)
            if m.get("reply_to_message", {}).get("message_id") == message_id]


@pytest.fixture
def env(kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path) -> dict[str, str]:
    return bot_env(telegram, tmp_path, f"sqlite:///{tmp_path}/rigwatch.sqlite3", KAFKA_BOOTSTRAP_SERVERS=kafka,
                   KAFKA_TOPIC=topic, ALERT_EDIT_SECONDS="1")


def test_a_stressed_stretch_is_one_message_edited_while_it_lasts_then_recovered_with_a_reply(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, env: dict[str, str]
) -> None:
    start = time.time() - 600
    # P wobbles around the threshold for a while (a full disk being cleaned and filled), then recovers.
    wobble = [FULL_DISK, {**HEALTHY, "disk_percent": 95.5}] * 10
    with BotProcess(env, tmp_path / "bot.log") as bot:
        produce(kafka, topic, messages("pc1", start, [FULL_DISK] * 3))
        alert = telegram.wait_for_message(CHAT, lambda text: "<b>pc1</b> is stressed" in text)
        assert "Disk (root) 99.5 %" in alert["text"]
        produce(kafka, topic, messages("pc1", start + 15, wobble))
        wait_until(lambda: "(1 min" in current(telegram, alert["message_id"])["text"], what="an edit: 1 min")
        produce(kafka, topic, messages("pc1", start + 115, [HEALTHY] * 3))
        wait_until(lambda: "recovered" in current(telegram, alert["message_id"])["text"], what="recovered")
        wait_until(lambda: replies_to(telegram, alert["message_id"]), what="the recovery reply")
        press(telegram, current(telegram, alert["message_id"]), "📈 Chart")
        chart = telegram.wait_for_call("sendPhoto")
        assert chart.params["caption"].startswith("<b>pc1</b>, ") and chart.params["photo"]["size"] > 10_000
        assert bot.stop() == 0
    final = current(telegram, alert["message_id"])["text"]
    assert final.startswith("✅ <b>pc1</b> recovered after 2 min")
    [reply] = replies_to(telegram, alert["message_id"])
    assert re.fullmatch(r"✅ pc1 recovered after 2 min( \d+ s)?", reply), reply
    assert len(incident_messages(telegram, "pc1")) == 1, "one incident, however much P wobbled"
    assert "Sorry" not in " ".join(m.get("text", "") for m in telegram.messages(CHAT))
    assert "Traceback" not in bot.log


def test_an_alert_decided_before_a_crash_is_sent_after_the_restart_and_never_twice(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, env: dict[str, str]
) -> None:
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("Application started")
        telegram.set_down(True)  # stored and decided, but not sent: then the process dies
        produce(kafka, topic, messages("pc1", time.time() - 30, [FULL_DISK] * 2))
        bot.wait_log("Telegram did not take a message")
        bot.kill()
    telegram.set_down(False)
    db.open_database(env["DATABASE_URL"])
    assert db.Incident.select().count() == 1

    with BotProcess(env, tmp_path / "bot.log") as bot:
        # killed while a retry was claimed (a busy machine is slow to kill), the row waits for its claim to end
        alert = telegram.wait_for_message(CHAT, lambda text: "<b>pc1</b> is stressed" in text,
                                          timeout=outbox.CLAIM_S + 15)
        assert "labelled stressed" in press(telegram, alert, "✅ Correct")
        bot.kill()  # right after delivering: a restart must not send it again
    with BotProcess(env, tmp_path / "bot.log") as bot:
        produce(kafka, topic, messages("pc1", time.time() - 10, [FULL_DISK] * 2))
        wait_until(lambda: db.Metric.select().count() == 4, what="the new samples stored")
        time.sleep(1.5)  # the sender runs every second: a repeated alert would be out by now
        assert bot.stop() == 0
    assert len(incident_messages(telegram, "pc1")) == 1
    assert db.Label.get().value == 1


def test_a_slow_answer_to_sendmessage_is_not_sent_again_and_its_buttons_work(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, env: dict[str, str]
) -> None:
    telegram.delay_next("sendMessage", 7.0)  # longer than the Bot API client's default read timeout of 5 s
    with BotProcess(env, tmp_path / "bot.log") as bot:
        produce(kafka, topic, messages("pc1", time.time() - 30, [FULL_DISK] * 2))
        alert = telegram.wait_for_message(CHAT, lambda text: "<b>pc1</b> is stressed" in text)
        assert "labelled normal" in press(telegram, alert, "❌ Wrong prediction")  # before Telegram answered
        wait_until(lambda: "false alarm" in current(telegram, alert["message_id"])["text"], what="the edit")
        assert bot.stop() == 0
    assert len(incident_messages(telegram, "pc1")) == 1
    assert len(telegram.calls("sendMessage")) == 1


def test_a_chat_that_blocked_the_bot_is_logged_once_and_the_other_chats_get_their_alerts(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, env: dict[str, str]
) -> None:
    env = {**env, "ALLOWED_CHAT_IDS": f"{CHAT},{OTHER_CHAT}"}
    with BotProcess(env, tmp_path / "bot.log") as bot:
        start = ask(telegram, "/start")
        assert "I watch the fleet on Kafka topic" in start and "this chat and 1 other chat" in start
        telegram.fail_next("sendMessage", 403)  # the next send: the first alert to the lower chat id, the group
        produce(kafka, topic, messages("pc1", time.time() - 30, [FULL_DISK] * 2))
        telegram.wait_for_message(CHAT, lambda text: "<b>pc1</b> is stressed" in text)
        produce(kafka, topic, messages("pc2", time.time() - 30, [FULL_DISK] * 2))
        telegram.wait_for_message(CHAT, lambda text: "<b>pc2</b> is stressed" in text)
        assert bot.stop() == 0
    assert bot.log.count(f"chat {OTHER_CHAT} cannot receive messages") == 1
    assert [c.status for c in telegram.calls("sendMessage") if c.params["chat_id"] == OTHER_CHAT
            and "is stressed" in c.params["text"]] == [403, 200], "the next incident is tried again"


def test_a_flood_limit_pauses_sending_for_as_long_as_telegram_asks(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, env: dict[str, str]
) -> None:
    telegram.fail_next("sendMessage", 429, retry_after=3)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        produce(kafka, topic, messages("pc1", time.time() - 30, [FULL_DISK] * 2))
        telegram.wait_for_message(CHAT, lambda text: "<b>pc1</b> is stressed" in text, timeout=30)
        assert bot.stop() == 0
    refused, sent = telegram.calls("sendMessage")
    assert refused.status == 429 and sent.status == 200
    assert sent.time - refused.time >= 3.0
    assert "Telegram asks to wait 3 s" in bot.log


def test_six_hundred_alerts_due_after_a_telegram_outage_arrive_as_one_message_at_once(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, env: dict[str, str]
) -> None:
    devices = [f"node{i:03d}" for i in range(600)]
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("Application started")
        telegram.set_down(True)
        produce(kafka, topic, [(d.encode(), message(d, time.time() - 20, **FULL_DISK)) for d in devices])
        db.open_database(env["DATABASE_URL"])
        wait_until(lambda: db.Incident.select().count() == 600, what="600 incidents decided")
        mark = telegram.call_count()
        telegram.set_down(False)
        group = telegram.wait_for_message(CHAT, lambda text: "600 machines stressed" in text, after=mark, timeout=90)
        assert "… and 580 more" in group["text"] and "<b>node000</b>" in group["text"]
        time.sleep(2)  # anything else due would have gone out by now
        sent = [c for c in telegram.calls()[mark:] if c.method == "sendMessage" and c.status == 200]
        assert len(sent) == 1, "one message, not 600 draining at Telegram's pace"
        overview = ask(telegram, "/status")
        assert len(overview) <= 4096 and "Fleet: 600 machines" in overview and "… and 575 more" in overview

        (every,) = [b for row in group["reply_markup"]["inline_keyboard"] for b in row if b["text"] == "All 600 ›"]
        mark = telegram.call_count()
        telegram.press_button(CHAT, group["message_id"], every["callback_data"])
        wait_until(lambda: all(f"<b>{d}</b>" in " ".join(t.params["text"] for t in telegram.calls()[mark:]
                                                          if t.method == "sendMessage") for d in devices),
                   what="every one of the 600 named, on request")
        assert bot.stop() == 0


def test_a_silent_machine_opens_an_incident_and_its_return_resolves_it(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, env: dict[str, str]
) -> None:
    env = {**env, "SILENT_AFTER": "10"}
    with BotProcess(env, tmp_path / "bot.log") as bot:
        produce(kafka, topic, messages("pc1", time.time() - 10, [HEALTHY] * 3))
        produce(kafka, topic, messages("pc2", time.time() - 10, [HEALTHY] * 3))
        silent = telegram.wait_for_message(CHAT, lambda text: "<b>pc1</b> stopped reporting" in text, timeout=40)
        assert "last seen" in silent["text"]
        # pc2 went silent too: its alert, after pc1's, would otherwise come before the answer to /status.
        telegram.wait_for_message(CHAT, lambda text: "<b>pc2</b> stopped reporting" in text, timeout=WAIT_S)
        overview = ask(telegram, "/status")
        assert overview.index("pc1") < overview.index("pc2") and "silent" in overview
        produce(kafka, topic, messages("pc1", time.time(), [HEALTHY]))
        wait_until(lambda: "reporting again" in current(telegram, silent["message_id"])["text"], what="resolved")
        assert bot.stop() == 0
    assert replies_to(telegram, silent["message_id"])[0].startswith("✅ pc1 is reporting again after")


def test_mute_snooze_reminders_and_the_missed_problem_button(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, env: dict[str, str]
) -> None:
    env = {**env, "ALERT_REPEAT_MINUTES": "0.05"}  # a reminder every 3 s
    with BotProcess(env, tmp_path / "bot.log") as bot:
        muted = ask(telegram, "/mute db1 4s kernel upgrade")
        assert "db1" in muted and "kernel upgrade" in muted
        assert "kernel upgrade" in ask(telegram, "/muted")
        assert "Usage" in ask(telegram, "/mute")
        produce(kafka, topic, messages("db1", time.time() - 30, [FULL_DISK] * 2))
        db.open_database(env["DATABASE_URL"])
        wait_until(lambda: db.Metric.select().count() == 2, what="db1 stored while muted")
        assert not incident_messages(telegram, "db1"), "muted: stored and predicted, not alerted"
        # The mute ends while db1 is still stressed: the incident opens then.
        alert = telegram.wait_for_message(CHAT, lambda text: "<b>db1</b> is stressed" in text, timeout=20)
        wait_until(lambda: replies_to(telegram, alert["message_id"]), what="a reminder")
        assert replies_to(telegram, alert["message_id"])[0].startswith("⏰ db1 is still stressed")

        assert "snoozed for 8 h" in press(telegram, alert, "🔕 8 h")
        wait_until(lambda: "snoozed until" in current(telegram, alert["message_id"])["text"], what="snooze shown")
        reminded = len(replies_to(telegram, alert["message_id"]))
        time.sleep(4)
        assert len(replies_to(telegram, alert["message_id"])) == reminded, "no reminder while snoozed"

        assert "/unmute" in ask(telegram, "/mute pc7 2h disk swap")
        assert "no longer muted" in ask(telegram, "/unmute pc7")
        assert "Usage" in ask(telegram, "/mute pc7 2 hours")

        produce(kafka, topic, messages("pc3", time.time() - 5, [HEALTHY]))
        wait_until(lambda: db.Metric.select().where(db.Metric.device == "pc3").count() == 1, what="pc3")
        mark = telegram.call_count()
        telegram.send_text(CHAT, "/status pc3", user_id=ADMIN)
        status = telegram.wait_for_message(CHAT, lambda text: "pc3" in text, after=mark)
        chart = telegram.wait_for_call("sendPhoto", lambda call: call.time >= status["date"] - 1)
        assert chart.params["caption"].startswith("<b>pc3</b>")
        assert "labelled stressed" in press(telegram, status, "⚠️ Something is wrong here")
        assert bot.stop() == 0
    missed = db.Label.get()
    assert (missed.value, db.sample_by_id(missed.metric).device, missed.user_name) == (1, "pc3", "@alice")
    assert db.Mute.select().where(db.Mute.pattern == "db1").count() == 0, "the ended mute is gone"
