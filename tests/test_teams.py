"""Alerts for teams, decided against a real SQLite file and a real PostgreSQL server: routing by chat and forum
topic, one message per outage, the bot's own intake outage, and maintenance for groups and schedules."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

import peewee as pw
import pytest

from bot import db
from bot.chat import alerts, teams
from bot.db import Group, Incident, Notice, outbox
from bot.db.outbox import Route
from bot.pipeline.baselines import Baselines
from bot.pipeline.decide import Decider
from bot.pipeline.forecast import Forecaster
from bot.pipeline.lifecycle import Incidents
from bot.pipeline.watch import Watch
from schema.domain import Window
from tests.fakes.incidents import CHATS, RULES, T0, drivers, feed, intake_alive

A, B = CHATS
TOPIC = 77


@pytest.fixture
def watch(incidents: Incidents) -> Watch:
    return Watch(incidents, drivers)


def stress(decider: Decider, devices: list[str], start: float = T0) -> None:
    """These machines stressed in the same batch."""
    for device in devices:
        feed(decider, device, [0.95], start=start, disk_percent=99.0)


def sent_alone(chat: int) -> list[str]:
    """The devices whose own alert would go to a chat now."""
    return sorted(incident.device for notice, incident, _ in outbox.due(time.time() + 3600) if notice.chat_id == chat)


def test_a_chat_without_subscriptions_gets_everything_and_one_with_them_only_what_they_match(
    decider: Decider,
) -> None:
    db.subscribe(A, TOPIC, ["web*"], 7, "@alice")
    db.subscribe(A, None, ["db1"], 7, "@alice")

    stress(decider, ["web1"])
    stress(decider, ["db1"], start=T0 + 100)
    stress(decider, ["mail1"], start=T0 + 200)

    where = sorted((n.incident.device, n.chat_id, n.thread_id) for n in Notice.select())
    assert where == [("db1", A, None), ("db1", B, None), ("mail1", B, None), ("web1", A, TOPIC), ("web1", B, None)]
    assert db.unsubscribe(A, TOPIC, []) == 1 and db.unsubscribe(A, None, ["db1"]) == 1
    stress(decider, ["mail2"], start=T0 + 300)
    assert {n.chat_id for n in Notice.select().join(Incident).where(Incident.device == "mail2")} == {A, B}


def test_subscriptions_are_bounded_per_chat(database: object) -> None:
    db.subscribe(A, None, [f"web{i}" for i in range(50)], 7, "@alice")
    with pytest.raises(ValueError, match="at most 50"):
        db.subscribe(A, TOPIC, ["db*"], 7, "@alice")
    assert db.subscribe(B, None, ["db*"], 7, "@alice") == ["db*"], "another chat has its own budget"


def test_machines_stressed_together_become_one_message_per_chat_naming_each_with_its_driver(
    decider: Decider,
) -> None:
    stress(decider, [f"web{i:02d}" for i in range(25)])

    assert sent_alone(A) == [] and sent_alone(B) == [], "no machine is sent alone: the group names them all"
    groups = outbox.due_groups(T0 + 3600)
    assert sorted(d.chat_id for d in groups) == [A, B]
    members = outbox.members(groups[0].id)
    text, markup = alerts.group_message(groups[0].change, members)
    assert text.startswith("<b>🔴 25 machines stressed</b>")
    assert "• <b>web00</b>: P 95% · Disk (root) 99 %" in text and "… and 5 more" in text
    assert "web19" in text and "web20" not in text
    buttons = [b for row in markup.inline_keyboard for b in row]
    assert [b.text for b in buttons][:2] == ["web00 ›", "web01 ›"] and len(buttons) == 26
    assert buttons[-1].text == "All 25 ›", "the five not named are a press away"


def test_the_first_changes_go_out_alone_and_the_group_forms_at_the_third(decider: Decider) -> None:
    stress(decider, ["pc1"])
    for notice, incident, _ in outbox.due(T0 + 60):  # the sender delivered pc1's alerts
        outbox.record_sent(notice.id, 100 + notice.id, incident.revision, T0 + 6)
    stress(decider, ["pc2"], start=T0 + 10)
    assert sent_alone(A) == ["pc2"]

    stress(decider, ["pc3"], start=T0 + 20)
    (group,) = [d for d in outbox.due_groups(T0 + 3600) if d.chat_id == A]
    assert [i.device for _, i in outbox.members(group.id)] == ["pc1", "pc2", "pc3"]
    assert sent_alone(A) == [], "pc2's alert was not sent yet: the group names it instead"

    stress(decider, ["pc4"], start=T0 + 30)  # within 30 s of the group's first member
    stress(decider, ["pc5"], start=T0 + 45)  # later: not hidden in an edit of that message, but said on its own
    assert [i.device for _, i in outbox.members(group.id)] == ["pc1", "pc2", "pc3", "pc4"]
    assert sent_alone(A) == ["pc5"]


def test_a_group_is_edited_when_members_join_and_recoveries_group_as_a_reply_to_it(decider: Decider) -> None:
    stress(decider, ["pc1", "pc2", "pc3"])
    (group,) = [d for d in outbox.due_groups(T0 + 3600) if d.chat_id == A]
    members = outbox.members(group.id)
    outbox.record_group(group.id, 555, len(members), sum(i.revision for _, i in members), T0 + 6)
    assert not [d for d, _, _ in outbox.stale_groups(T0 + 7, 60) if d.id == group.id]

    stress(decider, ["pc4"], start=T0 + 20)
    assert [(d.id, count) for d, count, _ in outbox.stale_groups(T0 + 21, 60) if d.chat_id == A] == [(group.id, 4)]

    for device in ("pc1", "pc2", "pc3", "pc4"):
        feed(decider, device, [0.1, 0.1, 0.1], start=T0 + 600)
    recovered = [d for d in outbox.due_groups(T0 + 3600) if d.chat_id == A and d.change == "recovered"]
    assert len(recovered) == 1 and outbox.reply_target(recovered[0]) == 555
    text, markup = alerts.group_message("recovered", outbox.members(recovered[0].id))
    assert text.startswith("<b>✅ 4 machines recovered</b>") and markup is None
    assert sent_alone(A) == [], "no recovery is sent alone"


def test_a_machine_button_on_a_group_sends_that_machine_its_own_alert(decider: Decider) -> None:
    stress(decider, ["pc1", "pc2", "pc3"])
    pc2 = Incident.get(Incident.device == "pc2")

    notice = outbox.expand(pc2.id, A, None)
    assert notice is not None and sent_alone(A) == ["pc2"] and sent_alone(B) == []
    assert outbox.expand(pc2.id, 999, None) is None, "not a message of that chat"
    assert outbox.expand(pc2.id, B, TOPIC) is None, "nor of that topic"


def test_a_bot_that_receives_nothing_declares_no_machine_silent_and_gives_grace_when_it_receives_again(
    decider: Decider, watch: Watch,
) -> None:
    for device in ("pc1", "pc2"):
        feed(decider, device, [0.1] * 10, step=10.0)  # silent after 60 s without a sample
    last = db.Device.get(db.Device.name == "pc1").last_received

    # The broker is down for 10 minutes: no sample at all, no beat of the intake.
    assert watch.check_silent(now=last + 600) == 0
    assert Incident.select().count() == 0

    # It is back: pc1 reports at once, pc2 never again. pc2 gets its 60 s from the moment the intake resumed.
    feed(decider, "pc1", [0.1], start=last + 600)
    intake_alive(last + 600, last + 700)
    assert watch.check_silent(now=last + 650) == 0
    assert watch.check_silent(now=last + 700) == 1
    assert Incident.get().device == "pc2"


def test_a_pattern_mutes_a_group_and_the_end_of_a_recurring_window_lets_a_stressed_machine_alert(
    decider: Decider, watch: Watch,
) -> None:
    sunday_0100 = datetime(2025, 11, 30, 1, 0, tzinfo=UTC).timestamp()
    db.mute("web*", sunday_0100 + 7200, None, "deploy", 7, "@alice")
    db.mute("db*", None, Window.parse("sun", "01:00-05:00"), "backups", 8, "@bob")

    stress(decider, ["web1", "web2", "db1", "mail1"], start=sunday_0100 + 60)
    assert [i.device for i in Incident.select()] == ["mail1"]

    assert watch.end_mutes(now=sunday_0100 + 3 * 3600) == ["web1", "web2"]
    assert watch.end_mutes(now=sunday_0100 + 5 * 3600 + 30) == ["db1"]
    assert sorted(i.device for i in Incident.select()) == ["db1", "mail1", "web1", "web2"]
    assert [m.pattern for m in db.mutes(sunday_0100 + 6 * 3600)] == ["db*"], "the window recurs; the mute ran out"
    assert "🔁 <b>db*</b> sun 01:00-05:00 (UTC; next 2025-12-07 01:00:00 UTC), by @bob" in teams.mutes(
        db.mutes(sunday_0100 + 6 * 3600), sunday_0100 + 6 * 3600, UTC)


def test_grouping_follows_the_settings(database: object) -> None:
    incidents = Incidents(replace(RULES, route=Route(CHATS, group_s=30, group_min=5)), alerts.reply)
    decider = Decider(incidents, drivers, Forecaster(3600), Baselines())
    stress(decider, ["pc1", "pc2", "pc3", "pc4"])
    assert sent_alone(A) == ["pc1", "pc2", "pc3", "pc4"] and Group.select().count() == 0
    stress(decider, ["pc5"], start=T0 + 1)
    assert sent_alone(A) == [] and Group.select().count() == 2


def test_two_processes_storming_at_once_put_every_machine_in_one_group(database: pw.Database) -> None:
    """As two bot processes of a fleet: each decides its own machines in its own transaction on its own
    connection, and both reach the grouping before either commits."""
    second = Decider(Incidents(RULES, alerts.reply), drivers, Forecaster(3600), Baselines())
    with database.atomic():
        stress(Decider(Incidents(RULES, alerts.reply), drivers, Forecaster(3600), Baselines()),
               ["pc1", "pc2", "pc3"])
        other = threading.Thread(target=stress, args=(second, ["pc4", "pc5", "pc6"]))
        other.start()
        other.join(timeout=1.0)  # the other process gets as far as it can while this one has not committed
    other.join()

    groups = [(d.chat_id, sorted(n.incident.device for n in Notice.select().where(Notice.group == d.id)))
              for d in Group.select().order_by(Group.chat_id)]
    assert groups == [(chat, ["pc1", "pc2", "pc3", "pc4", "pc5", "pc6"]) for chat in sorted(CHATS)]
