"""Helpers of the scenario tests: the bot's environment, Kafka messages, chat questions and buttons, waiting."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from tests.fakes.telegram_api import FakeTelegram

TOKEN = "123456:" + "A" * 35
CHAT = 4242
ADMIN = 7
WAIT_S = 30.0  # generous: a wait returns as soon as its condition holds, and CI machines can be busy


def bot_env(telegram: FakeTelegram, tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    """The bot's environment for one test; the consumer group is the test's own, so no test waits on the
    rebalance of another test's bot in the session's broker."""
    return {
        "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": telegram.url, "ALLOWED_CHAT_IDS": str(CHAT),
        "ADMIN_USER_IDS": str(ADMIN), "DATABASE_URL": database_url, "MODEL_STORE": f"file:{tmp_path}/models",
        "KAFKA_SESSION_TIMEOUT_MS": "2000", "POLL_INTERVAL_SECONDS": "0.2",
        "KAFKA_GROUP_ID": f"bot-{tmp_path.name}", **extra,
    }


def message(device: str, ts: float, **metrics: float) -> bytes:
    return json.dumps({"v": 1, "device": device, "ts": ts, "metrics": metrics}).encode()


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000, "linger.ms": 20})
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    assert producer.flush(10) == 0


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met after {timeout} s"
        time.sleep(0.1)


def ask(telegram: FakeTelegram, text: str, chat: int = CHAT, user: int = ADMIN,
        answer: Callable[[str], bool] = lambda _text: True) -> str:
    """The bot's next message in the chat after `text`; `answer` passes over others (a single-host bot's own alert
    may come first, on a loaded machine)."""
    mark = telegram.call_count()
    telegram.send_text(chat, text, user_id=user)
    return telegram.wait_for_message(chat, answer, after=mark, timeout=WAIT_S)["text"]


def chat_texts(telegram: FakeTelegram, chat: int = CHAT) -> list[str]:
    """The texts of the bot's messages in the chat, oldest first, as they stand now (after edits)."""
    return [m.get("text", "") for m in telegram.messages(chat)]


def press(telegram: FakeTelegram, message: dict, label: str, username: str = "alice") -> str:
    """Press the button labelled `label` on the bot's message in CHAT, as ADMIN; the answer the presser sees."""
    data = next(b["callback_data"] for row in message["reply_markup"]["inline_keyboard"] for b in row
                if b["text"] == label)
    query = telegram.press_button(CHAT, message["message_id"], data, user_id=ADMIN, username=username)
    return telegram.answer_for(query).params.get("text", "")


def current(telegram: FakeTelegram, message_id: int) -> dict:
    """The bot's message in CHAT as it stands now, after edits."""
    return next(m for m in telegram.messages(CHAT) if m["message_id"] == message_id)
