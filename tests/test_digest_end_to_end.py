"""The digest with the real bot process (reading a Kafka topic, so this machine's own state stays out of it), a
SQLite file and the fake Bot API enforcing Telegram's group limit: a digest arrives once at its time; after a
restart that spanned its time it arrives once, saying it is late; after another restart it does not come again."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot import db
from bot.chat import digest
from bot.db import Digest, Incident, digests
from schema.domain import Kind, State
from schema.schedule import Schedule
from tests.fakes.bot_process import BotProcess
from tests.fakes.scenario import ADMIN, WAIT_S, bot_env, wait_until
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow
GROUP = -100777
DAY = 86400.0


def stored(url: str, change: object) -> None:
    """Change the stored schedule while no bot runs, as the bot itself would have left it."""
    db.open_database(url)
    try:
        change()
    finally:
        db.db.close()


def digests_in(telegram: FakeTelegram) -> list[str]:
    """The captions of the digests the group got, oldest first."""
    return [m["caption"] for m in telegram.messages(GROUP) if "photo" in m and "digest</b>" in m.get("caption", "")]


def command(telegram: FakeTelegram, text: str) -> str:
    """The bot's answer to a member's command in the group (it quotes the command it answers)."""
    mark = telegram.call_count()
    telegram.send_text(GROUP, text, user_id=ADMIN)
    return telegram.wait_for_call(
        "sendMessage", lambda c: c.status == 200 and c.params["chat_id"] == GROUP
        and c.result.get("reply_to_message", {}).get("from", {}).get("id") == ADMIN, WAIT_S, mark).params["text"]


def test_a_digest_arrives_once_at_its_time_once_late_after_a_restart_that_spanned_it_and_never_twice(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path,
) -> None:
    telegram.limit_groups(20)
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, ALLOWED_CHAT_IDS=str(GROUP), KAFKA_BOOTSTRAP_SERVERS=kafka,
                  KAFKA_TOPIC=topic)
    began = time.time()
    now = datetime.fromtimestamp(began, UTC)
    this_minute = Schedule(None, now.hour * 60 + now.minute)
    due = this_minute.last_due(began, UTC)

    def due_this_minute() -> None:  # set as /digest would, yesterday's sent; a machine was stressed meanwhile
        digests.set_schedule(GROUP, None, this_minute, ADMIN, "@alice", UTC)
        Digest.update(last_due=due - DAY, covered_until=due - DAY).execute()
        Incident.create(device="web1", kind=Kind.STRESSED, state=State.RESOLVED, opened_ts=began - 3600,
                        last_ts=began - 3000, resolved_ts=began - 3000, created=began - 3600, updated=began - 3000)

    stored(url, due_this_minute)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        wait_until(lambda: len(digests_in(telegram)) == 1, what="the digest")
        assert bot.stop() == 0
    (first,) = digests_in(telegram)
    assert first.startswith("📰 <b>Daily digest</b>") and "🔴 1 stressed: web1" in first
    assert "late" not in first

    # The bot was down when the next one was due: its time, three minutes before the test began, went by with
    # no bot running, and the period before it was the last sent.
    earlier = datetime.fromtimestamp(began - 180, UTC)
    missed = Schedule(None, earlier.hour * 60 + earlier.minute)
    missed_due = missed.last_due(began, UTC)
    stored(url, lambda: Digest.update(minute=missed.minute, last_due=missed_due - DAY).execute())
    with BotProcess(env, tmp_path / "bot.log") as bot:
        wait_until(lambda: len(digests_in(telegram)) == 2, what="the late digest")
        assert bot.stop() == 0
    late = digests_in(telegram)[1]
    assert f"⏰ Sent late: the bot was not running at {earlier:%H:%M}." in late
    assert "<b>No incident</b> in this period." in late, "it starts where the first one ended"

    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("reading metrics from Kafka")
        time.sleep(digest.FIRST_S + 3)  # the job has looked, and found this period sent
        shown = command(telegram, "/digest")
        assert shown.startswith("📰 This chat gets a digest daily ") and "The last went out " in shown
        assert bot.stop() == 0
    assert len(digests_in(telegram)) == 2, "not again"
    assert telegram.refused() == [], "the bot keeps to Telegram's group limit"
    assert "Traceback" not in bot.log
    assert time.time() - began < 90
