"""The on-call loop with the real bot process, a real broker and the fake Bot API enforcing Telegram's limits (20
messages a minute per group, 429 beyond; a private chat refuses the bot until its user pressed Start): an alert
nobody answers climbs three steps and stops on 👀 On it; a switch that goes silent with the twenty machines behind
it is one message, and its return one reply.

An escalation step waits minutes; the test moves the incident's opening back in the database instead of waiting,
which is what the passing of time does to it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import db
from tests.fakes.bot_process import BotProcess
from tests.fakes.scenario import ADMIN, WAIT_S, bot_env, message, produce, wait_until
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow
HEALTHY = {"cpu_percent": 20.0, "load_1m": 0.3, "mem_percent": 50.0, "disk_percent": 50.0}
FULL_DISK = {**HEALTHY, "disk_percent": 99.5}
OPS, MANAGERS = -100777, -100888
ALICE, BOB = ADMIN, 8


@contextlib.contextmanager
def agents(bootstrap: str, topic: str, reporting: dict[str, dict[str, float]]) -> Iterator[None]:
    """Every machine in `reporting` sends its metrics every second (the dict may change meanwhile)."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(1.0):
            produce(bootstrap, topic, [(name.encode(), message(name, time.time(), **metrics))
                                       for name, metrics in list(reporting.items())])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def command(telegram: FakeTelegram, chat: int, text: str, user: int, username: str) -> str:
    mark = telegram.call_count()
    telegram.send_text(chat, text, user_id=user, username=username)
    return telegram.wait_for_message(chat, after=mark, timeout=WAIT_S)["text"]


def in_database(tmp_path: Path, work: callable) -> object:
    """Run `work` on the bot's database from the test process."""
    db.open_database(f"sqlite:///{tmp_path}/rigwatch.sqlite3")
    try:
        return work()
    finally:
        db.db.close()


def opened_ago(tmp_path: Path, device: str, seconds: float) -> None:
    """The device's open incident opened `seconds` ago, as far as escalation can tell."""
    in_database(tmp_path, lambda: db.Incident.update(created=time.time() - seconds).where(
        (db.Incident.device == device) & (db.Incident.state == "open")).execute())


def buttons(message: dict) -> dict[str, str]:
    return {b["text"]: b["callback_data"] for row in message.get("reply_markup", {}).get("inline_keyboard", [])
            for b in row}


def test_an_unanswered_alert_escalates_through_three_steps_and_stops_on_on_it(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path,
) -> None:
    telegram.limit_groups(20)
    telegram.require_start()
    env = bot_env(telegram, tmp_path, f"sqlite:///{tmp_path}/rigwatch.sqlite3", KAFKA_BOOTSTRAP_SERVERS=kafka,
                  KAFKA_TOPIC=topic, ALLOWED_CHAT_IDS=f"{OPS},{MANAGERS}", SILENT_AFTER="20")
    reporting = {"pc1": HEALTHY}
    with BotProcess(env, tmp_path / "bot.log") as bot, agents(kafka, topic, reporting):
        command(telegram, MANAGERS, "/subscribe db*", ALICE, "alice")  # the managers hear of pc1 only if escalated
        command(telegram, OPS, "/help", BOB, "bob")
        command(telegram, OPS, "/help", ALICE, "alice")
        assert command(telegram, ALICE, "/start", ALICE, "alice").startswith("✅ I can message you directly now")
        assert "@alice is on call" in command(telegram, OPS, "/oncall @alice other", ALICE, "alice")
        chain = command(telegram, OPS, "/escalate 1m oncall, 2m dm oncall, 3m -100888, 4m @bob", ALICE, "alice")
        assert chain.startswith("⏫ <b>Escalation in this chat</b>") and "⚠️" not in chain

        reporting["pc1"] = FULL_DISK
        alert = telegram.wait_for_message(OPS, lambda text: text.startswith("🔴 <b>pc1</b> is stressed"), WAIT_S)
        assert "👀 On it" in buttons(alert)

        mark = telegram.call_count()
        opened_ago(tmp_path, "pc1", 61)
        mention = telegram.wait_for_message(OPS, lambda text: text.startswith("⏫ "), WAIT_S, mark)
        assert mention["text"].startswith(f'⏫ <a href="tg://user?id={ALICE}">@alice</a>: nobody answered pc1\'s '
                                          "alert for 1 min.")
        assert mention["reply_to_message"]["message_id"] == alert["message_id"]

        opened_ago(tmp_path, "pc1", 121)
        direct = telegram.wait_for_message(ALICE, lambda text: text.startswith("🔴 <b>pc1</b> is stressed"), WAIT_S)
        opened_ago(tmp_path, "pc1", 181)
        managers = telegram.wait_for_message(MANAGERS, lambda text: text.startswith("🔴 <b>pc1</b> is stressed"),
                                             WAIT_S)
        assert "⏫ escalated to @alice (direct message) at" in managers["text"]

        query = telegram.press_button(ALICE, direct["message_id"], buttons(direct)["👀 On it"], user_id=ALICE,
                                      username="alice")
        assert telegram.answer_for(query).params["text"].startswith("Thanks: you are on pc1.")
        wait_until(lambda: "👀 @alice is on it" in next(
            m for m in telegram.messages(OPS) if m["message_id"] == alert["message_id"])["text"],
            what="the alert in the team's chat says who took it")

        calls = telegram.call_count()
        opened_ago(tmp_path, "pc1", 241)
        time.sleep(12)  # two rounds of the watch (every 5 s with SILENT_AFTER 20)
        assert not [c for c in telegram.calls()[calls:] if c.method == "sendMessage"], "👀 stopped the chain"
        shown = next(m for m in telegram.messages(OPS) if m["message_id"] == alert["message_id"])["text"]
        assert shown.count("⏫ escalated to") == 3 and "👀 On it" not in buttons(
            next(m for m in telegram.messages(OPS) if m["message_id"] == alert["message_id"]))
        assert telegram.refused() == [], "within Telegram's group limit"
        assert bot.stop() == 0
    assert "Traceback" not in bot.log
    print("\n".join(["escalation as the chats show it:", alert["text"], mention["text"], direct["text"], shown]))


def test_a_switch_silent_with_twenty_machines_behind_it_is_one_message_and_one_recovery(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path,
) -> None:
    telegram.limit_groups(20)
    env = bot_env(telegram, tmp_path, f"sqlite:///{tmp_path}/rigwatch.sqlite3", KAFKA_BOOTSTRAP_SERVERS=kafka,
                  KAFKA_TOPIC=topic, ALLOWED_CHAT_IDS=str(OPS), SILENT_AFTER="10")
    rack = ["sw-rack1", *(f"rack1-{n:02d}" for n in range(20))]
    reporting = {name: HEALTHY for name in ["canary", *rack]}
    with BotProcess(env, tmp_path / "bot.log") as bot, agents(kafka, topic, reporting):
        command(telegram, OPS, "/help", ALICE, "alice")
        wait_until(lambda: in_database(tmp_path, lambda: db.Device.select().count()) == 22, what="22 machines known")
        assert "(20 machines now)" in command(telegram, OPS, "/depends rack1-* on sw-rack1", ALICE, "alice")

        calls = telegram.call_count()
        for name in rack:  # the switch fails: nothing behind it reaches the broker
            del reporting[name]
        alert = telegram.wait_for_message(OPS, lambda text: text.startswith("⚪ <b>sw-rack1</b> stopped reporting"),
                                          WAIT_S, calls)
        wait_until(lambda: "20 machines behind it are silent too" in next(
            m for m in telegram.messages(OPS) if m["message_id"] == alert["message_id"])["text"],
            what="the switch's alert names the machines behind it")
        time.sleep(5)  # two more rounds of the watch: nothing else is said

        reporting.update({name: HEALTHY for name in rack})
        back = telegram.wait_for_message(OPS, lambda text: text.startswith("✅ sw-rack1 is reporting again"),
                                         WAIT_S, calls)
        time.sleep(5)
        sent = [c.params["text"] for c in telegram.calls()[calls:] if c.method == "sendMessage" and c.status == 200]
        assert sent == [alert["text"], back["text"]], "one message and one recovery"
        assert back["text"].endswith("· the 20 machines behind it too")
        shown = next(m for m in telegram.messages(OPS) if m["message_id"] == alert["message_id"])["text"]
        assert telegram.refused() == []
        assert bot.stop() == 0
    assert "Traceback" not in bot.log
    print("\n".join(["a switch and its rack as the chat shows them:", shown, back["text"]]))
