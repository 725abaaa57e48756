"""The digest: its schedule's arithmetic across daylight saving, what it tells of a period as read from a real
SQLite file and a real PostgreSQL server, /digest in a chat and in a forum topic, and the job that sends each
period once, late when it must, through the real application and the fake Bot API."""

from __future__ import annotations

import asyncio
import io
import itertools
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import peewee as pw
import pytest
import pytest_asyncio
from matplotlib import image
from telegram import Update
from telegram.ext import Application, CallbackContext, Job

from agent.wire import Sample
from bot import db
from bot.app import build_application
from bot.chat import charts, common, digest
from bot.config import load_settings
from bot.db import Digest, DiskLabel, Expected, ForecastLabel, Incident, Label, Tolerance, digests
from bot.pipeline.forecast import Forecaster
from ml.store import ModelVersion, open_store
from ml.versions import scores
from schema.conditions import key
from schema.domain import IncidentDetail, Kind, State
from schema.schedule import Schedule, day_starts
from tests.fakes.scenario import ADMIN, CHAT, bot_env
from tests.fakes.telegram_api import FakeTelegram

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2025, 11, 27, 12, 0, tzinfo=UTC).timestamp()  # a Thursday
DAY = 86400.0
FORUM = -1001234
MEMBER = 998  # in an allowed chat, not an admin
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def berlin(ts: float) -> str:
    return datetime.fromtimestamp(ts, BERLIN).strftime("%a %Y-%m-%d %H:%M %Z")


# --- when a digest is due ----------------------------------------------------------------------------------------

def test_a_daily_digest_stays_at_its_time_when_the_clocks_change() -> None:
    nine = Schedule.parse(["daily", "09:00"])
    spring = datetime(2025, 3, 31, 12, 0, tzinfo=BERLIN).timestamp()  # the clocks went forward on the 30th
    autumn = datetime(2025, 10, 26, 12, 0, tzinfo=BERLIN).timestamp()  # and back on the 26th at 03:00

    due = nine.last_due(spring, BERLIN)
    assert [berlin(d) for d in (nine.previous_due(nine.previous_due(due, BERLIN), BERLIN),
                                nine.previous_due(due, BERLIN), due, nine.next_due(due, BERLIN))] == [
        "Sat 2025-03-29 09:00 CET", "Sun 2025-03-30 09:00 CEST", "Mon 2025-03-31 09:00 CEST",
        "Tue 2025-04-01 09:00 CEST"]
    assert due - nine.previous_due(due, BERLIN) == DAY
    assert nine.previous_due(due, BERLIN) - nine.previous_due(nine.previous_due(due, BERLIN), BERLIN) == DAY - 3600
    due = nine.last_due(autumn, BERLIN)
    assert berlin(due) == "Sun 2025-10-26 09:00 CET" and due - nine.previous_due(due, BERLIN) == DAY + 3600


def test_a_weekly_digest_is_due_on_its_day_and_at_its_time_exactly() -> None:
    monday = Schedule.parse(["weekly", "Mon", "09:00"])
    wednesday = datetime(2025, 12, 3, 12, 0, tzinfo=BERLIN).timestamp()

    due = monday.last_due(wednesday, BERLIN)
    assert berlin(due) == "Mon 2025-12-01 09:00 CET"
    assert berlin(monday.next_due(wednesday, BERLIN)) == "Mon 2025-12-08 09:00 CET"
    assert berlin(monday.previous_due(due, BERLIN)) == "Mon 2025-11-24 09:00 CET"
    assert monday.last_due(due, BERLIN) == due, "due at its very moment"
    assert monday.next_due(due, BERLIN) == due + 7 * DAY
    assert monday.describe() == "weekly mon 09:00" and Schedule.parse(["DAILY", "7:05"]).describe() == "daily 07:05"


def test_a_time_the_clocks_skip_falls_an_hour_later_and_a_time_they_repeat_is_due_once() -> None:
    half_past_two = Schedule.parse(["daily", "02:30"])
    dues = [half_past_two.last_due(datetime(2025, 3, 28, 12, 0, tzinfo=BERLIN).timestamp(), BERLIN)]
    while len(dues) < 4:
        dues.append(half_past_two.next_due(dues[-1], BERLIN))
    assert [berlin(d) for d in dues] == ["Fri 2025-03-28 02:30 CET", "Sat 2025-03-29 02:30 CET",
                                         "Sun 2025-03-30 03:30 CEST", "Mon 2025-03-31 02:30 CEST"]

    dues = [half_past_two.last_due(datetime(2025, 10, 25, 12, 0, tzinfo=BERLIN).timestamp(), BERLIN)]
    while len(dues) < 3:
        dues.append(half_past_two.next_due(dues[-1], BERLIN))
    assert [berlin(d) for d in dues] == ["Sat 2025-10-25 02:30 CEST", "Sun 2025-10-26 02:30 CEST",
                                         "Mon 2025-10-27 02:30 CET"]


@pytest.mark.parametrize(("words", "said"), [
    (["hourly", "09:00"], "Say daily or weekly"), (["daily"], "Daily takes a time"),
    (["daily", "9"], "'9' is not a time of day such as 09:00"), (["daily", "24:00"], "'24:00' is not a time"),
    (["weekly", "09:00"], "Weekly takes a day and a time"), (["weekly", "funday", "09:00"], "'funday' is not a day"),
    (["daily", "09:00", "mon"], "Daily takes a time"),
])
def test_a_schedule_that_makes_no_sense_says_what_is_wrong(words: list[str], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        Schedule.parse(words)


def test_the_days_of_the_picture_begin_at_local_midnight_whatever_their_length() -> None:
    days = day_starts(datetime(2025, 10, 28, 15, 0, tzinfo=BERLIN).timestamp(), BERLIN, 4)

    assert [str(day) for day, _ in days] == ["2025-10-25", "2025-10-26", "2025-10-27", "2025-10-28"]
    assert [berlin(start) for _, start in days][1] == "Sun 2025-10-26 00:00 CEST"
    assert [b - a for (_, a), (_, b) in itertools.pairwise(days)] == [DAY, DAY + 3600, DAY]


# --- what a digest says ------------------------------------------------------------------------------------------

def incident(device: str, kind: Kind, created: float, lasted: float | None = None, acked_after: float | None = None,
             metric: str = "", state: State | None = None) -> Incident:
    """An incident opened at `created`, recovered after `lasted` (open without), acknowledged after `acked_after`."""
    resolved = created + lasted if lasted is not None else None
    return Incident.create(
        device=device, kind=kind, metric=metric[:32], state=state or (State.OPEN if lasted is None else State.RESOLVED),
        opened_ts=created, last_ts=resolved or created, resolved_ts=resolved, created=created, updated=created,
        acked_at=created + acked_after if acked_after is not None else None, detail=IncidentDetail(metric=metric))


def pressed(incident: Incident, after: float) -> None:
    db.events.happened(incident.id, incident.created + after, "pressed", "@bob pressed correct")


def test_a_period_counts_incidents_by_kind_with_the_machines_that_had_the_most_and_how_fast_they_were_answered(
    database: pw.Database,
) -> None:
    start, end = T0 - DAY, T0
    web = [incident("web1", Kind.STRESSED, start + 3600 * i, lasted=600 * (i + 1)) for i in range(3)]
    pressed(web[0], 240)
    pressed(web[0], 900)  # a second press: the first one counts
    web[1].acked_at = web[1].created + 600  # answered by a press before presses were written down
    web[1].save()
    pressed(web[2], 7200)
    incident("db2", Kind.STRESSED, start + 5 * 3600)
    incident("pi-garage", Kind.SILENT, start + 6 * 3600)
    incident("nas1", Kind.FORECAST, start + 7 * 3600, lasted=300, metric="disk:/data", state=State.FALSE_ALARM)
    raid = key("raid", "md0")
    incident("db3", Kind.CONDITION, start + 8 * 3600, metric=raid)
    incident("db3", Kind.CONDITION, start - 3600, metric=key("clock", ""))  # opened before: open, not counted
    incident("web9", Kind.STRESSED, end + 1)  # after: not in this period

    period = digests.period(start, end)

    assert len(period.opened) == 7
    assert period.worst_by(Kind.STRESSED, 3) == [("web1", 3), ("db2", 1)]
    assert sorted(period.answers) == [240.0, 600.0, 7200.0]
    assert sorted(period.recoveries) == [600.0, 1200.0, 1800.0], "a false alarm is not a recovery"
    assert [(i.device, i.kind) for i in period.still_open] == [
        ("db3", Kind.CONDITION), ("db2", Kind.STRESSED), ("pi-garage", Kind.SILENT), ("db3", Kind.CONDITION),
        ("web9", Kind.STRESSED)]

    text = digest.digest_text(Schedule(None, 540), end, "", period, [], ["🧠 No model is loaded."], UTC)
    assert text.startswith("📰 <b>Daily digest</b>, Thu 27 Nov 12:00 (UTC)\nSince Wed 26 Nov 12:00:\n\n"
                           "<b>7 incidents</b>\n")
    assert "🔴 4 stressed: web1 ×3, db2\n⚪ 1 silent: pi-garage\n📈 1 forecast: nas1\n🛠 1 problem: db3\n" in text
    assert "⏱ Answered 3 of 7: median 10 min, worst 2 h\n✅ Recovered 3 of 7: median 20 min, worst 30 min" in text
    assert ("<b>Still open: 5</b>\n🛠 db3: clock wrong for 1 d 1 h\n🔴 db2 for 19 h\n"
            "🛠 db3: RAID array degraded (md0) for 16 h\n") in text
    assert "\n⚪ Silent now: pi-garage\n" in text
    assert "late" not in text and all(len(line) <= 80 for line in text.splitlines()), "short lines for a phone"


def test_a_period_tells_what_people_taught_the_machines_and_the_labels_they_gave(database: pw.Database) -> None:
    start, end = T0 - 7 * DAY, T0
    for device, metric, value, created in (("build1", "disk:/data", 98.6, T0 - DAY), ("db1", "mem_percent", 97.0,
                                                                                       T0 - 8 * DAY)):
        Tolerance.create(device=device, metric=metric, value=value, user_id=8, user_name="@bob", created=created,
                         updated=created)
    Expected.create(device="db3", metric=key("raid", "md0"), user_id=7, user_name="@alice", created=T0 - 3600)
    (sample,) = db.store_batch([Sample("pc1", T0 - DAY, {"cpu_percent": 20.0})], [0.9], 1, [])
    forecast = incident("nas1", Kind.FORECAST, T0 - DAY, metric="disk:/data")
    for value, name in ((1, "@alice"), (0, "@bob")):
        Label.create(metric=sample.id, value=value, user_id=1, user_name=name, created=T0 - 600)
    ForecastLabel.create(incident=forecast.id, value=1, user_id=1, user_name="@carol", created=T0 - 500)
    DiskLabel.create(serial="S1", device="nas1", value=1, user_id=1, user_name="@alice", created=T0 - 400)
    Label.create(metric=sample.id, value=1, user_id=1, user_name="@dave", created=T0 - 8 * DAY)  # before

    period = digests.period(start, end)
    part = digest.taught_part(period)

    assert part == ["<b>Taught with ❌</b>", "build1: Disk /data up to 98.6 % (@bob)",
                    "db3: RAID array degraded (md0) expected (@alice)",
                    "🏷 4 labels given (3 ✅, 1 ❌) by @alice, @bob, @carol"]


def test_the_picture_counts_the_incidents_of_each_day_by_kind_in_the_bot_s_time_zone(database: pw.Database) -> None:
    now = datetime(2025, 10, 27, 15, 0, tzinfo=BERLIN).timestamp()
    days = day_starts(now, BERLIN, 14)
    midnight = days[-1][1]
    incident("web1", Kind.STRESSED, midnight - 60, lasted=30)  # 23:59 on Sunday, Berlin time: Sunday's
    incident("web1", Kind.STRESSED, midnight + 60)
    incident("pi", Kind.SILENT, midnight + 120)
    incident("old", Kind.SILENT, days[0][1] - 1)  # before the fourteen days

    counts = digests.per_day([start for _, start in days], now)

    assert [sum(day.values()) for day in counts] == [0] * 12 + [1, 2]
    assert counts[-1] == {Kind.STRESSED: 1, Kind.SILENT: 1}
    png = charts.incidents_per_day([day for day, _ in days], counts, "Incidents a day, last 14 days")
    assert png.startswith(PNG_SIGNATURE)
    assert image.imread(io.BytesIO(png)).shape[:2] == (490, 800)


def test_the_model_is_shown_in_the_words_of_versions() -> None:
    record = ModelVersion(3, "2025-11-20T10:00:00", "ab" * 32, 1000, {
        "holdout": "48 human-labelled samples", "holdout_rows": 48,
        "scores": {"f1": 0.912, "precision": 0.9, "recall": 0.93, "roc_auc": 0.98, "brier": 0.0123}})

    assert digest.model_part(3, record) == ["🧠 Model v3 · holdout: 48 human-labelled samples, 48 rows",
                                            scores(record)]
    assert digest.model_part(3, None) == ["🧠 Model v3 (the model store did not answer for its figures)"]
    assert digest.model_part(None, None) == ["🧠 No model is loaded."]


def test_two_processes_claiming_the_same_period_send_it_once(database: pw.Database) -> None:
    digests.set_schedule(CHAT, None, Schedule(None, 540), ADMIN, "@alice", UTC)
    row = digests.schedule_of(CHAT, None)
    due = row.last_due + DAY
    won: list[bool] = []
    racers = [threading.Thread(target=lambda: won.append(digests.claim(row.id, due) is not None)) for _ in range(8)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()

    assert sorted(won) == [False] * 7 + [True]
    digests.release(row.id)  # Telegram was out: any process may try again
    assert digests.claim(row.id, due) is not None
    digests.record_sent(row.id, due, T0)
    assert digests.claim(row.id, due) is None, "sent: never again"
    assert digests.claim(row.id, due - DAY) is None, "nor an older period"
    assert digests.claim(row.id, due + DAY).covered_until == T0, "the next starts where this one ended"


# --- in the chat, and the job --------------------------------------------------------------------------------------

@pytest_asyncio.fixture
async def application(telegram: FakeTelegram, tmp_path: Path, database: pw.Database) -> AsyncIterator[Application]:
    """The bot's application with a plain chat and a forum, in Berlin time, on the test's database."""
    telegram.make_forum(FORUM)
    settings = load_settings(bot_env(telegram, tmp_path, "sqlite:///unused", ALLOWED_CHAT_IDS=f"{CHAT},{FORUM}",
                                     BOT_TIMEZONE="Europe/Berlin"))
    app = build_application(settings, open_store(settings.model_store))
    async with app:
        yield app


async def say(app: Application, telegram: FakeTelegram, text: str, chat: int = CHAT, user: int = ADMIN,
              thread: int | None = None) -> list[dict]:
    """What the bot sends in answer to one message."""
    mark = telegram.call_count()
    telegram.send_text(chat, text, user_id=user, thread_id=thread, username="alice")
    await app.process_update(Update.de_json(telegram.last_update(), app.bot))
    return [c.params for c in telegram.calls()[mark:] if c.method == "sendMessage"]


async def run_job(app: Application, started: float | None = None) -> None:
    """One run of the digest job, as the job queue runs it, for a process started at `started`."""
    data = digest.Digesting(common.settings_of(app), app.bot_data["forecaster"], app.bot_data["model"],
                            time.time() - 3600 if started is None else started)
    await digest.send_due(CallbackContext.from_job(Job(digest.send_due, data=data), app))


def due_now(chat: int, thread: int | None = None, behind_s: float = 0.0, missed: int = 1) -> float:
    """A daily digest of the chat due `behind_s` ago (to the minute), the last sent `missed` periods before."""
    at = datetime.fromtimestamp(time.time() - behind_s, BERLIN)
    schedule = Schedule(None, at.hour * 60 + at.minute)
    digests.set_schedule(chat, thread, schedule, ADMIN, "@alice", BERLIN)
    due = schedule.last_due(time.time(), BERLIN)
    Digest.update(last_due=due - missed * DAY, covered_until=due - missed * DAY).where(
        (Digest.chat_id == chat) & (Digest.thread_id == (thread or 0))).execute()
    return due


def digests_sent(telegram: FakeTelegram, chat: int) -> list[dict]:
    """The digests in the chat: photos with their caption, or texts."""
    return [m for m in telegram.messages(chat) if "digest</b>" in m.get("caption", m.get("text", ""))]


@pytest.mark.asyncio
async def test_digest_sets_shows_and_stops_the_digest_of_a_chat_and_of_a_topic(
    application: Application, telegram: FakeTelegram,
) -> None:
    (none,) = await say(application, telegram, "/digest")
    assert none["text"] == ("This chat gets no digest. An admin can set one: /digest daily 09:00 or /digest weekly "
                            "mon 09:00 (times in Europe/Berlin).")

    (done,) = await say(application, telegram, "/digest weekly mon 09:00")
    assert done["text"].startswith("📰 This chat gets a digest weekly mon 09:00 (Europe/Berlin): what happened")
    assert " The first: Mon " in done["text"] and done["text"].endswith(" 09:00. /digest off stops it.")
    (shown,) = await say(application, telegram, "/digest", user=MEMBER)
    assert shown["text"].startswith("📰 This chat gets a digest weekly mon 09:00 (Europe/Berlin), set by @alice.\n"
                                    "Next: Mon ")

    topic = telegram.open_topic(FORUM, "ops")
    (in_topic,) = await say(application, telegram, "/digest daily 18:30", chat=FORUM, thread=topic)
    assert in_topic["message_thread_id"] == topic and in_topic["text"].startswith("📰 This topic gets a digest daily")
    (general,) = await say(application, telegram, "/digest", chat=FORUM)
    assert general["text"].startswith("This chat gets no digest."), "the topic's digest is the topic's"
    assert [(r.chat_id, r.thread_id, r.schedule.describe()) for r in digests.every()] == [
        (CHAT, 0, "weekly mon 09:00"), (FORUM, topic, "daily 18:30")]

    (off,) = await say(application, telegram, "/digest off")
    assert off["text"] == "📭 This chat gets no more digests."
    (again,) = await say(application, telegram, "/digest off")
    assert again["text"] == "This chat had no digest."
    assert [r.chat_id for r in digests.every()] == [FORUM]


@pytest.mark.asyncio
@pytest.mark.parametrize("wrong", ["/digest daily", "/digest daily 25:00", "/digest weekly 09:00",
                                   "/digest weekly someday 09:00", "/digest monthly 1 09:00", "/digest off now"])
async def test_bad_input_gets_the_usage_line_and_changes_nothing(
    application: Application, telegram: FakeTelegram, wrong: str,
) -> None:
    await say(application, telegram, "/digest daily 09:00")
    before = [(r.weekday, r.minute, r.last_due) for r in digests.every()]

    (answer,) = await say(application, telegram, wrong)

    assert answer["text"].endswith("\nUsage: /digest daily 09:00 or /digest weekly mon 09:00 (times in "
                                   "Europe/Berlin), /digest off to stop it; /digest alone shows this chat's.")
    assert [(r.weekday, r.minute, r.last_due) for r in digests.every()] == before


@pytest.mark.asyncio
async def test_only_admins_set_or_stop_a_digest(application: Application, telegram: FakeTelegram) -> None:
    await say(application, telegram, "/digest daily 09:00")

    for command in ("/digest weekly mon 08:00", "/digest off"):
        (refusal,) = await say(application, telegram, command, user=MEMBER)
        assert refusal["text"].startswith("Only admins can use /digest.") and f"<code>{MEMBER}</code>" in \
            refusal["text"]
    assert [r.schedule.describe() for r in digests.every()] == ["daily 09:00"]


@pytest.mark.asyncio
async def test_a_new_digest_waits_for_its_time_and_a_due_one_goes_out_once_as_a_photo_with_its_caption(
    application: Application, telegram: FakeTelegram,
) -> None:
    await say(application, telegram, "/digest daily 00:00")  # its period today has begun: it waits for tomorrow
    await run_job(application)
    assert digests_sent(telegram, CHAT) == []

    due = due_now(CHAT)
    web1 = incident("web1", Kind.STRESSED, time.time() - 3600, lasted=600)
    pressed(web1, 120)
    await asyncio.to_thread(application.bot_data["model"].ensure)
    for _ in range(2):
        await run_job(application)

    (sent,) = digests_sent(telegram, CHAT)
    caption = sent["caption"]
    assert sent["photo"] and caption.startswith(f"📰 <b>Daily digest</b>, {digest._local(due, BERLIN)} "
                                                "(Europe/Berlin)\nSince ")
    assert "🔴 1 stressed: web1\n⏱ Answered 1 of 1: median 2 min, worst 2 min" in caption
    assert "🧠 Model v1 · holdout: stratified 30% split" in caption and "F1 " in caption
    assert "late" not in caption
    (row,) = digests.every()
    assert (row.last_due, row.claimed_until, row.failed) == (due, None, None) and row.covered_until > due


@pytest.mark.asyncio
async def test_a_long_digest_is_its_text_then_the_picture_replying_to_it_in_its_topic(
    application: Application, telegram: FakeTelegram,
) -> None:
    topic = telegram.open_topic(FORUM, "ops")
    due_now(FORUM, topic)
    now = time.time()
    for i in range(12):
        incident(f"{'long-machine-name-' * 3}{i:02d}", Kind.CONDITION, now - 3600 - i, metric=key("raid", f"md{i}"))
    for i in range(6):
        Tolerance.create(device=f"build{i}", metric="disk:/var/lib/docker", value=98.5, user_id=8, user_name="@bob",
                         created=now - 60, updated=now - 60)
    forecaster: Forecaster = application.bot_data["forecaster"]
    forecaster.observe((i, "nas1", now - 3 * 3600 + 60 * i, {"disk_percent": 60.0 + 0.5 * i / 60},
                        {"/data": 60.0 + 0.5 * i / 60}, None) for i in range(180))

    await run_job(application)

    (text,) = digests_sent(telegram, FORUM)
    assert len(text["text"]) > 1024 and text["message_thread_id"] == topic
    assert "<b>Heading for full within 7 d</b>\n📈 nas1: /data will be full in about 3 d (now " in text["text"]
    assert "<b>Still open: 12</b>\n" in text["text"] and "\n… and 7 more\n" in text["text"]
    assert "<b>Taught with ❌</b>\nbuild0: Disk /var/lib/docker up to 98.5 % (@bob)\n" in text["text"]
    (photo,) = [m for m in telegram.messages(FORUM) if "photo" in m]
    assert photo["reply_to_message"]["message_id"] == text["message_id"] and photo["message_thread_id"] == topic


@pytest.mark.asyncio
async def test_telegram_out_lets_the_period_go_and_the_next_run_sends_it(
    application: Application, telegram: FakeTelegram,
) -> None:
    due = due_now(CHAT)
    telegram.fail_next("sendPhoto", 502, "Bad Gateway")

    await run_job(application)
    assert digests_sent(telegram, CHAT) == []
    (row,) = digests.every()
    assert row.last_due < due and row.claimed_until is None

    await run_job(application)
    await run_job(application)
    assert len(digests_sent(telegram, CHAT)) == 1


@pytest.mark.asyncio
async def test_a_chat_that_blocked_the_bot_gives_its_period_up_and_says_so_in_digest(
    application: Application, telegram: FakeTelegram,
) -> None:
    due = due_now(CHAT)
    telegram.fail_next("sendPhoto", 403)

    await run_job(application)
    await run_job(application)

    assert telegram.calls("sendPhoto")[-1].status == 403 and len(telegram.calls("sendPhoto")) == 1
    (row,) = digests.every()
    assert (row.last_due, row.failed) == (due, "Forbidden: bot was blocked by the user")
    (shown,) = await say(application, telegram, "/digest")
    assert "⚠️ The last could not be delivered: Forbidden: bot was blocked by the user" in shown["text"]


@pytest.mark.asyncio
async def test_a_bot_down_for_a_week_sends_one_late_digest_that_says_why(
    application: Application, telegram: FakeTelegram,
) -> None:
    due = due_now(CHAT, behind_s=600, missed=7)
    at = datetime.fromtimestamp(due, BERLIN).strftime("%H:%M")

    for _ in range(3):
        await run_job(application, started=time.time())

    (sent,) = digests_sent(telegram, CHAT)
    since = digest._local(due - 7 * DAY, BERLIN)
    assert f"\n⏰ Sent late: the bot was not running at {at}.\nSince {since}:" in sent["caption"], "the whole week"
    (row,) = digests.every()
    assert row.last_due == due


@pytest.mark.asyncio
async def test_a_digest_that_could_not_go_out_at_its_time_says_so_and_a_chat_no_longer_allowed_gets_none(
    application: Application, telegram: FakeTelegram,
) -> None:
    due = due_now(CHAT, behind_s=600)
    Digest.create(chat_id=555, thread_id=0, minute=0, user_id=ADMIN, user_name="@alice", created=0, last_due=0)

    await run_job(application, started=due - 3600)

    (sent,) = digests_sent(telegram, CHAT)
    assert f"⏰ Sent late: it could not be sent at {datetime.fromtimestamp(due, BERLIN):%H:%M}." in sent["caption"]
    assert not [c for c in telegram.calls() if c.params.get("chat_id") == 555]
