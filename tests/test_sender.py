"""The sender and its outbox: how long a flood limit pauses sending, and a row claimed once across processes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import peewee as pw
import pytest
import pytest_asyncio
from telegram import Bot

from bot import db
from bot.app import build_application
from bot.chat import alerts
from bot.chat.sender import Sender, retry_seconds
from bot.config import load_settings
from bot.db import Notice
from bot.db.outbox import Route, claim, due, record_sent
from bot.pipeline.baselines import Baselines
from bot.pipeline.decide import Decider
from bot.pipeline.forecast import Forecaster
from bot.pipeline.lifecycle import Incidents
from ml.store import open_store
from tests.fakes.incidents import RULES, drivers, feed
from tests.fakes.scenario import bot_env
from tests.fakes.telegram_api import GENERAL_TOPIC, FakeTelegram


def test_a_flood_limit_is_read_in_seconds_or_as_a_timedelta() -> None:
    assert retry_seconds(3) == 3.0
    assert retry_seconds(timedelta(seconds=42)) == 42.0


def test_a_notice_another_process_sent_after_this_one_read_it_is_not_claimed_again(decider: Decider) -> None:
    feed(decider, "pc1", [0.9])
    read_here = [notice.id for notice, _, _ in due(time.time())]  # this process reads the outbox...
    for notice_id in read_here:  # ...while another one claims, sends and records every row
        assert claim(Notice, notice_id, True)
        record_sent(notice_id, 100 + notice_id, 1, time.time())

    assert read_here and not any(claim(Notice, notice_id, True) for notice_id in read_here)


FORUM = -1009876


@pytest_asyncio.fixture
async def bot(telegram: FakeTelegram, tmp_path: Path, database: pw.Database) -> AsyncIterator[Bot]:
    """The real client of the bot's application, against the fake Bot API."""
    settings = load_settings(bot_env(telegram, tmp_path, "sqlite:///unused"))
    app = build_application(settings, open_store(settings.model_store))
    async with app:
        yield app.bot


@pytest.mark.asyncio
async def test_a_topic_that_is_gone_sends_its_messages_to_the_general_topic_and_says_so_once(
    bot: Bot, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture,
) -> None:
    telegram.make_forum(FORUM)
    topic = telegram.open_topic(FORUM, "web team")
    db.subscribe(FORUM, topic, ["pc*"], 7, "@alice")
    decider = Decider(Incidents(replace(RULES, route=Route((FORUM,))), alerts.reply), drivers, Forecaster(3600),
                      Baselines())
    sender = Sender(lambda incident: (alerts.alert(incident, {}, time.time()), None), alerts.group_message, 60)

    feed(decider, "pc1", [0.9], start=time.time() - 60)
    await sender.run(bot)
    assert [m["text"].split("</b>")[0] for m in telegram.messages(FORUM, thread_id=topic)] == ["🔴 <b>pc1"]

    telegram.delete_topic(FORUM, topic)
    feed(decider, "pc2", [0.9], start=time.time() - 30)
    feed(decider, "pc3", [0.9], start=time.time() - 10)
    await sender.run(bot)
    general = [m["text"].split("</b>")[0] for m in telegram.messages(FORUM, thread_id=GENERAL_TOPIC)
               if m["from"]["is_bot"]]
    assert general == ["🔴 <b>pc2", "🔴 <b>pc3"], "nothing is lost"
    assert sum("is gone" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.asyncio
async def test_a_flood_limit_in_one_group_holds_only_that_groups_messages(
    bot: Bot, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture,
) -> None:
    busy, quiet = -1001111, -1002222
    decider = Decider(Incidents(replace(RULES, route=Route((busy, quiet))), alerts.reply), drivers, Forecaster(3600),
                      Baselines())
    sender = Sender(lambda incident: (alerts.alert(incident, {}, time.time()), None), alerts.group_message, 60)
    telegram.limit_groups(2)
    for _ in range(2):  # the busy group spends its minute on something else
        await bot.send_message(busy, "a message of another bot feature")

    feed(decider, "pc1", [0.9], start=time.time() - 60)
    await sender.run(bot)
    feed(decider, "pc2", [0.9], start=time.time() - 30)
    await sender.run(bot)

    def alerts_in(chat_id: int) -> list[str]:
        return [m["text"].split("</b>")[0] for m in telegram.messages(chat_id) if m["text"].startswith("🔴")]

    assert alerts_in(quiet) == ["🔴 <b>pc1", "🔴 <b>pc2"], "the other group is not held up"
    assert alerts_in(busy) == [] and len(telegram.refused(busy)) == 1, "the busy group waits, asked once"
    waiting = [(notice.chat_id, incident.device) for notice, incident, _ in due(time.time())]
    assert waiting == [(busy, "pc1"), (busy, "pc2")], "its alerts stay queued"
    assert any(f"flood limit) in chat {busy}" in r.getMessage() for r in caplog.records)
