"""Incident decisions against a real SQLite file and a real PostgreSQL server: open once, update, resolve with
hysteresis, silence, reminders, snooze, mute, forecasts, and the buttons' effects."""

from __future__ import annotations

import json
import time

import peewee as pw
import pytest

from agent.wire import Sample
from bot import incidents, store
from bot.baselines import Baselines
from bot.forecast import Forecaster
from bot.incidents import Decider, Rules
from bot.store import Device, Incident, Label, Notice

T0 = 1764226800.0
CHATS = (11, 22)
RULES = Rules(threshold=0.7, hysteresis=0.15, recover_samples=3, repeat_s=1800, silent_after_s=None,
              chat_ids=CHATS)
TYPICAL = {"cpu_percent": 20.0, "mem_percent": 50.0, "disk_percent": 50.0}


@pytest.fixture
def decider(database: pw.Database) -> Decider:
    return Decider(RULES, lambda metrics: ["disk_percent"] if metrics.get("disk_percent", 0) > 90 else [],
                   Forecaster(4 * 3600), Baselines())


def feed(decider: Decider, device: str, ps: list[float], start: float = T0, step: float = 5.0,
         **metrics: float) -> None:
    """Store one sample per P, `step` seconds apart, deciding in the batch's transaction as the poller does."""
    samples = [Sample(device, start + i * step, {**TYPICAL, **metrics}) for i in range(len(ps))]
    store.store_batch(samples, ps, 1, [], on_stored=lambda new: decider.decide(new, now=start + len(ps) * step))


def notices(kind: str | None = None) -> list[Notice]:
    query = Notice.select().order_by(Notice.id)
    return list(query.where(Notice.kind == kind) if kind else query)


def test_a_stressed_stretch_is_one_incident_with_one_alert_per_chat_until_it_recovers(decider: Decider) -> None:
    feed(decider, "pc1", [0.2, 0.9, 0.95, 0.8, 0.91], disk_percent=99.0)

    (incident,) = Incident.select()
    assert (incident.state, incident.kind, incident.peak_p, incident.last_p) == ("open", "stressed", 0.95, 0.91)
    assert incident.opened_ts == T0 + 5
    assert [(n.chat_id, n.kind) for n in notices()] == [(11, "alert"), (22, "alert")]
    assert json.loads(incident.detail)["drivers"] == ["disk_percent"]

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
    decider: Decider,
) -> None:
    store.mute("pc1", T0 + 60, "kernel upgrade", 7, "@alice")

    feed(decider, "pc1", [0.9, 0.95])
    assert Incident.select().count() == 0 and store.Metric.select().count() == 2
    assert decider.end_mutes(now=T0 + 30) == []

    assert decider.end_mutes(now=T0 + 61) == ["pc1"]
    assert Incident.get().state == "open" and store.mutes(T0 + 61) == []


def test_a_device_that_stops_reporting_opens_a_silence_incident_and_its_next_sample_resolves_it(
    decider: Decider,
) -> None:
    feed(decider, "pc1", [0.1] * 10, step=10.0)  # every 10 s: silent after max(60, 3 x 10) s
    device = Device.get()
    assert device.interval == pytest.approx(10.0)

    assert decider.check_silent(now=device.last_received + 59) == 0
    assert decider.check_silent(now=device.last_received + 61) == 1
    assert decider.check_silent(now=device.last_received + 300) == 0, "one incident per silence"
    silent = Incident.get()
    assert (silent.kind, silent.opened_ts) == ("silent", T0 + 90)

    feed(decider, "pc1", [0.1], start=T0 + 400)
    assert Incident.get().state == "resolved"
    assert notices("reply")[0].text == "✅ pc1 is reporting again after 5 min of silence"


def test_reminders_go_to_unacknowledged_unsnoozed_incidents_only(decider: Decider) -> None:
    feed(decider, "pc1", [0.9])
    feed(decider, "pc2", [0.9])
    feed(decider, "pc3", [0.9])
    pc1, pc2, pc3 = Incident.select().order_by(Incident.device)
    opened = pc1.created

    assert decider.due_reminders(now=opened + 60) == 0
    incidents.press(pc2.id, "ok", 7, "@alice", opened + 100)
    incidents.press(pc3.id, "s8", 7, "@alice", opened + 100)
    assert decider.due_reminders(now=opened + 1801) == 1
    assert decider.due_reminders(now=opened + 1802) == 0, "the next one in another 30 minutes"
    assert [n.incident_id for n in notices("reply")] == [pc1.id] * len(CHATS)
    assert notices("reply")[0].text.startswith("⏰ pc1 is still stressed")


def test_the_buttons_label_acknowledge_close_and_snooze(decider: Decider) -> None:
    feed(decider, "pc1", [0.9])
    feed(decider, "pc2", [0.9])
    pc1, pc2 = Incident.select().order_by(Incident.device)

    assert "labelled stressed" in incidents.press(pc1.id, "ok", 7, "@alice", T0 + 100)
    assert "false alarm" in incidents.press(pc2.id, "no", 8, "@bob", T0 + 100)
    assert "1 h" in incidents.press(pc1.id, "s1", 7, "@alice", T0 + 200)

    pc1, pc2 = Incident.get_by_id(pc1.id), Incident.get_by_id(pc2.id)
    assert (pc1.state, pc1.acked_by, pc1.snoozed_until) == ("open", "@alice", T0 + 200 + 3600)
    assert (pc2.state, pc2.acked_by) == ("false alarm", "@bob")
    assert sorted((label.metric_id, label.value) for label in Label.select()) == [(pc1.sample_id, 1),
                                                                                  (pc2.sample_id, 0)]


def test_a_button_is_valid_only_in_a_chat_its_incident_was_sent_to(decider: Decider) -> None:
    feed(decider, "pc1", [0.9])
    incident = Incident.get()

    assert store.incident_for_button(incident.id, 11).id == incident.id
    assert store.incident_for_button(incident.id, 999) is None
    assert store.incident_for_button(incident.id + 1, 11) is None


def test_a_filling_disk_opens_one_forecast_incident_which_ends_when_the_disk_is_cleaned(decider: Decider) -> None:
    minute = 60.0
    for i in range(150):  # 1 % every 10 minutes from 70 %
        store.store_batch([Sample("pc1", T0 + i * minute, {**TYPICAL, "disk_percent": 70 + i / 10})], [0.1], 1, [],
                          on_stored=decider.decide)
    forecast = Incident.get(Incident.kind == "forecast")
    detail = json.loads(forecast.detail)
    assert detail["metric"] == "disk_percent" and 0.09 < detail["slope_per_h"] / 60 < 0.11
    assert Incident.select().where(Incident.kind == "forecast").count() == 1

    for i in range(150, 240):  # cleaned up: flat at 40 %
        store.store_batch([Sample("pc1", T0 + i * minute, {**TYPICAL, "disk_percent": 40.0})], [0.1], 1, [],
                          on_stored=decider.decide)
    assert Incident.get_by_id(forecast.id).state == "resolved"
    assert Incident.select().where(Incident.kind == "forecast").count() == 1


def test_a_flood_limit_is_read_in_seconds_or_as_a_timedelta() -> None:
    from datetime import timedelta

    from bot.sender import retry_seconds

    assert retry_seconds(3) == 3.0
    assert retry_seconds(timedelta(seconds=42)) == 42.0


def test_a_notice_another_process_sent_after_this_one_read_it_is_not_claimed_again(decider: Decider) -> None:
    from bot.sender import claim, due, record_sent

    feed(decider, "pc1", [0.9])
    read_here = [notice.id for notice, _, _ in due(time.time())]  # this process reads the outbox...
    for notice_id in read_here:  # ...while another one claims, sends and records every row
        assert claim(notice_id, True)
        record_sent(notice_id, 100 + notice_id, 1, time.time())

    assert read_here and not any(claim(notice_id, True) for notice_id in read_here)
