"""Conditions of a machine's objects decided against a real SQLite file and a real PostgreSQL server: the catalogue
is whole, each kind of rule opens, keeps and resolves one incident per (machine, condition, object), and a ❌
makes a condition expected on one machine until Undo."""

from __future__ import annotations

import pytest

from agent.vocabulary import KNOWN_METRICS, READINGS
from agent.wire import Sample, encode, parse
from bot import db
from bot.chat import alerts, status
from bot.db import Expected, Incident, Notice
from bot.db.incidents import press, undo_tolerance
from bot.pipeline.decide import Decider
from bot.pipeline.tolerating import Tolerances
from schema.conditions import CONDITIONS, Count, Event, Fact, Predicted, Trend
from schema.domain import Action, Kind
from tests.fakes.incidents import T0, TYPICAL, intake_alive
from tests.fakes.samples import with_devices

BOB, ALICE = 7, 8


def readings_feed(decider: Decider, device: str, readings: list[dict], start: float = T0, step: float = 60.0,
                  notes: dict | None = None, **metrics: float) -> list[Sample]:
    """One sample per readings, `step` seconds apart, stored and decided as the poller does; each sample goes
    through the wire format first, as a sender's does."""
    samples = [parse(encode(device, start + i * step, {**TYPICAL, **metrics}, readings=reading, notes=notes))
               for i, reading in enumerate(readings)]
    now = start + len(readings) * step
    db.store_batch(samples, [0.1] * len(samples), 1, [], on_stored=lambda new: decider.decide(new, now=now))
    intake_alive(start, now)
    return samples


def conditions() -> list[Incident]:
    return list(Incident.select().where(Incident.kind == Kind.CONDITION).order_by(Incident.id))


def alert_texts() -> list[str]:
    return [alerts.alert(i, {}, i.last_ts + 60) for i in conditions()]


def test_the_catalogue_declares_every_condition_whole() -> None:
    for name, condition in CONDITIONS.items():
        assert len(name) <= 16, "the outbox groups by it, in a 16-character column"
        assert condition.reading in READINGS or condition.reading in KNOWN_METRICS, name
        assert set(condition.reads) <= set(READINGS), name
        assert condition.series and condition.agent and condition.anchor and condition.todo, name
        assert isinstance(condition.rule, Fact | Count | Event | Trend | Predicted)


def test_a_degraded_array_alerts_at_once_naming_the_array_and_the_member_then_recovers(decider: Decider) -> None:
    degraded = {"md_required": {"md0": 2}, "md_active": {"md0": 1}, "md_failed": {"md0": 1}}
    readings_feed(decider, "db3", [degraded], notes={"md_failed": {"md0": "sdb"}})

    (incident,) = conditions()
    assert (incident.state, incident.detail.metric, incident.detail.severity) == ("open", "cond:raid:md0", "critical")
    assert alert_texts()[0].startswith("🚨 <b>db3</b>: RAID md0 degraded: 1 of 2 disks active, sdb failed\nSince ")
    assert "mdadm --manage" in alert_texts()[0]
    assert [n.chat_id for n in Notice.select()] == [11, 22]

    whole = {"md_required": {"md0": 2}, "md_active": {"md0": 2}, "md_failed": {"md0": 0}}
    readings_feed(decider, "db3", [whole], start=T0 + 600)

    (incident,) = conditions()
    assert incident.state == "resolved"
    assert [n.text for n in Notice.select().where(Notice.kind == "reply")] == [
        "✅ db3: RAID array degraded (md0) cleared after 10 min"] * 2


def test_a_failed_unit_stays_open_while_systemd_is_not_read_and_recovers_once_it_is_gone(decider: Decider) -> None:
    readings_feed(decider, "web2", [{"unit_failed": {"nginx.service": 1, "cron.service": 0}}])
    readings_feed(decider, "web2", [{}], start=T0 + 60)  # systemd not read this time: nothing is known

    (incident,) = conditions()
    assert (incident.state, incident.detail.evidence) == ("open", "nginx.service failed")

    readings_feed(decider, "web2", [{"unit_failed": {}}], start=T0 + 120)  # read, and no unit failed

    assert conditions()[0].state == "resolved"


def test_restarts_in_a_loop_alert_once_past_the_window_bound_and_recover_when_the_window_empties(
    decider: Decider,
) -> None:
    restarts = [{"unit_restarts": {"app.service": 1}}] * 3 + [{"unit_restarts": {}}] * 20
    readings_feed(decider, "web2", restarts)

    (incident,) = conditions()
    assert incident.detail.metric == "cond:unit_restarting:app.service"
    assert incident.opened_ts == T0 + 120, "the third restart within 15 min"
    assert incident.state == "resolved" and incident.resolved_ts == T0 + 15 * 60, "15 min after the first"


def test_a_level_must_last_and_a_read_only_filesystem_is_not_out_of_inodes(decider: Decider) -> None:
    full = {"inodes_percent": {"/var": 97.5, "/snap": 100.0}, "inodes_used": {"/var": 1_200_000},
            "readonly": {"/var": 0, "/snap": 1}}
    readings_feed(decider, "build1", [full] * 4)
    assert conditions() == [], "4 minutes: not yet"

    readings_feed(decider, "build1", [full] * 3, start=T0 + 240)

    (incident,) = conditions()
    assert (incident.detail.metric, incident.detail.severity) == ("cond:inodes:/var", "critical")
    assert incident.detail.evidence == "/var almost out of inodes (97.5 % used, 1.2 M files)"
    assert incident.opened_ts == T0 + 300


def test_a_remount_read_only_alerts_but_a_filesystem_read_only_from_the_start_does_not(decider: Decider) -> None:
    readings_feed(decider, "db3", [{"readonly": {"/data": 0, "/boot/efi": 1}}, {"readonly": {"/data": 1,
                                                                                            "/boot/efi": 1}}])

    (incident,) = conditions()
    assert incident.detail.evidence == "/data was remounted read-only"


def test_a_reboot_is_said_once_and_is_over_at_once(decider: Decider) -> None:
    readings_feed(decider, "pc1", [{}, {}], uptime_s=40 * 86400.0)
    readings_feed(decider, "pc1", [{}], start=T0 + 200, uptime_s=120.0)

    (incident,) = conditions()
    assert (incident.state, incident.detail.evidence) == ("resolved", "rebooted 2 min ago, after 40 d up")
    assert alert_texts()[0].startswith("ℹ️ <b>pc1</b> rebooted 2 min ago, after 40 d up (")
    assert Notice.select().where(Notice.kind == "reply").count() == 0, "no recovery to tell"
    assert incident.next_reminder is None, "information is not reminded of"


def test_expected_on_one_machine_until_undo(decider: Decider) -> None:
    tolerances = Tolerances()
    decider.tolerances = tolerances
    failed = {"unit_failed": {"backup.service": 1}}
    readings_feed(decider, "nas1", [failed])
    readings_feed(decider, "nas2", [failed])
    first = conditions()[0]

    pressed = press(first.id, Action.EXPECTED, BOB, "@bob", T0 + 100)
    tolerances.refresh()
    assert (pressed.state, pressed.detail.expected_by) == ("false alarm", "@bob")
    assert [(e.device, e.metric) for e in Expected.select()] == [("nas1", "cond:unit_failed:backup.service")]
    assert "is expected on nas1 (❌ by @bob)" in alerts.alert(pressed, {}, T0 + 100)
    assert [b.text for row in alerts.keyboard(pressed).inline_keyboard for b in row] == [
        "↩️ Undo", "📈 Chart", "📄 Report"]

    readings_feed(decider, "nas1", [failed] * 3, start=T0 + 120)
    assert [(i.device, i.state) for i in conditions()] == [("nas1", "false alarm"), ("nas2", "open")]
    assert "• service failed (backup.service) (❌ by @bob" in status.device_status(
        db.latest_sample("nas1"), 0.7, 1, expected=db.tolerances.expected("nas1"))

    assert undo_tolerance(first.id, ALICE, "@alice", False, T0 + 400)[1] is None, "only who set it, or an admin"
    assert undo_tolerance(first.id, BOB, "@bob", False, T0 + 400)[1] == ["cond:unit_failed:backup.service"]
    tolerances.refresh()
    readings_feed(decider, "nas1", [failed], start=T0 + 500)

    assert [(i.device, i.state) for i in conditions()] == [("nas1", "false alarm"), ("nas2", "open"),
                                                          ("nas1", "open")]


def test_status_marks_a_machine_with_an_open_condition_and_says_what_it_cannot_read(decider: Decider) -> None:
    readings_feed(decider, "web2", [{"unit_failed": {"nginx.service": 1}}])
    sample = parse(encode("web3", T0, dict(TYPICAL), unreadable={"systemd": "no systemd on this machine"}))
    db.store_batch([sample], [0.1], 1, [], on_stored=with_devices)

    fleet = status.overview(db.seen_per_device(), 0.7, now=T0 + 60, problems=db.open_conditions())
    web3 = status.device_status(db.latest_sample("web3"), 0.7, 1, now=T0 + 60)
    web2 = status.device_status(db.latest_sample("web2"), 0.7, 1, now=T0 + 60,
                                problems=db.open_conditions("web2")["web2"])

    assert "1 problem, 1 normal" in fleet and "🛠 problem" in fleet
    assert "Not readable here: systemd (no systemd on this machine)" in web3
    assert "🛠 web2" not in web2 and "🛠 nginx.service failed (since 1 min)" in web2


def test_inodes_heading_for_the_edge_are_forecast_once_past_the_first_level_on_a_writable_filesystem(
    decider: Decider,
) -> None:
    def filling(start: float, mount: str, readonly: int) -> list[dict]:  # +4 % an hour, one sample a minute
        return [{"inodes_percent": {mount: start + 4.0 * minute / 60}, "readonly": {mount: readonly}}
                for minute in range(90)]

    readings_feed(decider, "build1", filling(84.0, "/var", 0))
    readings_feed(decider, "build2", filling(84.0, "/ro", 1))
    readings_feed(decider, "build3", filling(50.0, "/fast", 0))

    (forecast,) = Incident.select().where(Incident.kind == Kind.FORECAST)
    assert (forecast.device, forecast.detail.metric) == ("build1", "inodes:/var")
    text = alerts.alert(forecast, {}, forecast.last_ts)
    assert "<b>build1</b>: /var will run out of inodes in about 3 h (now 89 % used, +4.0 %/h)" in text
    assert "du --inodes" in text


# Each condition of the catalogue from its own readings: (readings of every sample, how many samples a minute
# apart, what its alert says). The coverage table in docs/conditions.md names these.
OPENS = {
    "inodes": ({"inodes_percent": {"/var": 96.0}, "readonly": {"/var": 0}}, 6, "/var almost out of inodes (96.0 %"),
    "readonly": (None, 0, "/data was remounted read-only"),
    "raid": ({"md_required": {"md1": 2}, "md_active": {"md1": 2}, "md_failed": {"md1": 1}}, 1,
             "RAID md1: a disk failed, 1 failed (2 of 2 still active)"),
    "unit_failed": ({"unit_failed": {"nginx.service": 1}}, 1, "nginx.service failed"),
    "unit_restarting": ({"unit_restarts": {"app.service": 2}}, 2, "app.service restarted 4 times in 15 min"),
    "oom": ({"oom_kills": {"": 1}}, 1, "the kernel killed 1 process for memory in 30 min"),
    "clock": ({"clock_synced": {"": 0}, "clock_maxerror_s": {"": 16.0}, "clock_offset_s": {"": 0.0}}, 11,
              "clock not synchronising (maximum error 16 s)"),
    "fd": ({"fd_percent": {"": 92.0}}, 6, "92.0 % of the system's file descriptors in use"),
    "conntrack": ({"conntrack_percent": {"": 80.0}}, 1, "connection tracking table 80.0 % full"),
    "pids": ({"pids_percent": {"": 85.0}}, 6, "85.0 % of the process ids in use"),
    "net_errors": ({"net_errors_percent": {"eth0": 3.0}, "net_drops_percent": {"eth0": 0.5}}, 11,
                   "eth0: 3.0 % of packets with errors, 0.5 % dropped"),
    "link_flapping": ({"link_changes": {"eth1": 2}}, 2, "eth1 went down and up twice in 5 min"),
    "bond": ({"bond_slaves": {"bond0": 2}, "bond_active": {"bond0": 1}}, 1, "bond0: 1 of 2 links up"),
    "reboot_required": ({"reboot_required": {"": 1}}, 1, "needs a reboot to finish its updates"),
    "major_faults": ({"major_faults_per_s": {"": 900.0}}, 16, "900 major page faults a second"),
    "io_saturation": ({"disk_io_queue": {"sda": 14.0}}, 16, "sda: 14 I/Os waiting on average"),
    "ecc_corrected": ({"ecc_correctable": {"mc0": 3}}, 1, "mc0: 3 memory errors corrected in 10 min"),
    "ecc_uncorrected": ({"ecc_uncorrectable": {"mc0": 1}}, 1, "mc0: 1 memory error NOT corrected in 1 h"),
    "temp_alarm": ({"temp_alarm": {"coretemp/Package id 0": 1}}, 1,
                   "coretemp/Package id 0 reports a critical temperature"),
    "textfile_error": ({"textfile_error": {"": 1}}, 1, "node_exporter could not read its textfile directory"),
    "smart_failed": ({"smart_health": {"sdb": 0}}, 1, "disk sdb fails its SMART self-assessment"),
    "nvme_warning": ({"nvme_critical_warning": {"nvme0n1": 4}}, 1,
                     "disk nvme0n1 raises its NVMe critical warning (4)"),
    "nvme_wear": ({"nvme_percentage_used": {"nvme0n1": 93}, "nvme_available_spare": {"nvme0n1": 40},
                   "nvme_spare_threshold": {"nvme0n1": 10}}, 1,
                  "disk nvme0n1 has used 93 % of its endurance, 40 % spare left"),
}


@pytest.mark.parametrize("name", [name for name, c in CONDITIONS.items() if isinstance(c.rule, Fact | Count)])
def test_every_condition_opens_from_its_own_readings_and_names_its_object(decider: Decider, name: str) -> None:
    readings, count, says = OPENS[name]
    if readings is None:  # a remount: the filesystem was writable first
        readings_feed(decider, "m1", [{"readonly": {"/data": 0}}, {"readonly": {"/data": 1}}])
    else:
        readings_feed(decider, "m1", [readings] * count)

    (incident,) = conditions()
    assert incident.detail.metric.startswith(f"cond:{name}:")
    assert incident.detail.evidence.startswith(says), incident.detail.evidence


MIXIN = [
    "NodeFilesystemSpaceFillingUp",
    "NodeFilesystemAlmostOutOfSpace",
    "NodeFilesystemFilesFillingUp",
    "NodeFilesystemAlmostOutOfFiles",
    "NodeNetworkReceiveErrs",
    "NodeNetworkTransmitErrs",
    "NodeHighNumberConntrackEntriesUsed",
    "NodeTextFileCollectorScrapeError",
    "NodeClockSkewDetected",
    "NodeClockNotSynchronising",
    "NodeRAIDDegraded",
    "NodeRAIDDiskFailure",
    "NodeFileDescriptorLimit",
    "NodeCPUHighUsage",
    "NodeSystemSaturation",
    "NodeMemoryMajorPagesFaults",
    "NodeMemoryHighUtilization",
    "NodeDiskIOSaturation",
    "NodeSystemdServiceFailed",
    "NodeSystemdServiceCrashlooping",
    "NodeBondingDegraded",
]


def test_the_coverage_table_names_every_condition_and_every_host_alert_of_the_node_mixin() -> None:
    from pathlib import Path

    table = (Path(__file__).resolve().parents[1] / "docs" / "conditions.md").read_text()
    rows = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")}

    assert len(MIXIN) == 21
    assert set(MIXIN) <= rows, set(MIXIN) - rows
    assert {f"`{name}`" for name in CONDITIONS} <= rows
    for name in OPENS:
        assert f"`[{name}]`" in table or f"`{name}`" in table
