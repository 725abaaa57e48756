"""/history and /report: the words (pure functions of an incident and its events), the reads behind them on both
engines, and the handlers against the real application and the fake Bot API."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import peewee as pw
import pytest
import pytest_asyncio
from telegram.ext import Application

from bot import db
from bot.app import build_application
from bot.chat import alerts, history
from bot.chat.sender import Sender
from bot.config import load_settings
from bot.db import ChartPoint, ChartSeries, Event, Incident, incidents
from bot.db import history as stored
from bot.db.outbox import Route
from bot.pipeline.baselines import Baselines
from bot.pipeline.decide import Decider
from bot.pipeline.forecast import Forecaster
from bot.pipeline.lifecycle import Incidents, Rules
from ml.store import open_store
from schema.domain import Action, IncidentDetail
from tests.fakes.incidents import drivers, feed
from tests.fakes.samples import TS, series
from tests.fakes.scenario import ADMIN, CHAT, bot_env
from tests.fakes.telegram_api import FakeTelegram
from tests.test_handlers import process, say
from tests.test_texts import assert_valid_telegram_html

UTC_ = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")


def incident(kind: str = "stressed", state: str = "resolved", **fields: object) -> Incident:
    """A finished incident of pc1 as the store holds it: opened at TS, resolved 22 min later, its alert sent at
    TS + 5 s."""
    detail = fields.pop("detail", {"drivers": ["disk_percent"], "metrics": {"disk_percent": 91.0},
                                   "peak": {"disk_percent": 99.5, "mem_percent": 60.0},
                                   "peak_filesystems": {"/": 40.0, "/data": 99.5},
                                   "peak_processes": {"memory": [["java", 4121, 61.0], ["postgres", 77, 12.0]]}})
    values = {"id": 123, "device": "pc1", "kind": kind, "state": state, "opened_ts": TS, "last_ts": TS + 22 * 60,
              "resolved_ts": None if state == "open" else TS + 22 * 60, "last_p": 0.2, "peak_p": 0.98,
              "detail": IncidentDetail.from_json(json.dumps(detail)), "created": TS + 5, "updated": TS, "revision": 5}
    return Incident(**{**values, **fields})


def event(at: float, what: str, text: str = "", chat_id: int | None = None) -> Event:
    return Event(incident=123, at=at, what=what, text=text, chat_id=chat_id)


TIMELINE = [event(TS + 5, "opened", "stressed at 1764226800"), event(TS + 6, "sent", "message 17", CHAT),
            event(TS + 50, "pressed", "@bob_smith pressed correct"), event(TS + 66, "edited", "to revision 3", CHAT),
            event(TS + 600, "grouped", "named in a group message of 4 (message 30)", -100123),
            event(TS + 1205, "reminded"),
            event(TS + 1210, "escalated", "escalated to @alice (mention) in chat -100123"),
            event(TS + 22 * 60 + 5, "resolved", "recovered")]
SERIES = ChartSeries(60, [ChartPoint(TS - 300, TS - 250, {"cpu_percent": 20.0, "disk_percent": 50.0}, 0.05),
                          ChartPoint(TS, TS + 55, {"cpu_percent": 35.5, "disk_percent": 99.5}, 0.98)])


def test_a_history_line_says_the_number_the_machine_the_kind_when_how_long_and_who_answered() -> None:
    presses = [e for e in TIMELINE if e.what == "pressed"]

    line = history.history_line(incident(), presses, TS + 3600, UTC_)

    assert line == ("#123 <b>pc1</b> · stressed · 2025-11-27 07:00:00 UTC · lasted 22 min · "
                    "@bob_smith pressed correct after 45 s")
    assert history.history_line(incident(state="open"), [], TS + 3 * 3600, PARIS).endswith(
        "· 2025-11-27 08:00:00 CET · open for 3 h · nobody answered")
    assert "a false alarm after 22 min · labelled a false alarm by @carol after 1 min" in history.history_line(
        incident(state="false alarm", acked_by="@carol", acked_at=TS + 65), [], TS, UTC_)


def test_a_history_line_names_a_condition_a_forecast_and_a_silence_as_an_operator_would() -> None:
    raid = incident(kind="condition", detail={"metric": "cond:raid:md0", "evidence": "md0: 1 of 2 disks"})
    forecast = incident(kind="forecast", detail={"metric": "disk:/data", "level": 91.0, "slope_per_h": 2.1})

    assert [history.kind_of(i) for i in (raid, forecast, incident(kind="silent"), incident())] == [
        "RAID array degraded (md0)", "forecast of /data", "silent", "stressed"]


def test_history_lists_newest_first_and_says_how_many_more_past_one_message() -> None:
    many = [incident(id=n, device=f"web{n:02d}", opened_ts=TS - n * 60) for n in range(1, 61)]

    text = history.history("web*", 7 * 86400, many, 75, {}, TS + 3600, UTC_)

    lines = text.splitlines()
    assert lines[0] == "<b>Incidents of web* in the last 7 d</b>: 75, newest first"
    assert lines[1].startswith("#1 <b>web01</b>") and lines[2].startswith("#2 <b>web02</b>")
    shown = len([line for line in lines if line.startswith("#")])
    assert 20 < shown < 60 and lines[-2] == f"… and {75 - shown} more (narrow the pattern or the period)"
    assert len(text) <= 4096
    assert_valid_telegram_html(text)
    assert history.history("db?", 86400, [], 0, {}, TS, UTC_) == "No incident of db? in the last 1 d."


@pytest.mark.parametrize(("args", "parsed"), [
    (["pc1"], ("pc1", 7 * 86400.0)), (["web*", "24h"], ("web*", 86400.0)), (["db?", "90d"], ("db?", 90 * 86400.0)),
    (["pc1", "30m"], ("pc1", 1800.0)),
    ([], None), (["pc1", "91d"], None), (["pc1", "7"], None), (["pc1", "7 d"], None), (["pc1", "0h"], None),
    (["pc/1"], None), (["pc1", "7d", "more"], None),
])
def test_history_takes_a_pattern_and_a_period_up_to_90_days(args: list[str], parsed: object) -> None:
    assert history.parse_history(args) == parsed


@pytest.mark.parametrize(("args", "number"), [
    (["123"], 123), (["#7"], 7), ([], None), (["abc"], None), (["1", "2"], None), (["-1"], None),
    (["9" * 19], None),
])
def test_report_takes_one_incident_number(args: list[str], number: int | None) -> None:
    assert history.parse_report(args) == number


def test_the_report_reads_as_a_post_mortem_with_every_event_in_the_bots_time_zone() -> None:
    text = history.report(incident(), TIMELINE, SERIES, TS - 300, TS + 27 * 60, TS + 3600, PARIS)

    assert text.startswith("# Incident #123: pc1 stressed\n\n## Summary\n\n- **Machine:** pc1\n")
    for line in ("- **Started:** 2025-11-27 08:00:00 CET", "- **Ended:** 2025-11-27 08:22:00 CET (resolved)",
                 "- **Duration:** lasted 22 min", "- **Peak:** P(stressed) 98%",
                 "- **Answered:** @bob\\_smith pressed correct after 45 s",
                 "| Disk /data | 99.5 % | 91 % |", "- Top memory at its worst: java 61 % (pid 4121), postgres 12 %",
                 "| time | CPU | Disk (root) | P(stressed) |", "| 07:55:00 | 20 % | 50 % | 5% |",
                 "| 08:00:00 | 35.5 % | 99.5 % | 98% |",
                 "- 2025-11-27 08:00:05 CET: opened: pc1 stressed",
                 "- 2025-11-27 08:00:06 CET: message 17 sent to chat 4242",
                 "- 2025-11-27 08:00:50 CET: @bob\\_smith pressed correct",
                 "- 2025-11-27 08:01:06 CET: its message in chat 4242 edited to revision 3",
                 "- 2025-11-27 08:10:00 CET: named in a group message of 4 (message 30) in chat -100123",
                 "- 2025-11-27 08:20:05 CET: reminded: nobody had answered yet",
                 "- 2025-11-27 08:20:10 CET: escalated to @alice (mention) in chat -100123",
                 "- 2025-11-27 08:22:05 CET: resolved: recovered"):
        assert line in text.splitlines(), line
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == ["## Summary", "## What drove it", "## Samples", "## Timeline"]
    assert "1764226800" not in text, "no raw timestamps for a person to decode"


def test_the_report_of_a_condition_a_silence_and_an_open_incident_says_what_it_can() -> None:
    raid = incident(kind="condition", peak_p=None, detail={
        "metric": "cond:raid:md0", "evidence": "md0: 1 of 2 disks active, sdb failed",
        "severity": "critical", "expected_by": "@bob"})
    silent = incident(kind="silent", peak_p=None, detail={})
    still = incident(state="open")
    forecast = incident(kind="forecast", peak_p=None, detail={
        "metric": "disk:/data", "ts": TS, "level": 91.2, "slope_per_h": 2.1, "eta_s": 2.8 * 3600})
    empty = ChartSeries(1, [])

    raid_text = history.report(raid, [], empty, TS - 300, TS + 1800, TS + 3600, UTC_)
    silent_text = history.report(silent, [], SERIES, TS - 300, TS + 1800, TS + 3600, UTC_)
    open_text = history.report(still, [], SERIES, TS - 300, TS + 3600, TS + 3600, UTC_)

    assert "- **Evidence:** md0: 1 of 2 disks active, sdb failed" in raid_text
    assert "- **Severity:** critical" in raid_text and "**What to do:**" in raid_text
    assert "Peak" not in raid_text and "No sample of pc1 from 2025-11-27 06:55:00 UTC" in raid_text
    assert "- Nothing was written down." in raid_text
    assert "pc1 sent nothing from 2025-11-27 07:00:00 UTC to 2025-11-27 07:22:00 UTC." in silent_text
    assert "- **Ended:** not yet" in open_text and "- **Duration:** open for 1 h" in open_text
    assert "| metric | at its worst | now |" in open_text
    assert ("/data was at 91 % and moving +2.1 %/h: full in about 3 h (the trend up to the sample of "
            "2025-11-27 07:00:00 UTC).") in history.report(forecast, [], empty, TS, TS, TS, UTC_)


def test_outside_text_cannot_become_markup_in_the_report() -> None:
    evil = incident(kind="condition", detail={"metric": "cond:unit_failed:x", "evidence": "a|b *c* <script> [d](e)"})

    text = history.report(evil, [event(TS, "pressed", "@_x_ pressed expected")], SERIES, TS, TS, TS, UTC_)

    assert "a\\|b \\*c\\* \\<script\\> \\[d\\](e)" in text and "@\\_x\\_ pressed expected" in text
    assert history.md("pc1.web-2") == "pc1.web-2"


@pytest.fixture
def seeded(database: pw.Database) -> dict[str, int]:
    """web1: stressed 3 days ago and over; web2: stressed now; db1: over 10 days ago; pc1, a button pressed."""
    now = time.time()
    rules = Rules(threshold=0.7, hysteresis=0.15, recover_samples=3, repeat_s=1800, silent_after_s=None,
                  route=Route((CHAT,)))
    decider = Decider(Incidents(rules, alerts.reply), drivers, Forecaster(4 * 3600), Baselines())
    for device, start, ps in (("db1", now - 10 * 86400, [0.9] * 2 + [0.1] * 3),
                              ("web1", now - 3 * 86400, [0.9] * 2 + [0.1] * 3),
                              ("web2", now - 600, [0.9] * 2), ("pc1", now - 3600, [0.9] * 3 + [0.1] * 3)):
        feed(decider, device, ps, start=start, disk_percent=99.0)
    ids = {i.device: i.id for i in Incident.select()}
    incidents.press(ids["pc1"], Action.CORRECT, ADMIN, "@bob", now - 3000)
    return ids


def test_the_incidents_of_a_pattern_are_read_newest_first_with_their_count(seeded: dict[str, int]) -> None:
    week = time.time() - 7 * 86400

    found, total = stored.incidents_of("web*", week, 10)
    assert [i.device for i in found] == ["web2", "web1"] and total == 2
    assert [i.device for i in stored.incidents_of("*", week, 1)[0]] == ["web2"]
    assert stored.incidents_of("*", week, 1)[1] == 3, "db1 is older than the week"
    assert stored.incidents_of("db1", time.time() - 11 * 86400, 10)[1] == 1
    assert stored.incidents_of("web", week, 10) == ([], 0)
    presses = stored.presses([seeded["pc1"], seeded["web1"]])
    assert [p.text for p in presses[seeded["pc1"]]] == ["@bob pressed correct"] and presses[seeded["web1"]] == []
    assert stored.incident(seeded["pc1"]).device == "pc1" and stored.incident(99999) is None


def test_the_samples_around_an_incident_are_each_shown_when_few_and_averaged_when_many(database: pw.Database) -> None:
    full, fine = [{"disk_percent": 99.5}] * 3, [{"disk_percent": 50.0}] * 3
    db.store_batch(series("pc1", TS, full + fine), [0.9] * 3 + [0.1] * 3, 1, [])

    few = stored.samples_around("pc1", TS - 300, TS + 325, ["cpu_percent", "disk_percent"], 30)
    assert few.bucket_s == 0 and [(p.first_ts, p.metrics) for p in few.points] == [
        (TS + 5 * n, metrics) for n, metrics in enumerate(full + fine)]
    db.store_batch(series("pc1", TS + 30, fine * 20), [0.1] * 60, 1, [])
    many = stored.samples_around("pc1", TS - 300, TS + 625, ["disk_percent"], 30)
    assert many.bucket_s > 5 and 2 <= len(many.points) <= 30 and many.points[0].p_stressed == 0.9


@pytest_asyncio.fixture
async def application(telegram: FakeTelegram, tmp_path: Path, database: pw.Database) -> AsyncIterator[Application]:
    """The bot's application, initialized against the fake Bot API, on the test's database."""
    settings = load_settings(bot_env(telegram, tmp_path, "sqlite:///unused"))
    app = build_application(settings, open_store(settings.model_store))
    async with app:
        yield app


async def send_alerts(app: Application) -> None:
    """Deliver the outbox as the bot's sender does: the alerts, their edits and replies, with their buttons."""
    await Sender(alerts.renderer(Baselines()), alerts.group_message, 0).run(app.bot)


@pytest.mark.asyncio
async def test_history_lists_the_incidents_of_the_machines_matching_newest_first(
    application: Application, telegram: FakeTelegram, seeded: dict[str, int],
) -> None:
    (text,) = await say(application, telegram, "/history *")

    lines = text.splitlines()
    assert lines[0] == "<b>Incidents of * in the last 7 d</b>: 3, newest first"
    assert lines[1].startswith(f"#{seeded['web2']} <b>web2</b> · stressed · ") and "· open for 10 min · " in lines[1]
    assert lines[1].endswith("nobody answered")
    assert lines[2].startswith(f"#{seeded['pc1']} <b>pc1</b> · stressed · ") and "· lasted 25 s · " in lines[2]
    assert lines[2].endswith("@bob pressed correct after 9 min 30 s")  # opened by the batch stored at 30 s
    assert lines[3].startswith(f"#{seeded['web1']} <b>web1</b>")
    assert lines[-1] == "/report &lt;number&gt; sends one in full."
    (older,) = await say(application, telegram, "/history db* 30d")
    assert older.splitlines()[1].startswith(f"#{seeded['db1']} <b>db1</b>")


@pytest.mark.asyncio
async def test_history_and_report_without_what_they_need_get_their_usage_line(
    application: Application, telegram: FakeTelegram,
) -> None:
    for asked in ("/history", "/history web* 100d", "/history web* soon", "/history a b c"):
        assert await say(application, telegram, asked) == [history.HISTORY_USAGE], asked
    for asked in ("/report", "/report pc1", "/report 1 2"):
        assert await say(application, telegram, asked) == [history.REPORT_USAGE], asked
    assert await say(application, telegram, "/report 99999") == ["No incident #99999."]
    assert telegram.calls("sendDocument") == []


@pytest.mark.asyncio
async def test_report_sends_the_post_mortem_as_a_document_then_its_chart_in_reply(
    application: Application, telegram: FakeTelegram, seeded: dict[str, int],
) -> None:
    await send_alerts(application)
    number = seeded["pc1"]

    assert await say(application, telegram, f"/report {number}") == []

    document = telegram.wait_for_document(CHAT)
    assert document.params["document"]["filename"] == f"incident-{number}-pc1.md"
    assert document.params["caption"].startswith(f"📄 Incident #{number}: <b>pc1</b> stressed, ")
    text = document.params["document"]["data"].decode()
    assert text.startswith(f"# Incident #{number}: pc1 stressed\n")
    timeline = text.split("## Timeline")[1]
    assert ": @bob pressed correct\n" in timeline and ": resolved: recovered\n" in timeline
    assert f"sent to chat {CHAT}" in timeline
    chart = telegram.wait_for_photo(CHAT)
    assert chart.params["caption"].startswith("<b>pc1</b>, ")
    assert chart.result["reply_to_message"]["message_id"] == document.result["message_id"]


@pytest.mark.asyncio
async def test_the_report_button_of_a_finished_incident_sends_its_report_and_others_are_refused(
    application: Application, telegram: FakeTelegram, seeded: dict[str, int],
) -> None:
    await send_alerts(application)
    [finished] = [m for m in telegram.messages(CHAT) if m.get("text", "").startswith("✅ <b>pc1</b> recovered")]
    [still_open] = [m for m in telegram.messages(CHAT) if m.get("text", "").startswith("🔴 <b>web2</b>")]
    [report_data] = [b["callback_data"] for row in finished["reply_markup"]["inline_keyboard"] for b in row
                     if b["text"] == "📄 Report"]
    assert not [b for row in still_open["reply_markup"]["inline_keyboard"] for b in row if b["text"] == "📄 Report"]

    query = telegram.press_button(CHAT, finished["message_id"], report_data, user_id=ADMIN)
    await process(application, telegram)

    assert telegram.answer_for(query).params["text"] == f"Sending the report of incident #{seeded['pc1']}…"
    document = telegram.wait_for_document(CHAT)
    assert "@bob pressed correct" in document.params["document"]["data"].decode()
    telegram.wait_for_photo(CHAT)
    sent = len(telegram.calls("sendDocument"))
    for message_id, data, refusal in (
            (still_open["message_id"], f"i:{seeded['web2']}:report", history.still_open(seeded["web2"])),
            (finished["message_id"], "i:99999:report", "This button is not valid.")):
        query = telegram.press_button(CHAT, message_id, data, user_id=ADMIN)
        await process(application, telegram)
        assert telegram.answer_for(query).params["text"] == refusal
    assert len(telegram.calls("sendDocument")) == sent, "no report of an open or a forged incident"
