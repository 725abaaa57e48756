"""/oncall, /escalate and /depends, and a team member's private chat, driven in-process through the real
application and client against the fake Bot API and a real database (as tests/test_handlers.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import peewee as pw
import pytest
import pytest_asyncio
from telegram import Update
from telegram.ext import Application

from agent.wire import Sample
from bot import db
from bot.app import build_application
from bot.config import load_settings
from bot.db import oncall
from bot.db.ingest import update_devices
from ml.store import open_store
from tests.fakes.scenario import ADMIN, bot_env
from tests.fakes.telegram_api import FakeTelegram

TEAM = -1001234
ALICE, BOB, STRANGER = 501, 502, 999
pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def application(telegram: FakeTelegram, tmp_path: Path, database: pw.Database) -> AsyncIterator[Application]:
    telegram.require_start()
    settings = load_settings(bot_env(telegram, tmp_path, "sqlite:///unused", ALLOWED_CHAT_IDS=str(TEAM),
                                     DEPENDENCIES="db-* on sw-core"))
    app = build_application(settings, open_store(settings.model_store))
    async with app:
        yield app


async def say(app: Application, telegram: FakeTelegram, text: str, user: int = ADMIN, chat: int = TEAM,
              username: str = "admin") -> list[str]:
    """What the bot answers one message, in any chat."""
    mark = telegram.call_count()
    telegram.send_text(chat, text, user_id=user, username=username)
    await app.process_update(Update.de_json(telegram.last_update(), app.bot))
    return [c.params["text"] for c in telegram.calls()[mark:] if c.method == "sendMessage" and c.status == 200]


async def test_the_roster_names_people_the_bot_has_seen_and_says_who_a_direct_message_cannot_reach(
    application: Application, telegram: FakeTelegram,
) -> None:
    (unknown,) = await say(application, telegram, "/oncall @alice mon-fri 09:00-18:00")
    assert unknown.startswith("I don't know @alice in this chat yet") and "send /start here" in unknown

    await say(application, telegram, "/help", user=ALICE, username="alice")
    (put,) = await say(application, telegram, "/oncall @alice mon-fri 09:00-18:00")
    assert put.startswith("👤 @alice is on call weekdays 09:00-18:00 (UTC).")
    assert "⚠️ @alice has not started me in a private chat" in put

    (dm,) = await say(application, telegram, "/start", user=ALICE, chat=ALICE, username="alice")
    assert dm.startswith("✅ I can message you directly now")
    (elsewhere,) = await say(application, telegram, "/status", user=ALICE, chat=ALICE, username="alice")
    assert elsewhere.startswith("Here I only send you alerts when an escalation calls you")
    (refused,) = await say(application, telegram, "/start", user=STRANGER, chat=STRANGER, username="eve")
    assert refused.startswith("This chat is not allowed to use this bot.")
    assert oncall.reachable([ALICE, STRANGER]) == {ALICE}

    await say(application, telegram, "/help", user=BOB, username="bob")
    await say(application, telegram, "/oncall @bob other")
    (roster,) = await say(application, telegram, "/oncall", user=BOB, username="bob")
    assert "Shifts</b> (UTC" in roster and "• @alice weekdays 09:00-18:00\n• @bob other" in roster
    assert "⚠️ @bob has not started me" in roster and "⚠️ @alice" not in roster


async def test_a_wrong_or_unauthorised_roster_change_gets_a_clear_answer_and_changes_nothing(
    application: Application, telegram: FakeTelegram,
) -> None:
    await say(application, telegram, "/help", user=ALICE, username="alice")
    await say(application, telegram, "/oncall @alice other")

    (not_admin,) = await say(application, telegram, "/oncall @alice off", user=ALICE, username="alice")
    assert not_admin.startswith("Only admins can use /oncall.")
    for wrong in ("/oncall @alice sometimes", "/oncall @alice mon-fri", "/oncall @alice 09:00-18:00 mon-fri",
                  "/oncall @alice fri-mon 25:00-26:00"):
        (answer,) = await say(application, telegram, wrong)
        assert "Usage: /oncall" in answer, wrong
    assert [s.describe() for s in oncall.shifts(TEAM)] == ["other"]

    (off,) = await say(application, telegram, "/oncall @alice off")
    assert off == "👤 @alice is off the roster (1 shift removed)." and oncall.shifts(TEAM) == []
    (empty,) = await say(application, telegram, "/oncall")
    assert empty.startswith("Nobody is on call in this chat.")


async def test_a_chain_is_set_by_admins_shown_to_everyone_and_warns_of_what_would_reach_nobody(
    application: Application, telegram: FakeTelegram,
) -> None:
    (none,) = await say(application, telegram, "/escalate", user=ALICE, username="alice")
    assert none.startswith("No escalation in this chat")
    (unknown,) = await say(application, telegram, "/escalate 10m oncall, 20m dm @carol")
    assert unknown.startswith("I don't know @carol in this chat yet")
    (disorder,) = await say(application, telegram, "/escalate 20m oncall, 10m oncall")
    assert disorder.startswith("10m: each step comes later than the one before.\nUsage: /escalate")
    (not_admin,) = await say(application, telegram, "/escalate 10m oncall", user=ALICE, username="alice")
    assert not_admin.startswith("Only admins can use /escalate.")
    assert oncall.chain(TEAM, None) == []

    (chain,) = await say(application, telegram, "/escalate 10m oncall, 20m dm @alice, 1h -555")
    assert chain.startswith("⏫ <b>Escalation in this chat</b> (/escalate 10m oncall, 20m dm @alice, 1h -555)")
    assert "• after 20 min @alice gets the alert in a direct message" in chain
    assert "⚠️ Nobody is on call right now" in chain and "⚠️ @alice has not started me" in chain
    assert "⚠️ Chat -555 is not in ALLOWED_CHAT_IDS" in chain
    assert [s.user for s in oncall.chain(TEAM, None)] == [None, ALICE, None]

    (off,) = await say(application, telegram, "/escalate off")
    assert off == "⏫ No more escalation in this chat." and oncall.chain(TEAM, None) == []


async def test_dependencies_are_listed_with_those_deployed_and_only_admins_change_them(
    application: Application, telegram: FakeTelegram,
) -> None:
    now = time.time()
    stored = db.store_batch([Sample(name, now, {"cpu_percent": 5.0}) for name in ("sw-rack1", "rack1-01", "rack1-02")],
                            [0.1] * 3, 1, [])
    update_devices({sample.device: [sample] for sample in stored}, now)

    (set_,) = await say(application, telegram, "/depends rack1-* on sw-rack1")
    assert set_.startswith("🔗 rack1-* stands behind <b>sw-rack1</b> (2 machines now)")
    (listed,) = await say(application, telegram, "/depends", user=ALICE, username="alice")
    assert "• rack1-* on <b>sw-rack1</b> (2 machines)\n• db-* on <b>sw-core</b> (0 machines) · DEPENDENCIES" in listed
    (not_admin,) = await say(application, telegram, "/depends rack1-* off", user=ALICE, username="alice")
    assert not_admin.startswith("Only admins can use /depends.")
    for wrong in ("/depends rack1-*", "/depends rack1-* under sw-rack1", "/depends rack1-* on sw-*",
                  "/depends sw on sw"):
        (answer,) = await say(application, telegram, wrong)
        assert "Usage: /depends" in answer, wrong
    (deployed,) = await say(application, telegram, "/depends db-* off")
    assert "It is set in DEPENDENCIES where the bot runs" in deployed

    (off,) = await say(application, telegram, "/depends rack1-* off")
    assert off == "🔗 rack1-* no longer stands behind anything." and oncall.dependencies() == []
