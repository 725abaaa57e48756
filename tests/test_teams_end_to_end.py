"""Teams with the real bot process, a real broker and the fake Bot API enforcing Telegram's group limit (20
messages a minute, 429 beyond): two allowed chats, one of them a forum whose topics subscribe to parts of the
fleet; storms become one message per chat and topic; the bot's own outage is not the fleet's; a flood of
commands from one member delays no one else and no alert."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from bot import db
from tests.fakes.bot_process import BotProcess
from tests.fakes.scenario import ADMIN, WAIT_S, bot_env, message, produce, wait_until
from tests.fakes.services import KafkaBroker
from tests.fakes.telegram_api import GENERAL_TOPIC, FakeTelegram

pytestmark = pytest.mark.slow
HEALTHY = {"cpu_percent": 20.0, "load_1m": 0.3, "mem_percent": 50.0, "disk_percent": 50.0}
FULL_DISK = {**HEALTHY, "disk_percent": 99.5}
OPS = -100777  # a plain group: no subscription, it gets everything
FORUM = -1001234  # a forum: its topics subscribe
ALICE, BOB = ADMIN, 8


def bot_messages(telegram: FakeTelegram, chat: int, thread: int | None = None) -> list[dict]:
    return [m for m in telegram.messages(chat, thread_id=thread) if m["from"]["is_bot"]]


def names_in(message: dict) -> set[str]:
    """The machines a message names, in its text or on its buttons."""
    buttons = [b["text"] for row in message.get("reply_markup", {}).get("inline_keyboard", []) for b in row]
    return {word.strip("<b>/:›• ") for word in " ".join([message.get("text", ""), *buttons]).split()}


def command(telegram: FakeTelegram, chat: int, text: str, thread: int | None = None, user: int = ALICE) -> dict:
    """The bot's answer to this member's command (in a group it quotes the command it answers)."""
    mark = telegram.call_count()
    telegram.send_text(chat, text, user_id=user, thread_id=thread)
    return telegram.wait_for_call(
        "sendMessage", lambda c: c.status == 200 and c.params["chat_id"] == chat
        and c.result.get("reply_to_message", {}).get("from", {}).get("id") == user, WAIT_S, mark).result


def sends(telegram: FakeTelegram, after: int) -> list:
    """The messages the bot sent since call `after`."""
    return [c for c in telegram.calls()[after:] if c.method == "sendMessage" and c.status == 200]


def known(tmp_path: Path, machines: int) -> None:
    """Wait until the bot has stored samples of this many machines."""
    db.open_database(f"sqlite:///{tmp_path}/rigwatch.sqlite3")
    try:
        wait_until(lambda: db.Device.select().count() >= machines, what=f"{machines} machines known")
    finally:
        db.db.close()


@pytest.fixture
def teams(telegram: FakeTelegram) -> tuple[int, int]:
    """The forum's two team topics, and Telegram's group limit in force."""
    telegram.limit_groups(20)
    telegram.make_forum(FORUM)
    return telegram.open_topic(FORUM, "web team"), telegram.open_topic(FORUM, "db team")


def test_fifty_machines_stressed_in_the_same_second_are_one_message_per_chat_and_topic(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, teams: tuple[int, int],
) -> None:
    web, db_topic = teams
    env = bot_env(telegram, tmp_path, f"sqlite:///{tmp_path}/rigwatch.sqlite3", KAFKA_BOOTSTRAP_SERVERS=kafka,
                  KAFKA_TOPIC=topic, ALLOWED_CHAT_IDS=f"{OPS},{FORUM}", ALERT_EDIT_SECONDS="2")
    machines = [f"web{i:02d}" for i in range(50)]
    now = time.time()
    with BotProcess(env, tmp_path / "bot.log") as bot:
        assert "web*" in command(telegram, FORUM, "/subscribe web*", thread=web)["text"]
        assert "db*" in command(telegram, FORUM, "/subscribe db*", thread=db_topic)["text"]
        produce(kafka, topic, [(m.encode(), message(m, now - 5, **HEALTHY)) for m in machines])
        known(tmp_path, 50)
        sent = telegram.call_count()

        storm = time.monotonic()
        produce(kafka, topic, [(m.encode(), message(m, now, **FULL_DISK)) for m in machines])
        wait_until(lambda: any(set(machines) <= names_in(m) for m in bot_messages(telegram, OPS)),
                   what="every machine named in the ops chat")
        named_after = time.monotonic() - storm
        wait_until(lambda: any(set(machines) <= names_in(m) for m in bot_messages(telegram, FORUM, web)),
                   what="every machine named in the web topic")

        storm_messages = sends(telegram, sent)
        per_chat = {chat: [c for c in storm_messages if c.params["chat_id"] == chat] for chat in (OPS, FORUM)}
        assert 1 <= len(per_chat[OPS]) <= 3 and 1 <= len(per_chat[FORUM]) <= 3, "one message per outage"
        assert {c.params.get("message_thread_id") for c in per_chat[FORUM]} == {web}
        assert not bot_messages(telegram, FORUM, db_topic)[1:], "the db topic only has the answer to /subscribe"
        assert telegram.refused() == [], "the bot keeps to Telegram's group limit"

        group = next(m for m in bot_messages(telegram, OPS) if set(machines) <= names_in(m))
        assert group["text"].startswith("<b>🔴 50 machines stressed</b>") and "… and 30 more" in group["text"]
        assert "• <b>web00</b>: P " in group["text"] and "· Disk (root) 99.5 %" in group["text"]

        # A machine's button sends its own alert, with the buttons to correct it, in the same topic.
        in_topic = next(m for m in bot_messages(telegram, FORUM, web) if set(machines) <= names_in(m))
        button = next(b for row in in_topic["reply_markup"]["inline_keyboard"] for b in row if b["text"] == "web07 ›")
        query = telegram.press_button(FORUM, in_topic["message_id"], button["callback_data"], user_id=ALICE)
        assert telegram.answer_for(query).params["text"] == "Sending web07's own alert…"
        alert = telegram.wait_for_message(FORUM, lambda text: "<b>web07</b> is stressed" in text, thread_id=web)
        verdicts = [b["text"] for row in alert["reply_markup"]["inline_keyboard"] for b in row]
        assert "❌ Wrong prediction" in verdicts
        assert bot.stop() == 0
    print(f"50 machines stressed in the same second: all named after {named_after:.1f} s")
    assert "Traceback" not in bot.log


def test_a_broker_outage_opens_no_silence_and_thirty_machines_going_silent_are_one_message(
    telegram: FakeTelegram, tmp_path: Path, teams: tuple[int, int],
) -> None:
    machines = [f"db{i:02d}" for i in range(30)]
    reporting = {"canary", *machines}
    stop = threading.Event()
    with KafkaBroker() as broker:
        broker.create_topic("metrics")

        def agents() -> None:  # every machine reports every second, while the broker takes it
            while not stop.wait(1.0):
                with contextlib.suppress(AssertionError):  # the broker is down: agents buffer or drop
                    produce(broker.bootstrap, "metrics",
                            [(m.encode(), message(m, time.time(), **HEALTHY)) for m in sorted(reporting)])

        env = bot_env(telegram, tmp_path, f"sqlite:///{tmp_path}/rigwatch.sqlite3",
                      KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, KAFKA_TOPIC="metrics",
                      ALLOWED_CHAT_IDS=f"{OPS},{FORUM}", SILENT_AFTER="10")
        sender = threading.Thread(target=agents, daemon=True)
        sender.start()
        try:
            with BotProcess(env, tmp_path / "bot.log") as bot:
                known(tmp_path, 31)
                broker.stop()
                telegram.wait_for_message(OPS, lambda text: "Kafka is unreachable" in text, timeout=WAIT_S)
                time.sleep(15)  # longer than SILENT_AFTER: the machines are fine, the bot hears nothing
                broker.start()
                with contextlib.suppress(KafkaException):  # the agents' next send may have made it already
                    broker.create_topic("metrics")
                telegram.wait_for_message(OPS, lambda text: "Kafka is reachable again" in text, timeout=WAIT_S)
                time.sleep(8)  # the grace after the outage: samples flow again
                texts = [m.get("text", "") for m in bot_messages(telegram, OPS)]
                assert not any("stopped reporting" in t for t in texts), "no silence for the bot's own outage"

                reporting.intersection_update({"canary"})  # a switch fails: 30 machines fall silent together
                silent = telegram.wait_for_message(OPS, lambda text: "stopped reporting" in text, timeout=40)
                wait_until(lambda: "30 machines stopped reporting" in " ".join(
                    m.get("text", "") for m in bot_messages(telegram, OPS)), what="all 30 in one message")
                assert silent["text"].startswith("<b>⚪") or "db" in silent["text"]
                said = [m.get("text", "") for m in bot_messages(telegram, OPS)]
                assert sum("stopped reporting" in t for t in said) <= 3, "a handful of messages, not 30"
                db_topic_said = [m.get("text", "") for m in bot_messages(telegram, FORUM, teams[1])]
                assert not any("stopped reporting" in t for t in db_topic_said), "no one subscribed there yet"
                assert telegram.refused() == []
                assert bot.stop() == 0
        finally:
            stop.set()
            sender.join(10)
    assert "Traceback" not in bot.log


def test_a_flood_of_commands_from_one_member_delays_neither_another_member_nor_an_alert(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, teams: tuple[int, int],
) -> None:
    env = bot_env(telegram, tmp_path, f"sqlite:///{tmp_path}/rigwatch.sqlite3", KAFKA_BOOTSTRAP_SERVERS=kafka,
                  KAFKA_TOPIC=topic, ALLOWED_CHAT_IDS=f"{OPS},{FORUM}")
    with BotProcess(env, tmp_path / "bot.log") as bot:
        produce(kafka, topic, [(b"pc1", message("pc1", time.time() - 5, **HEALTHY))])
        known(tmp_path, 1)
        mark = telegram.call_count()
        for _ in range(1000):
            telegram.send_text(FORUM, "/status", user_id=ALICE)
        asked = time.monotonic()
        answer = command(telegram, FORUM, "/status", user=BOB)
        answered_after = time.monotonic() - asked
        assert "pc1" in answer["text"]

        produce(kafka, topic, [(b"pc1", message("pc1", time.time(), **FULL_DISK))])
        alerted = time.monotonic()
        telegram.wait_for_message(FORUM, lambda text: "<b>pc1</b> is stressed" in text, thread_id=GENERAL_TOPIC,
                                  after=mark)
        alert_after = time.monotonic() - alerted

        said = [c.params["text"] for c in sends(telegram, mark) if c.params["chat_id"] == FORUM]
        assert sum("Slow down" in text for text in said) == 1, "one slow down"
        assert sum(text.startswith("<b>Fleet") for text in said) <= 12, "the flood is dropped, not queued"
        assert telegram.refused() == []
        assert bot.stop() == 0
    print(f"flood: another member answered after {answered_after:.1f} s, the alert after {alert_after:.1f} s")
