"""Disks through the bot's decisions, against a real SQLite file and a real PostgreSQL server, with the disk model
that ships: one incident per disk the model says is likely to fail, kept up to date, answered ✅ replaced or ❌
wrong, or gone with the disk, but not while the disk cannot be read; and a failed SMART self-assessment at once."""

from __future__ import annotations

import pytest

from agent.wire import encode, parse
from bot import db
from bot.chat import alerts, status
from bot.db import DiskLabel, Incident, Notice
from bot.db.incidents import press
from bot.pipeline.baselines import Baselines
from bot.pipeline.decide import Decider
from bot.pipeline.disks import ActiveDiskModel, Disks
from bot.pipeline.forecast import Forecaster
from bot.pipeline.lifecycle import Incidents
from ml.store import open_disk_store
from schema.domain import Action, Kind
from tests.fakes.incidents import T0, TYPICAL, drivers, intake_alive

DAY = 86400.0


@pytest.fixture(scope="module")
def disk_model(tmp_path_factory: pytest.TempPathFactory) -> ActiveDiskModel:
    """The disk model a bot saves into its empty store on first start: the one that ships."""
    model = ActiveDiskModel(open_disk_store(f"file:{tmp_path_factory.mktemp('models')}"))
    model.ensure()
    return model


@pytest.fixture
def decider(incidents: Incidents, disk_model: ActiveDiskModel) -> Decider:
    return Decider(incidents, drivers, Forecaster(4 * 3600), Baselines(), disks=Disks(disk_model))


def smart(disks: dict[str, dict[str, float]], health: dict[str, int] | None = None) -> dict:
    """The readings of a sample with these disks ({name: {reading: value}})."""
    readings: dict[str, dict] = {"smart_health": {name: (health or {}).get(name, 1) for name in disks}}
    for name, values in disks.items():
        for reading, value in values.items():
            readings.setdefault(reading, {})[name] = value
    return readings


def days(decider: Decider, device: str, daily: list[dict], notes: dict, start: float = T0,
         unreadable: dict[str, str] | None = None) -> None:
    """One sample a day of these readings (and of what could not be read), each decided as the poller does."""
    for n, readings in enumerate(daily):
        ts = start + n * DAY
        sample = parse(encode(device, ts, dict(TYPICAL), readings=readings, notes=notes, unreadable=unreadable))
        db.store_batch([sample], [0.1], 1, [], on_stored=lambda new, ts=ts: decider.decide(new, now=ts + 60))
        intake_alive(ts, ts + 60)


def test_a_disk_getting_worse_alerts_once_and_stays_open_while_a_merely_scarred_one_is_quiet(
    decider: Decider,
) -> None:
    notes = {"smart_health": {"sdb": "ST31500541AS|Z1F0ABCD", "sda": "ST31500541AS|5XW00QUIET"}}
    growing = [0, 0, 130, 260, 390, 520, 650, 650]
    daily = [smart({"sdb": {"smart_5_raw": n, "smart_197_raw": 8, "smart_9_raw": 20000},
                    "sda": {"smart_5_raw": 3, "smart_197_raw": 0, "smart_9_raw": 20000}}) for n in growing]
    days(decider, "nas1", daily, notes)

    (incident,) = Incident.select().where(Incident.kind == Kind.CONDITION)
    assert incident.detail.metric == "cond:disk_failing:Z1F0ABCD"
    assert incident.detail.evidence.startswith(
        "disk sdb (ST31500541AS, serial Z1F0ABCD) is likely to fail within 30 days (P ")
    assert "reallocated sectors 0 → " in incident.detail.evidence
    text = alerts.alert(incident, {}, incident.last_ts)
    assert text.startswith("💽 <b>nas1</b>: disk sdb") and "Copy what matters off it and plan the swap." in text
    assert [b.text for row in alerts.keyboard(incident).inline_keyboard for b in row][:2] == ["✅ Replaced", "❌ Wrong"]
    assert Notice.select().where(Notice.kind == "alert").count() == 2, "one alert, to each of the two chats"

    listed = status.disk_lines(db.disks.latest("nas1"))
    assert listed[0].startswith("sdb ST31500541AS Z1F0ABCD: P ") and listed[1].startswith("sda ST31500541AS")

    replaced = press(incident.id, Action.CORRECT, 7, "@bob", T0 + 9 * DAY)
    assert replaced.state == "resolved"
    assert [(label.serial, label.value) for label in DiskLabel.select()] == [("Z1F0ABCD", 1)]
    assert "marked replaced by @bob" in alerts.alert(replaced, {}, T0 + 9 * DAY)


def test_a_disk_that_leaves_the_machine_recovers_and_a_failed_self_assessment_alerts_at_once(
    decider: Decider,
) -> None:
    notes = {"smart_health": {"sdb": "ST31500541AS|Z1F0GONE", "sdc": "WDC WD30EFRX|WMC1T0SELF"}}
    worse = [smart({"sdb": {"smart_5_raw": n, "smart_197_raw": 8}}) for n in (0, 200, 400, 600, 800)]
    days(decider, "nas2", worse, notes)
    days(decider, "nas2", [smart({"sdc": {"smart_5_raw": 0}}, health={"sdc": 0})], notes, start=T0 + 5 * DAY)

    incidents = {i.detail.metric: i for i in Incident.select().where(Incident.kind == Kind.CONDITION)}
    assert incidents["cond:disk_failing:Z1F0GONE"].state == "resolved", "sdb left the machine"
    failed = incidents["cond:smart_failed:sdc"]
    assert (failed.state, failed.detail.evidence) == (
        "open", "disk sdc (WDC WD30EFRX, serial WMC1T0SELF) fails its SMART self-assessment")


def test_a_disk_that_cannot_be_read_keeps_its_incidents_open_even_after_a_restart_and_one_gone_recovers(
    decider: Decider, incidents: Incidents, disk_model: ActiveDiskModel,
) -> None:
    """sdb likely to fail and sdc failing its self-assessment stop answering (smartctl times out on a dying disk, or
    it sleeps): they are missing from the SMART readings, but said unreadable. That is not a disk that left the
    machine: both incidents stay open, across a restart of the bot too, and /status says the disks cannot be read.
    Once they are missing and not unreadable, they are gone: both recover."""
    notes = {"smart_health": {"sda": "ST31500541AS|5XW00QUIET", "sdb": "ST31500541AS|Z1F0SLOW",
                              "sdc": "WDC WD30EFRX|WMC1T0SELF"}}
    quiet = {"smart_5_raw": 3, "smart_197_raw": 0}
    worse = [smart({"sda": quiet, "sdb": {"smart_5_raw": n, "smart_197_raw": 8}, "sdc": {"smart_5_raw": 0}},
                   health={"sdc": 0}) for n in (0, 200, 400, 600, 800)]
    days(decider, "nas3", worse, notes)
    failing, failed = "cond:disk_failing:Z1F0SLOW", "cond:smart_failed:sdc"

    def states() -> dict[str, str]:
        return {i.detail.metric: i.state for i in Incident.select().where(Incident.kind == Kind.CONDITION)}

    assert states() == {failing: "open", failed: "open"}

    unreadable = {"smart sdb": "smartctl did not answer within 20 s", "smart sdc": "asleep (standby): its SMART is "
                  "read once it is awake, so as not to spin it up"}
    days(decider, "nas3", [smart({"sda": quiet})], notes, start=T0 + 5 * DAY, unreadable=unreadable)
    restarted = Decider(incidents, drivers, Forecaster(4 * 3600), Baselines(), disks=Disks(disk_model))
    days(restarted, "nas3", [smart({"sda": quiet})], notes, start=T0 + 6 * DAY, unreadable=unreadable)

    assert states() == {failing: "open", failed: "open"}, "not read is not gone"
    sample = db.latest_sample("nas3")
    assert sample is not None
    shown = status.device_status(sample, 0.7, 1, now=T0 + 6 * DAY + 60,
                                 problems=db.open_conditions("nas3").get("nas3", []), disks=db.disks.latest("nas3"))
    assert "Not readable here: smart sdb (smartctl did not answer within 20 s), smart sdc (asleep (standby)" in shown
    assert "fails its SMART self-assessment" in shown and "is likely to fail within 30 days" in shown
    lines = {line.split()[0]: line for line in status.disk_lines(db.disks.latest("nas3"), sample.unreadable)}
    assert lines["sdb"].endswith(" · not readable now") and lines["sdc"].endswith(" · not readable now")
    assert not lines["sda"].endswith("not readable now")

    days(restarted, "nas3", [smart({"sda": quiet})], notes, start=T0 + 7 * DAY)

    assert states() == {failing: "resolved", failed: "resolved"}, "missing, and read: gone from the machine"
