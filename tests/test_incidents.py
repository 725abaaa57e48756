"""Incident decisions against a real SQLite file and a real PostgreSQL server: open once, update, resolve with
hysteresis, silence, reminders, snooze, mute, forecasts, and the buttons' effects."""

from __future__ import annotations

import pytest

from agent.wire import Sample
from bot import db
from bot.chat import alerts
from bot.db import Device, Incident, Label, Notice
from bot.db.incidents import press
from bot.pipeline.decide import Decider
from bot.pipeline.lifecycle import Incidents
from bot.pipeline.watch import Watch
from schema.domain import Action
from tests.fakes.incidents import CHATS, T0, TYPICAL, drivers, feed, intake_alive


@pytest.fixture
def watch(incidents: Incidents) -> Watch:
    return Watch(incidents, drivers)


def pressed(incident_id: int, action: Action, user_id: int, user_name: str, now: float) -> str:
    """What the presser of a button is told, after the press is stored."""
    return alerts.pressed(action, press(incident_id, action, user_id, user_name, now).device)


def notices(kind: str | None = None) -> list[Notice]:
    query = Notice.select().order_by(Notice.id)
    return list(query.where(Notice.kind == kind) if kind else query)


def test_a_stressed_stretch_is_one_incident_with_one_alert_per_chat_until_it_recovers(decider: Decider) -> None:
    feed(decider, "pc1", [0.2, 0.9, 0.95, 0.8, 0.91], disk_percent=99.0)

    (incident,) = Incident.select()
    assert (incident.state, incident.kind, incident.peak_p, incident.last_p) == ("open", "stressed", 0.95, 0.91)
    assert incident.opened_ts == T0 + 5
    assert [(n.chat_id, n.kind) for n in notices()] == [(11, "alert"), (22, "alert")]
    assert incident.detail.drivers == ["disk_percent"]

    feed(decider, "pc1", [0.5, 0.5], start=T0 + 25)  # below 0.55 twice: not yet recovered
    assert Incident.get().state == "open"
    feed(decider, "pc1", [0.4], start=T0 + 35)

    incident = Incident.get()
    assert (incident.state, incident.resolved_ts) == ("resolved", T0 + 35)
    assert [n.text for n in notices("reply")] == ["✅ pc1 recovered after 30 s"] * 2
    assert Incident.select().count() == 1


def test_a_p_wobbling_around_the_threshold_is_one_incident_not_ten(decider: Decider) -> None:
    feed(decider, "pc1", [0.65, 0.75] * 25 + [0.6, 0.72] * 10)

    assert Incident.select().count() == 1
    assert Incident.get().state == "open"
    assert len(notices()) == len(CHATS)


def test_a_redelivered_batch_decides_nothing_again(decider: Decider) -> None:
    feed(decider, "pc1", [0.9, 0.9])
    feed(decider, "pc1", [0.9, 0.9])

    assert Incident.select().count() == 1 and len(notices()) == len(CHATS)


def test_a_muted_device_is_stored_and_predicted_but_alerts_only_when_its_mute_ends_still_stressed(
    decider: Decider, watch: Watch,
) -> None:
    db.mute("pc1", T0 + 60, None, "kernel upgrade", 7, "@alice")

    feed(decider, "pc1", [0.9, 0.95])
    assert Incident.select().count() == 0 and db.Metric.select().count() == 2
    assert watch.end_mutes(now=T0 + 30) == []

    assert watch.end_mutes(now=T0 + 61) == ["pc1"]
    assert Incident.get().state == "open" and db.mutes(T0 + 61) == []


def test_a_device_that_stops_reporting_opens_a_silence_incident_and_its_next_sample_resolves_it(
    decider: Decider, watch: Watch,
) -> None:
    feed(decider, "pc1", [0.1] * 10, step=10.0)  # every 10 s: silent after max(60, 3 x 10) s
    device = Device.get()
    assert device.interval == pytest.approx(10.0)

    intake_alive(device.last_received, device.last_received + 300)  # other machines keep reporting
    assert watch.check_silent(now=device.last_received + 59) == 0
    assert watch.check_silent(now=device.last_received + 61) == 1
    assert watch.check_silent(now=device.last_received + 300) == 0, "one incident per silence"
    silent = Incident.get()
    assert (silent.kind, silent.opened_ts) == ("silent", T0 + 90)

    feed(decider, "pc1", [0.1], start=T0 + 400)
    assert Incident.get().state == "resolved"
    assert notices("reply")[0].text == "✅ pc1 is reporting again after 5 min 10 s of silence"


def test_reminders_go_to_unacknowledged_unsnoozed_incidents_only(decider: Decider, watch: Watch) -> None:
    feed(decider, "pc1", [0.9])
    feed(decider, "pc2", [0.9])
    feed(decider, "pc3", [0.9])
    pc1, pc2, pc3 = Incident.select().order_by(Incident.device)
    opened = pc1.created

    assert watch.due_reminders(now=opened + 60) == 0
    press(pc2.id, Action.CORRECT, 7, "@alice", opened + 100)
    press(pc3.id, Action.SNOOZE_8H, 7, "@alice", opened + 100)
    assert watch.due_reminders(now=opened + 1801) == 1
    assert watch.due_reminders(now=opened + 1802) == 0, "the next one in another 30 minutes"
    assert [n.incident_id for n in notices("reply")] == [pc1.id] * len(CHATS)
    assert notices("reply")[0].text.startswith("⏰ pc1 is still stressed")


def test_the_buttons_label_acknowledge_close_and_snooze(decider: Decider) -> None:
    feed(decider, "pc1", [0.9])
    feed(decider, "pc2", [0.9])
    pc1, pc2 = Incident.select().order_by(Incident.device)

    assert "labelled stressed" in pressed(pc1.id, Action.CORRECT, 7, "@alice", T0 + 100)
    assert "false alarm" in pressed(pc2.id, Action.WRONG_PREDICTION, 8, "@bob", T0 + 100)
    assert "1 h" in pressed(pc1.id, Action.SNOOZE_1H, 7, "@alice", T0 + 200)

    pc1, pc2 = Incident.get_by_id(pc1.id), Incident.get_by_id(pc2.id)
    assert (pc1.state, pc1.acked_by, pc1.snoozed_until) == ("open", "@alice", T0 + 200 + 3600)
    assert (pc2.state, pc2.acked_by) == ("false alarm", "@bob")
    assert sorted((label.metric, label.value) for label in Label.select()) == [(pc1.sample_id, 1),
                                                                                  (pc2.sample_id, 0)]


def test_a_button_is_valid_only_in_a_chat_its_incident_was_sent_to(decider: Decider) -> None:
    feed(decider, "pc1", [0.9])
    incident = Incident.get()

    assert db.incident_for_button(incident.id, 11).id == incident.id
    assert db.incident_for_button(incident.id, 999) is None
    assert db.incident_for_button(incident.id + 1, 11) is None


def test_a_filling_disk_opens_one_forecast_incident_which_ends_when_the_disk_is_cleaned(decider: Decider) -> None:
    minute = 60.0
    for i in range(150):  # 1 % every 10 minutes from 70 %
        db.store_batch([Sample("pc1", T0 + i * minute, {**TYPICAL, "disk_percent": 70 + i / 10})], [0.1], 1, [],
                          on_stored=decider.decide)
    forecast = Incident.get(Incident.kind == "forecast")
    assert forecast.detail.metric == "disk_percent" and 0.09 < forecast.detail.slope_per_h / 60 < 0.11
    assert Incident.select().where(Incident.kind == "forecast").count() == 1

    for i in range(150, 240):  # cleaned up: flat at 40 %
        db.store_batch([Sample("pc1", T0 + i * minute, {**TYPICAL, "disk_percent": 40.0})], [0.1], 1, [],
                          on_stored=decider.decide)
    assert Incident.get_by_id(forecast.id).state == "resolved"
    assert Incident.select().where(Incident.kind == "forecast").count() == 1


def test_a_stressed_incident_keeps_the_filesystems_and_top_processes_now_and_at_its_worst(decider: Decider) -> None:
    def fed(p: float, at: float, full: float, top: str) -> None:
        sample = Sample("pc1", at, {**TYPICAL, "disk_percent": full}, filesystems={"/": 30.0, "/data": full},
                        processes={"memory": [(top, 4121, 61.0)]})
        db.store_batch([sample], [p], 1, [], on_stored=lambda new: decider.decide(new, now=at))

    fed(0.95, T0, 99.5, "java")
    fed(0.8, T0 + 5, 98.0, "postgres")

    detail = Incident.get().detail
    assert (detail.peak_filesystems, detail.filesystems) == ({"/": 30.0, "/data": 99.5}, {"/": 30.0, "/data": 98.0})
    assert (detail.peak_processes, detail.processes) == ({"memory": [["java", 4121, 61.0]]},
                                                         {"memory": [["postgres", 4121, 61.0]]})
    assert "• Disk /data 98 %" in alerts.alert(Incident.get(), {}, T0 + 10)


def test_a_filling_filesystem_with_a_deep_mount_point_opens_its_own_forecast_incident(decider: Decider) -> None:
    deep = "/var/lib/postgresql/16/main/pg_wal/archive"
    minute = 60.0

    def fed(i: int, used: float) -> None:
        filesystems = {"/": 92.0, deep: used}
        db.store_batch([Sample("pc1", T0 + i * minute, {**TYPICAL, "disk_percent": max(filesystems.values())},
                               filesystems=filesystems)], [0.1], 1, [], on_stored=decider.decide)

    for i in range(150):  # 1 % every 10 minutes from 70 %; / stays at 92 %, the fullest
        fed(i, 70 + i / 10)
    forecast = Incident.get(Incident.kind == "forecast")
    assert forecast.detail.metric == f"disk:{deep}" and len(forecast.metric) <= 32
    assert "/var/lib/postgresql/16/main/pg_wal/archive will be full in about" in alerts.alert(forecast, {}, T0)

    for i in range(150, 240):  # cleaned up
        fed(i, 40.0)
    assert Incident.get_by_id(forecast.id).state == "resolved"
    assert Incident.select().where(Incident.kind == "forecast").count() == 1
