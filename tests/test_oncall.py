"""The on-call loop against a real SQLite file and a real PostgreSQL server: shifts, escalation steps taken once
each and stopped by an answer, a storm called in one message, and machines behind a parent that go silent with it
without a message of their own."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bot import db
from bot.chat import alerts
from bot.db import Device, Incident, Notice, oncall
from bot.db.incidents import press
from bot.pipeline.decide import Decider
from bot.pipeline.escalation import Escalator
from bot.pipeline.lifecycle import Incidents
from bot.pipeline.watch import Watch
from schema.domain import Action, Window
from schema.oncall import Dependency, Shift, StepKind, next_change, on_call, parse_dependencies, parse_steps
from tests.fakes.incidents import CHATS, T0, feed, intake_alive

BERLIN = ZoneInfo("Europe/Berlin")
ALICE, BOB = 501, 502
TEAM = CHATS[0]


def at(text: str) -> float:
    """A Berlin wall-clock time as a timestamp: '2026-03-30 08:59'."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=BERLIN).timestamp()


def test_steps_read_as_people_type_them_and_say_what_is_wrong() -> None:
    steps = parse_steps("10m oncall, 20m dm oncall, 40m @carol, 1h -100123/7, 2h topic 5", -42)

    assert [(s.after_s, s.kind, s.on_call) for s in steps] == [
        (600, StepKind.MENTION, True), (1200, StepKind.DM, True), (2400, StepKind.MENTION, False),
        (3600, StepKind.CHAT, False), (7200, StepKind.CHAT, False)]
    assert (steps[2].name, steps[3].chat_id, steps[3].thread_id, steps[4].chat_id) == ("@carol", -100123, 7, -42)
    assert ", ".join(s.describe() for s in steps) == "10m oncall, 20m dm oncall, 40m @carol, 1h -100123/7, 2h -42/5"
    for bad, why in [("", "no steps"), ("10m", "not a step"), ("30s oncall", "not a step"),
                     ("0m oncall", "1 minute to 24 hours"), ("25h oncall", "1 minute to 24 hours"),
                     ("20m oncall, 10m @bob", "later than the one before"), ("10m pager", "say oncall"),
                     ("10m dm -100123", "say oncall"), (", ".join(f"{m}m oncall" for m in range(1, 10)), "at most 8")]:
        with pytest.raises(ValueError, match=why):
            parse_steps(bad, -42)


def test_who_is_on_call_follows_the_windows_in_the_bots_time_zone_and_other_covers_the_rest() -> None:
    alice = Shift(ALICE, "@alice", Window.parse("mon-fri", "09:00-18:00"))
    bob = Shift(BOB, "@bob", None)
    shifts = [alice, bob]

    assert on_call(shifts, at("2026-03-30 08:59"), BERLIN) == bob  # a Monday, the day after clocks went forward
    assert on_call(shifts, at("2026-03-30 09:00"), BERLIN) == alice
    assert next_change(shifts, at("2026-03-30 10:00"), BERLIN) == (at("2026-03-30 18:00"), bob)
    assert next_change(shifts, at("2026-03-28 12:00"), BERLIN) == (at("2026-03-30 09:00"), alice), "over a weekend"
    assert on_call([alice], at("2026-03-28 12:00"), BERLIN) is None
    assert next_change([bob], at("2026-03-28 12:00"), BERLIN) is None


def test_dependencies_read_from_a_variable_or_a_file_and_a_machine_never_stands_behind_itself() -> None:
    rules = parse_dependencies("rack1-* on sw-rack1; # the second rack\nrack2-* on sw-rack2\n")

    assert rules == [Dependency("rack1-*", "sw-rack1"), Dependency("rack2-*", "sw-rack2")]
    assert rules[0].covers("rack1-07") and not rules[0].covers("rack2-07")
    assert not Dependency("sw-*", "sw-core").covers("sw-core")
    for bad in ("rack1-* sw-rack1", "rack1-* on sw-*", "rack 1 on sw", "a on b on c"):
        with pytest.raises(ValueError, match="not a dependency"):
            parse_dependencies(bad)


@pytest.fixture
def escalator(incidents: Incidents) -> Escalator:
    return Escalator(incidents, alerts.call)


def team(steps: str, *, alice_started: bool = True) -> None:
    """@alice, seen in the team chat (and, unless not, in her private chat with the bot), on call all the time,
    and the team chat's chain."""
    oncall.seen(TEAM, ALICE, "alice", "Alice", T0)
    if alice_started:
        oncall.seen(ALICE, ALICE, "alice", "Alice", T0)
    oncall.add_shift(TEAM, Shift(ALICE, "@alice", None), "@admin")
    oncall.set_chain(TEAM, None, parse_steps(steps, TEAM), "@admin")


def escalated() -> list[tuple[int, int | None, str, str]]:
    """(chat, topic, kind, first line) of every message an escalation queued, in order."""
    return [(n.chat_id, n.thread_id, n.kind, (n.text or "").split("\n")[0])
            for n in Notice.select().where(Notice.escalated).order_by(Notice.id)]


def test_an_unanswered_alert_climbs_each_step_once_and_a_press_stops_the_chain(
    decider: Decider, escalator: Escalator,
) -> None:
    team("10m oncall, 20m dm oncall, 40m topic 7, 60m oncall")
    feed(decider, "pc1", [0.9])
    incident = Incident.get()
    opened = incident.created

    assert escalator.run(opened + 599) == 0
    assert escalator.run(opened + 600) == 1
    assert escalator.run(opened + 601) == 0, "a step is taken once"
    assert escalated() == [(TEAM, None, "reply", f'⏫ <a href="tg://user?id={ALICE}">@alice</a>: nobody answered '
                                                 "pc1's alert for 10 min.")]
    assert Escalator(escalator.incidents, alerts.call).run(opened + 700) == 0, "nor again after a restart"

    escalator.run(opened + 1200)
    escalator.run(opened + 2400)
    assert escalated()[1:] == [(ALICE, None, "alert", ""), (TEAM, 7, "alert", "")]
    text = alerts.alert(Incident.get(), {}, opened + 2400)
    assert text.count("⏫ escalated to") == 3 and "⏫ escalated to @alice (direct message) at" in text
    assert [e.what for e in db.events.timeline(incident.id)].count("escalated") == 3

    press(incident.id, Action.ON_IT, BOB, "@bob", opened + 2500)
    assert escalator.run(opened + 3600) == 0, "an answer stops the chain"
    taken = Incident.get()
    assert "👀 @bob is on it" in alerts.alert(taken, {}, opened + 3600) and taken.next_reminder is None


def test_a_storm_is_called_in_one_message_per_chat(decider: Decider, escalator: Escalator) -> None:
    team("10m oncall")
    for n in range(30):
        feed(decider, f"web{n:02d}", [0.9], start=T0 + n % 3)  # three batches within the grouping window
    first = min(i.created for i in Incident.select())

    escalator.run(first + 600)

    ((chat, _, kind, head),) = escalated()
    assert (chat, kind) == (TEAM, "reply") and "nobody answered 30 alerts for 10 min" in head
    (call,) = Notice.select().where(Notice.escalated)
    assert "web00" in call.text and "… and 10 more" in call.text


def test_a_late_start_takes_only_the_newest_step_and_a_muted_machine_none(
    decider: Decider, escalator: Escalator,
) -> None:
    team("10m oncall, 20m oncall, 30m dm oncall")
    feed(decider, "pc1", [0.9])
    feed(decider, "db1", [0.9])
    opened = Incident.get(Incident.device == "pc1").created
    db.mute("db1", opened + 3600, None, "migration", 7, "@carol")

    escalator.run(opened + 1300)  # the bot was down through the first step

    ((chat, _, _, head),) = escalated()
    assert chat == TEAM and head.endswith("nobody answered pc1's alert for 21 min.")
    escalator.run(opened + 1800)
    assert [chat for chat, _, _, _ in escalated()] == [TEAM, ALICE], "db1 stays quiet while it is muted"


def test_a_direct_message_nobody_can_receive_is_a_mention_that_says_why(
    decider: Decider, escalator: Escalator,
) -> None:
    team("10m dm oncall", alice_started=False)
    feed(decider, "pc1", [0.9])

    escalator.run(Incident.get().created + 600)

    (call,) = Notice.select().where(Notice.escalated)
    assert (call.chat_id, call.kind) == (TEAM, "reply")
    assert "(I cannot message @alice directly: they have not started me in a private chat.)" in call.text


def test_nobody_on_call_is_said_in_the_chat(decider: Decider, escalator: Escalator) -> None:
    oncall.set_chain(TEAM, None, parse_steps("10m oncall", TEAM), "@admin")
    feed(decider, "pc1", [0.9])

    escalator.run(Incident.get().created + 600)

    assert escalated()[0][3].startswith("⏫ Nobody is on call now (/oncall): nobody answered")


@pytest.fixture
def watch(incidents: Incidents) -> Watch:
    return Watch(incidents, lambda metrics: [])


def rack(decider: Decider, children: int = 20, start: float = T0) -> list[str]:
    """sw-rack1 and the machines behind it, all reporting every 10 s for 100 s."""
    names = [f"rack1-{n:02d}" for n in range(children)]
    for name in ["sw-rack1", *names]:
        feed(decider, name, [0.1] * 10, start=start, step=10.0)
    oncall.depend("rack1-*", "sw-rack1", "@admin")
    return names


def test_a_parent_and_twenty_machines_behind_it_going_silent_is_one_message_and_one_recovery(
    decider: Decider, watch: Watch,
) -> None:
    names = rack(decider)
    heard = max(d.last_received for d in Device.select())
    intake_alive(heard, heard + 400)  # other machines keep the intake busy

    assert watch.check_silent(now=heard + 61) == 21

    assert [(n.chat_id, n.incident.device) for n in Notice.select()] == [(c, "sw-rack1") for c in CHATS]
    parent = Incident.get(Incident.device == "sw-rack1")
    assert sorted(parent.detail.behind) == names
    text = alerts.alert(parent, {}, heard + 61)
    assert "20 machines behind it are silent too: rack1-" in text and "and 10 more" in text

    for name in ["sw-rack1", *names]:
        feed(decider, name, [0.1], start=heard + 120)

    replies = list(Notice.select().where(Notice.kind == "reply"))
    assert [n.text for n in replies] == ["✅ sw-rack1 is reporting again after 2 min 10 s of silence · the 20 "
                                         "machines behind it too"] * len(CHATS), "it came back a moment before them"
    assert Incident.select().where(Incident.state == "open").count() == 0


def test_a_machine_still_silent_after_its_parent_came_back_alerts_on_its_own(
    decider: Decider, watch: Watch,
) -> None:
    names = rack(decider, children=3)
    heard = max(d.last_received for d in Device.select())
    intake_alive(heard, heard + 1000)
    watch.check_silent(now=heard + 61)

    for name in ["sw-rack1", *names[:2]]:  # rack1-02 stays silent
        feed(decider, name, [0.1], start=heard + 120)
    (reply,) = {n.text for n in Notice.select().where(Notice.kind == "reply")}
    assert reply.endswith("· 2 of the 3 machines behind it too; still silent: rack1-02 (each alerts on its own if "
                          "it stays silent)")
    back = Incident.get(Incident.device == "sw-rack1").resolved_ts

    assert watch.release_behind(now=back + 59) == 0
    assert watch.release_behind(now=back + 61) == 1
    alone = Incident.get((Incident.device == "rack1-02") & (Incident.state == "open"))
    assert [n.chat_id for n in Notice.select().where(Notice.incident == alone.id)] == list(CHATS)
    assert "Still silent after sw-rack1, which it stands behind, came back" in alerts.alert(alone, {}, back + 61)


def test_a_machine_behind_a_late_parent_waits_for_it_and_a_stressed_one_alerts_as_usual(
    decider: Decider, watch: Watch,
) -> None:
    names = rack(decider, children=2)
    feed(decider, "sw-rack1", [0.1] * 3, start=T0 + 100, step=10.0)  # the switch was heard 30 s later
    heard = max(d.last_received for d in Device.select())
    children = max(d.last_received for d in Device.select() if d.name != "sw-rack1")
    intake_alive(children, heard + 400)

    # The children are silent, the switch only late: they wait to see whether it is the switch.
    assert watch.check_silent(now=children + 61) == 0
    assert watch.check_silent(now=heard + 61) == 3
    assert Notice.select().count() == len(CHATS)

    feed(decider, names[0], [0.9, 0.95], start=heard + 100, disk_percent=99.0)
    stressed = Incident.get((Incident.device == names[0]) & (Incident.kind == "stressed"))
    assert Notice.select().where(Notice.incident == stressed.id).count() == len(CHATS), "a dependency explains " \
        "silence, not a full disk"
