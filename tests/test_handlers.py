"""Handlers driven in-process through `application.process_update`, as python-telegram-bot's own tests do:
the real application and client, the fake Bot API over HTTP, a real database; no bot process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import peewee as pw
import psycopg2
import pytest
import pytest_asyncio
from telegram import Update
from telegram.ext import Application

from agent.wire import Sample
from bot import db
from bot.app import build_application
from bot.chat import common, status
from bot.config import load_settings
from bot.db.tolerances import tolerate
from bot.pipeline.disks import Disks
from ml.store import open_store
from tests.fakes.samples import with_devices
from tests.fakes.scenario import ADMIN, CHAT, bot_env
from tests.fakes.telegram_api import FakeTelegram

STRANGER = 999
OTHER = 998  # a member of an allowed chat, not an admin
pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def application(telegram: FakeTelegram, tmp_path: Path, database: pw.Database) -> AsyncIterator[Application]:
    """The bot's application, initialized against the fake Bot API (its getMe), on the test's database."""
    settings = load_settings(bot_env(telegram, tmp_path, "sqlite:///unused"))
    app = build_application(settings, open_store(settings.model_store))
    async with app:
        yield app


async def process(app: Application, telegram: FakeTelegram) -> None:
    await app.process_update(Update.de_json(telegram.last_update(), app.bot))


async def say(app: Application, telegram: FakeTelegram, text: str, chat: int = CHAT, user: int = ADMIN) -> list[str]:
    """The texts the bot sends in answer to one message."""
    mark = telegram.call_count()
    telegram.send_text(chat, text, user_id=user)
    await process(app, telegram)
    return [c.params["text"] for c in telegram.calls()[mark:] if c.method == "sendMessage"]


async def test_a_chat_that_is_not_allowed_is_told_its_id_and_nothing_else(
    application: Application, telegram: FakeTelegram,
) -> None:
    db.store_batch([Sample("pc1", time.time(), {"cpu_percent": 12.0})], [0.1], 1, [])

    assert await say(application, telegram, "/status", chat=STRANGER, user=STRANGER) == [
        f"This chat is not allowed to use this bot. Its chat id is <code>{STRANGER}</code>: add it to "
        "ALLOWED_CHAT_IDS where the bot runs, then restart it."]


async def test_a_wrong_argument_gets_the_usage_line(application: Application, telegram: FakeTelegram) -> None:
    assert await say(application, telegram, "/status pc 1") == [
        "Usage: /status, /status <device> or /status <pattern>, e.g. /status web*"]
    assert await say(application, telegram, "/unmute") == ["Usage: /unmute <pattern>, e.g. /unmute web*"]
    assert await say(application, telegram, "/versions three") == [
        "Usage: /versions [version], e.g. /versions 3; /versions disk [version] for the disk model"]
    assert await say(application, telegram, "/versions disk three") == [
        "Usage: /versions [version], e.g. /versions 3; /versions disk [version] for the disk model"]
    assert await say(application, telegram, "/frobnicate") == ["I don't know that command. /help lists what I can do."]


async def test_status_names_a_machine_and_its_button_labels_the_sample_stressed(
    application: Application, telegram: FakeTelegram,
) -> None:
    (stored,) = db.store_batch([Sample("pc1", time.time() - 3 * 3600, {"disk_percent": 71.5})], [0.12], 1, [])

    (text,) = await say(application, telegram, "/status pc1")
    assert text.startswith("<b>pc1</b>: 🟢 normal") and "71.5 %" in text
    (sent,) = telegram.messages(CHAT)[-1:]
    (button,) = sent["reply_markup"]["inline_keyboard"][0]

    query = telegram.press_button(CHAT, sent["message_id"], button["callback_data"], user_id=ADMIN)
    await process(application, telegram)

    assert "pc1" in telegram.answer_for(query).params["text"]
    assert [(label.metric, label.value) for label in db.Label.select()] == [(stored.id, 1)]


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
async def test_status_does_not_wait_for_usual_ranges_never_worked_out_and_fills_them_in_once_they_are(
    application: Application, telegram: FakeTelegram, postgres_url: str,
) -> None:
    now = time.time()
    samples = [Sample("pc1", now - 7200 + 60 * i, {"disk_percent": 50.0}) for i in range(120)]
    db.store_batch(samples, [0.1] * len(samples), 1, [], on_stored=with_devices)
    holder = psycopg2.connect(postgres_url)  # a long transaction holds the history's downsampled table
    holder.cursor().execute("LOCK TABLE metric_5m IN ACCESS EXCLUSIVE MODE")
    released = []
    asyncio.get_running_loop().call_later(1.0, lambda: (holder.rollback(), released.append(time.time())))
    try:
        (first,) = await say(application, telegram, "/status pc1")
    finally:
        holder.close()

    assert status.USUAL_PENDING in first and "usually" not in first, first
    (answer,) = [c for c in telegram.calls("sendMessage") if c.params["text"] == first]
    assert answer.time < released[0], "answered while the history could not be read"
    (edit,) = telegram.calls("editMessageText")
    assert "Disk (root)              50 %       usually 50–50 %" in edit.params["text"], edit.params["text"]
    assert status.USUAL_PENDING not in edit.params["text"]
    assert edit.params["reply_markup"], "the ⚠️ button stays"


async def test_a_forged_button_is_not_valid_and_changes_nothing(
    application: Application, telegram: FakeTelegram,
) -> None:
    (stored,) = db.store_batch([Sample("pc1", time.time(), {"cpu_percent": 12.0})], [0.1], 1, [])

    for forged in (f"missed:{stored.id + 1}", "i:1:ok", f"missed:{stored.id}:x", "activate:1", f"missed:{stored.id}",
                   f"missed:{stored.id}:AAAAAAAAAAA"):
        query = telegram.press_button(CHAT, 1, forged, user_id=STRANGER if forged.startswith("activate") else ADMIN)
        await process(application, telegram)
        answer = telegram.answer_for(query).params["text"]
        assert answer in ("This button is not valid.", "Only admins can use this button."), (forged, answer)

    assert db.Label.select().count() == 0


async def test_only_admins_roll_back(application: Application, telegram: FakeTelegram) -> None:
    (refusal,) = await say(application, telegram, "/rollback", user=STRANGER)

    assert refusal.startswith("Only admins can use /rollback.") and f"<code>{STRANGER}</code>" in refusal


async def test_an_activate_button_answers_at_once_and_says_in_its_message_what_came_of_it(
    application: Application, telegram: FakeTelegram,
) -> None:
    question = await application.bot.send_message(CHAT, "Roll back from v1 to v9?")

    query = telegram.press_button(CHAT, question.message_id, "activate:9", user_id=ADMIN)
    await process(application, telegram)

    assert telegram.answer_for(query).params["text"] == "Activating v9…"
    assert [m["text"] for m in telegram.messages(CHAT) if m["message_id"] == question.message_id] == [
        "There is no model v9."]


FORUM = -1001234


@pytest_asyncio.fixture
async def teams(telegram: FakeTelegram, tmp_path: Path, database: pw.Database) -> AsyncIterator[Application]:
    """The bot with two allowed chats: a plain one and a forum group with topics."""
    telegram.make_forum(FORUM)
    settings = load_settings(bot_env(telegram, tmp_path, "sqlite:///unused", ALLOWED_CHAT_IDS=f"{CHAT},{FORUM}"))
    app = build_application(settings, open_store(settings.model_store))
    async with app:
        yield app


async def in_topic(app: Application, telegram: FakeTelegram, thread: int | None, text: str) -> list[dict]:
    """What the bot sends in answer to a message in a forum topic (None: the general topic)."""
    mark = telegram.call_count()
    telegram.send_text(FORUM, text, user_id=ADMIN, thread_id=thread)
    await process(app, telegram)
    return [c.params for c in telegram.calls()[mark:] if c.method == "sendMessage"]


async def test_subscriptions_belong_to_the_topic_they_were_made_in(teams: Application, telegram: FakeTelegram) -> None:
    db.store_batch([Sample("web1", time.time(), {"cpu_percent": 12.0})], [0.1], 1, [])
    web = telegram.open_topic(FORUM, "web team")

    (answer,) = await in_topic(teams, telegram, web, "/subscribe web* db?")
    assert answer["message_thread_id"] == web, "the answer is in the topic"
    assert answer["text"].startswith(f"📬 Topic {web} now gets the messages about: web*, db?.")
    assert "No machine matches db? yet" in answer["text"] and "web*" not in answer["text"].split("⚠️")[-1]
    (general,) = await in_topic(teams, telegram, None, "/subscribe mail*")
    assert "general topic now gets" in general["text"]

    (listed,) = await in_topic(teams, telegram, None, "/subscriptions")
    assert "<b>This chat's general topic</b>: mail* (@tester)" in listed["text"]
    assert f"<b>Topic {web}</b>: db? (@tester), web* (@tester)" in listed["text"]
    assert db.subscriptions(CHAT) == [], "the other chat is untouched"

    (removed,) = await in_topic(teams, telegram, web, "/unsubscribe")
    assert removed["text"] == f"📭 Removed 2 subscriptions from topic {web}."
    (last,) = await in_topic(teams, telegram, None, "/unsubscribe mail*")
    assert "it gets every message again" in last["text"]
    (usage,) = await in_topic(teams, telegram, None, "/subscribe <b>")
    assert usage["text"].startswith("Usage: /subscribe <pattern>…")


async def test_mute_takes_patterns_and_windows_and_status_takes_a_pattern(
    teams: Application, telegram: FakeTelegram,
) -> None:
    now = time.time()
    db.store_batch([Sample(name, now, {"cpu_percent": 12.0}) for name in ("web1", "web2", "db1")],
                   [0.1, 0.1, 0.1], 1, [], on_stored=with_devices)

    (muted,) = await say(teams, telegram, "/mute web* 2h deploy")
    assert muted.startswith("🔕 <b>web*</b> is muted for 2 h") and "by @tester: deploy" in muted
    (window,) = await say(teams, telegram, "/mute db1 daily 02:00-03:00 backups")
    assert window.startswith("🔁 <b>db1</b> is muted daily 02:00-03:00 (UTC), by @tester: backups")
    (lonely,) = await say(teams, telegram, "/mute mail* 1h")
    assert "No machine matches mail* yet" in lonely
    (bad,) = await say(teams, telegram, "/mute db1 daily 2-3")
    assert bad.startswith("'2-3' is not a time range") and "e.g. /mute db1 daily 02:00-03:00 backups" in bad

    (listed,) = await say(teams, telegram, "/muted")
    assert listed.startswith("<b>Mutes and windows</b> (3)")
    assert "🔕 <b>web*</b> until" in listed and "🔁 <b>db1</b> daily 02:00-03:00 (UTC; " in listed

    (fleet,) = await say(teams, telegram, "/status web*", user=STRANGER)
    assert "web1" in fleet and "web2" in fleet and "db1" not in fleet and "🔕" in fleet
    assert await say(teams, telegram, "/status x*", user=STRANGER) == ["No machine matches x*."]

    assert (await say(teams, telegram, "/unmute web*"))[0].startswith("🔔 web* is no longer muted (1 mute ended)")
    assert (await say(teams, telegram, "/unmute web*"))[0] == "web* has no mute of that pattern. /muted lists them."


async def test_a_member_who_floods_gets_one_slow_down_and_the_others_are_still_answered(
    teams: Application, telegram: FakeTelegram,
) -> None:
    answers = [await say(teams, telegram, "/help", chat=FORUM, user=ADMIN) for _ in range(40)]

    burst = teams.bot_data["command_budget"].burst
    assert sum(1 for a in answers if a and a[0].startswith("<b>Rigwatch</b>")) == burst, "a small burst is answered"
    assert answers[burst] == [common.SLOW_DOWN], "then one slow down"
    assert all(a == [] for a in answers[burst + 1:]), "then the flood is dropped, not queued"
    (other,) = await say(teams, telegram, "/help", chat=FORUM, user=STRANGER)
    assert other.startswith("<b>Rigwatch</b>"), "another member is answered at once"


async def test_tolerance_lists_what_a_machine_tolerates_and_only_whoever_set_it_or_an_admin_resets_it(
    application: Application, telegram: FakeTelegram,
) -> None:
    now = time.time()
    db.store_batch([Sample("build1", now - 3 * 3600, {"disk_percent": 98.6})], [0.05], 1, [])
    tolerate("build1", {"disk_percent": 98.6, "swap_percent": 80.0}, None, None, STRANGER, "@bob", now)

    (listed,) = await say(application, telegram, "/tolerance build1", user=STRANGER)
    assert listed.startswith("<b>build1</b> tolerates, from a ❌ on its alerts:")
    assert "• Disk up to 98.6 % (❌ by @bob, " in listed and "hard ceiling 99.5 %" in listed
    assert "• Swap up to 80 % (❌ by @bob, " in listed and "hard ceiling 97 %" in listed
    (status,) = await say(application, telegram, "/status build1")
    assert "Tolerates (a ❌ taught it):\n• Disk up to 98.6 %" in status

    (refused,) = await say(application, telegram, "/tolerance build1 reset", user=OTHER)
    assert refused.startswith("Only admins or whoever set them can reset these tolerances of <b>build1</b> "
                              "(set by @bob).")
    (by_admin,) = await say(application, telegram, "/tolerance build1 reset swap", user=ADMIN)
    assert by_admin == "↩️ <b>build1</b> no longer tolerates Swap: from its next sample it alerts as every machine does."
    (by_setter,) = await say(application, telegram, "/tolerance build1 reset", user=STRANGER)
    assert "no longer tolerates Disk" in by_setter
    (empty,) = await say(application, telegram, "/tolerance build1")
    assert empty.startswith("<b>build1</b> tolerates nothing of its own")
    for wrong in ("/tolerance", "/tolerance build1 reset cpu", "/tolerance build1 forget"):
        assert (await say(application, telegram, wrong))[0].startswith("Usage: /tolerance <device>")


async def test_the_disk_model_has_its_versions_its_riskiest_disks_and_learns_only_from_enough_labels(
    application: Application, telegram: FakeTelegram,
) -> None:
    await asyncio.to_thread(application.bot_data["disk_model"].ensure)
    assert await say(application, telegram, "/disks") == [
        "No disk has reported SMART yet: the agent reads it as root (or with CAP_SYS_RAWIO), and Prometheus can "
        "remote-write smartctl_exporter's series."]
    readings = {"smart_health": {"sdb": 1}, "smart_5_raw": {"sdb": 3}}
    db.store_batch([Sample("nas1", time.time(), {"cpu_percent": 5.0}, readings=readings,
                           notes={"smart_health": {"sdb": "ST3000DM001|Z1F0ABCD"}})], [0.1], 1, [],
                   on_stored=lambda new: Disks(application.bot_data["disk_model"]).observe(new[0]))

    (versions,) = await say(application, telegram, "/versions disk")
    (disks,) = await say(application, telegram, "/disks")
    mark = telegram.call_count()
    await say(application, telegram, "/retrain disk")  # answered in a task of its own: retraining takes a while
    retrain = (await asyncio.to_thread(telegram.wait_for_message, CHAT, after=mark))["text"]
    (rollback,) = await say(application, telegram, "/rollback disk")

    assert "▶ v1" in versions and "3060 drives, 60 failed" in versions and "27/60 warned ≥ 7 days ahead" in versions
    assert "nas1 sdb ST3000DM001 Z1F0ABCD: P " in disks
    assert retrain.startswith("The disk model learns from the fleet's disks once at least 2 are labelled failing")
    assert rollback == "v1 is the oldest version: nothing to roll back to."
