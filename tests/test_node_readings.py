"""node_exporter's series become the readings the agent sends (bot/intake/node_readings.py), and the SMART exporters'
the disks' SMART (bot/intake/smart_readings.py): series in, a sample's readings out, each object named as the agent
names it; a reading present is whole, a count or a rate is what happened since the machine's previous scrape, a disk
reads as the agent reads the same disk, and every sample is a valid wire message."""

from __future__ import annotations

import json
import time
from pathlib import Path

import peewee as pw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.smart import Disk, judge
from agent.vocabulary import READINGS
from agent.wire import MAX_READING_OBJECTS, Sample, encode, parse
from bot import db
from bot.intake.node_exporter import NodeExporter, Verdict, key
from bot.intake.remote_write import MAYBE_READ, Receiver
from tests.fakes.node_exporter import UNIT_STATES, Labels, body, machine, write_request
from tests.fakes.smart_exporters import smartctl_exporter, smartmon
from tests.fakes.smartctl import ATA_DISK, NVME_DISK, failing

T0 = round(time.time() - 600, 3)
Scrape = dict[tuple[str, Labels], float]


def server(oom_kill: float = 3.0, restarts: float = 2.0, errs: float = 10.0, drops: float = 0.0, packets: float = 1e6,
           carrier: float = 2.0, major_faults: float = 1e4, io_weighted: float = 2e5, corrected: float = 0.0,
           uncorrected: float = 0.0, stalled_memory: float = 1.0, stalled_io: float = 30.0,
           failed: tuple[str, ...] = ()) -> Scrape:
    """A node_exporter scrape of a server with every collector of a reading on: an md array missing a disk, a few
    units (those in `failed` failed), a bond with one link down, a reboot waiting; the counters as given."""
    scrape = machine(units=0, filler=0)
    scrape["node_md_disks", (("device", "md0"), ("state", "active"))] = 1.0
    scrape["node_md_disks", (("device", "md0"), ("state", "failed"))] = 1.0
    scrape["node_md_disks", (("device", "md0"), ("state", "spare"))] = 0.0
    scrape["node_md_disks_required", (("device", "md0"),)] = 2.0
    scrape["node_md_state", (("device", "md0"), ("state", "active"))] = 1.0
    for unit in ("nginx.service", "postgresql.service", "backup.timer"):
        for state in UNIT_STATES:
            now = "failed" if unit in failed else "active"
            scrape["node_systemd_unit_state", (("name", unit), ("state", state), ("type", "simple"))] = float(
                state == now)
    for state in UNIT_STATES:
        scrape["node_systemd_units", (("state", state),)] = float(
            len(failed) if state == "failed" else 3 - len(failed) if state == "active" else 0)
    scrape["node_systemd_service_restart_total", (("name", "nginx.service"),)] = restarts
    scrape["node_systemd_service_restart_total", (("name", "postgresql.service"),)] = 0.0
    scrape["node_vmstat_oom_kill", ()] = oom_kill
    scrape["node_vmstat_pgmajfault", ()] = major_faults
    scrape["node_filefd_allocated", ()] = 9500.0
    scrape["node_filefd_maximum", ()] = 10000.0
    scrape["node_nf_conntrack_entries", ()] = 65536.0
    scrape["node_nf_conntrack_entries_limit", ()] = 262144.0
    scrape["node_processes_threads", ()] = 800.0
    scrape["node_processes_pids", ()] = 200.0
    scrape["node_processes_max_processes", ()] = 4e6
    scrape["node_timex_sync_status", ()] = 0.0
    scrape["node_timex_offset_seconds", ()] = -0.25
    scrape["node_timex_maxerror_seconds", ()] = 16.0
    for device in ("lo", "eth0", "eth1", "docker0"):
        for way in ("receive", "transmit"):
            scrape[f"node_network_{way}_packets_total", (("device", device),)] = packets
            scrape[f"node_network_{way}_errs_total", (("device", device),)] = errs if device == "eth0" else 0.0
            scrape[f"node_network_{way}_drop_total", (("device", device),)] = drops
        scrape["node_network_carrier_changes_total", (("device", device),)] = carrier if device == "eth1" else 2.0
    scrape["node_bonding_slaves", (("master", "bond0"),)] = 2.0
    scrape["node_bonding_active", (("master", "bond0"),)] = 1.0
    scrape["node_reboot_required", ()] = 1.0
    scrape["node_textfile_scrape_error", ()] = 0.0
    for disk in ("nvme0n1", "sda", "sdb"):
        scrape["node_disk_io_time_weighted_seconds_total", (("device", disk),)] = io_weighted if disk == "sda" else 0.0
    scrape["node_edac_correctable_errors_total", (("controller", "0"),)] = corrected
    scrape["node_edac_uncorrectable_errors_total", (("controller", "0"),)] = uncorrected
    scrape["node_edac_correctable_errors_total", (("controller", "1"),)] = 0.0
    scrape["node_edac_uncorrectable_errors_total", (("controller", "1"),)] = 0.0
    scrape["node_hwmon_temp_crit_alarm_celsius", (("chip", "platform_coretemp_0"), ("sensor", "temp1"))] = 0.001
    scrape["node_hwmon_temp_crit_alarm_celsius", (("chip", "platform_coretemp_0"), ("sensor", "temp2"))] = 0.0
    scrape["node_pressure_memory_stalled_seconds_total", ()] = stalled_memory
    scrape["node_pressure_io_stalled_seconds_total", ()] = stalled_io
    return scrape


def scrapes(*timed: tuple[float, Scrape], device: str = "srv1") -> list[Sample]:
    """The samples of scrapes of one machine, each handed to the mapper series by series at its time."""
    mapper = NodeExporter()
    samples = []
    for ts, scrape in timed:
        values = [(k, value) for (name, labels), value in scrape.items() if (k := key(name, dict(labels))) is not None]
        mapper.add(device, round(ts * 1000), values, ts)
        samples += [sample for _scrape, sample in mapper.take(ts) if sample is not None]
    return samples


def on_the_wire(sample: Sample) -> Sample:
    """The sample as fleet mode sends it through Kafka and the bot reads it back."""
    return parse(encode(sample.device, sample.ts, sample.metrics, sample.filesystems, readings=sample.readings,
                        notes=sample.notes, unreadable=sample.unreadable))


# ------------------------------------------------------------------------------------------------- readings


def test_a_server_reads_as_the_agent_reads_it_each_object_named_as_the_agent_names_it() -> None:
    # Its disks' SMART from smartctl_exporter, a target of its own scraped between node_exporter's two scrapes.
    first, second = scrapes((T0, server()), (T0 + 5, disks()), (T0 + 15, server(
        oom_kill=5.0, restarts=3.0, errs=10.0 + 300.0, packets=1e6 + 3000.0, major_faults=1e4 + 150.0,
        io_weighted=2e5 + 30.0, corrected=4.0, uncorrected=1.0, stalled_memory=1.0 + 1.5, stalled_io=30.0 + 3.0,
        carrier=5.0, failed=("postgresql.service",))))

    readings = second.readings
    assert readings is not None
    assert readings["md_active"] == {"md0": 1.0} and readings["md_failed"] == {"md0": 1.0}
    assert readings["md_required"] == {"md0": 2.0}
    assert "md_failed" not in (second.notes or {})  # node_exporter does not say which member failed
    assert readings["unit_failed"] == {"postgresql.service": 1.0}
    assert readings["unit_restarts"] == {"nginx.service": 1.0}  # only the services that restarted
    assert readings["oom_kills"] == {"": 2.0}
    assert readings["clock_synced"] == {"": 0.0} and readings["clock_offset_s"] == {"": -0.25}
    assert readings["clock_maxerror_s"] == {"": 16.0}
    assert readings["fd_percent"] == {"": 95.0} and readings["conntrack_percent"] == {"": 25.0}
    assert readings["pids_percent"] == {"": 0.02}  # threads of pid_max: every thread holds a process id
    # eth0: 600 of 6,000 packets (3,000 in, 3,000 out) had errors; loopback is not an interface that fails.
    assert readings["net_errors_percent"] == {"eth0": 10.0, "eth1": 0.0, "docker0": 0.0}
    assert readings["net_drops_percent"] == {"eth0": 0.0, "eth1": 0.0, "docker0": 0.0}
    assert readings["link_changes"] == {"eth1": 3.0}  # only the interfaces whose link changed
    assert readings["bond_slaves"] == {"bond0": 2.0} and readings["bond_active"] == {"bond0": 1.0}
    assert readings["reboot_required"] == {"": 1.0} and readings["textfile_error"] == {"": 0.0}
    assert readings["major_faults_per_s"] == {"": 10.0}
    assert readings["disk_io_queue"] == {"sda": 2.0, "nvme0n1": 0.0, "sdb": 0.0}
    assert readings["ecc_correctable"] == {"mc0": 4.0} and readings["ecc_uncorrectable"] == {"mc0": 1.0}
    # node_exporter 1.5 reads an alarm as milli-degrees: 1 comes as 0.001.
    assert readings["temp_alarm"] == {"platform_coretemp_0/temp1": 1.0, "platform_coretemp_0/temp2": 0.0}
    assert readings["readonly"] == {"/": 0.0, "/boot/efi": 0.0, "/data": 0.0}
    assert readings["inodes_percent"] == {"/": pytest.approx(100 / 6), "/boot/efi": pytest.approx(100 / 6),
                                          "/data": pytest.approx(100 / 6)}
    assert readings["inodes_used"] == {"/": 1e6, "/boot/efi": 1e6, "/data": 1e6}
    # Every reading: SMART's from smartctl_exporter's scrape, which joins the machine's next sample.
    assert set(readings) == set(READINGS)
    assert readings["smart_health"] == {"sda": 1.0, "nvme0n1": 1.0}
    # The pressures are metrics the model reads: 1.5 s of 15 stalled is 10 %.
    assert second.metrics["psi_memory_full_percent"] == 10.0 and second.metrics["psi_io_full_percent"] == 20.0
    # The counts and rates need the scrape before; the gauges are there from the first.
    assert first.readings is not None and "oom_kills" not in first.readings and "md_failed" in first.readings
    assert "unit_restarts" not in first.readings and "net_errors_percent" not in first.readings
    assert "psi_memory_full_percent" not in first.metrics
    assert "smart_health" not in first.readings


# -------------------------------------------------------------------------------------------------------- SMART


def disks(*answers: tuple[str, dict]) -> Scrape:
    """smartctl_exporter's scrape of disks (by default an ATA disk, sda, and an NVMe one) that smartctl answers so."""
    scrape: Scrape = {}
    for name, doc in answers or (("sda", ATA_DISK), ("nvme0n1", NVME_DISK)):
        scrape.update(smartctl_exporter(doc, name))
    return scrape


def as_the_agent_reads(*answers: tuple[str, dict]) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """The SMART readings of these disks as the agent sends them (agent/smart.py, on the same smartctl answers), and
    smart_health's notes."""
    readings: dict[str, dict[str, float]] = {}
    notes: dict[str, str] = {}
    for name, doc in answers:
        values = judge(Disk(name, (f"/dev/{name}",), None), doc, doc["smartctl"]["exit_status"]).values
        assert values is not None
        for reading, value in values.items():
            if isinstance(value, tuple):
                value, notes[name] = value
            readings.setdefault(reading, {})[name] = value
    return readings, notes


def smart_of(sample: Sample) -> dict[str, dict[str, float]]:
    return {name: objects for name, objects in (sample.readings or {}).items() if name.startswith(("smart_", "nvme_"))}


def test_smartctl_exporters_series_read_as_the_agent_reads_the_same_disks() -> None:
    """The same smartctl answers, read by the agent and by smartctl_exporter: the same readings of the same disks,
    the same model and serial, NVMe's health log for the NVMe disk alone (the exporter writes 0 for the others)."""
    answers = (("sda", ATA_DISK), ("nvme0n1", NVME_DISK), ("sdb", failing(ATA_DISK) | {"serial_number": "Z1F0FAIL"}))
    [_node, sample] = scrapes((T0, machine(units=0, filler=0)), (T0 + 5, disks(*answers)),
                              (T0 + 15, machine(units=0, filler=0)))

    readings, notes = as_the_agent_reads(*answers)
    assert smart_of(sample) == readings
    assert readings["smart_health"] == {"sda": 1.0, "nvme0n1": 1.0, "sdb": 0.0}
    # 8 of "8 (0 1)", the hours of "25056h+13m+45.120s", the temperature now (32 °C), the raw value listed "1 1 1".
    assert readings["smart_5_raw"]["sda"] == 8 and readings["smart_9_raw"]["sda"] == 25056
    assert readings["smart_194_raw"]["sda"] == 32 and readings["smart_188_raw"]["sda"] == 4295032833
    assert set(readings["nvme_media_errors"]) == {"nvme0n1"}
    assert (sample.notes or {})["smart_health"] == notes == {
        "sda": "ST3000DM001-1CH166|Z1F0ABCD", "nvme0n1": "Samsung SSD 970 EVO Plus 1TB|S4EWNX0R123456",
        "sdb": "ST3000DM001-1CH166|Z1F0FAIL"}
    assert sample.unreadable is None and sample.metrics["mem_percent"] == 50.0  # node_exporter's sample
    assert on_the_wire(sample) == sample


def test_a_verdict_smartctl_never_gave_is_not_a_failed_disk_and_an_old_exporters_dev_path_is_the_disk() -> None:
    """smartctl_exporter before 0.9 wrote 0 for a disk without a verdict (a virtual disk) and named disks /dev/sda: the
    disk without one is not read as failing (smartctl's exit status would say DISK FAILING) but said unreadable."""
    old = {(name, tuple((k, "/dev/" + v if k == "device" else v) for k, v in labels)): value
           for (name, labels), value in smartctl_exporter(ATA_DISK, "sda").items()}
    virtual = smartctl_exporter({**ATA_DISK, "smartctl": {"exit_status": 4}, "model_name": "QEMU HARDDISK",
                                 "ata_smart_attributes": {}}, "sdb")
    virtual["smartctl_device_smart_status", (("device", "sdb"),)] = 0.0
    [sample] = scrapes((T0, {**old, **virtual}))  # a machine of smartctl_exporter alone: a sample of its own

    assert smart_of(sample)["smart_health"] == {"sda": 1.0}
    assert sample.unreadable == {"smart sdb": "no SMART verdict in smartctl_exporter's series (smartctl exit status 4)"}
    assert sample.metrics == {} and on_the_wire(sample) == sample


def test_smartmons_textfile_series_read_as_the_agent_reads_the_same_disk_and_one_asleep_is_unreadable() -> None:
    """smartmon.sh, in node_exporter's own scrape: the same disk, model and serial as the agent reads them, but for
    the raw values smartctl only lists, of which the script keeps the first number (1 of "1 1 1")."""
    scrape = machine(units=0, filler=0)
    scrape.update(smartmon(ATA_DISK, "/dev/sda"))
    scrape.update(smartmon(failing(NVME_DISK), "/dev/nvme0n1", "nvme"))
    scrape.update(smartmon(None, "/dev/sdb", active=False))
    [sample] = scrapes((T0, scrape))

    readings, notes = as_the_agent_reads(("sda", ATA_DISK))
    readings["smart_188_raw"]["sda"] = 1.0
    readings["smart_health"]["nvme0n1"] = 0.0  # smartmon.sh reads no NVMe health log
    assert smart_of(sample) == readings
    # smartmon.sh reads the model of ATA disks alone ("Device Model:"): the NVMe disk is known by its serial alone.
    assert (sample.notes or {})["smart_health"] == {**notes, "nvme0n1": "|S4EWNX0R123456"}
    assert sample.unreadable == {
        "smart sdb": "asleep (standby): its SMART is read once it is awake, so as not to spin it up"}
    assert on_the_wire(sample) == sample


def test_smartmon_py_names_its_attributes_in_a_label_and_a_disk_behind_a_raid_controller_by_its_port() -> None:
    of = (("device", "/dev/bus/0"), ("disk", "megaraid,1"))
    scrape = {("smartmon_device_info", (*of, ("device_model", "ST3000DM001-1CH166"), ("serial_number", "Z1F0RAID"))):
              1.0, ("smartmon_device_smart_healthy", of): 1.0,
              ("smartmon_attr_raw_value", (*of, ("name", "current_pending_sector"))): 24.0,
              ("smartmon_attr_raw_value", (*of, ("name", "seek_error_rate"))): 9.0,
              ("smartmon_attr_value", (*of, ("name", "current_pending_sector"))): 100.0}
    [sample] = scrapes((T0, scrape))

    assert smart_of(sample) == {"smart_health": {"bus/0 megaraid,1": 1.0}, "smart_197_raw": {"bus/0 megaraid,1": 24.0}}
    assert sample.notes == {"smart_health": {"bus/0 megaraid,1": "ST3000DM001-1CH166|Z1F0RAID"}}


def test_a_smartctl_exporter_scrape_is_whole_at_its_own_size_and_the_machines_scrape_at_its_own() -> None:
    """Two targets of one machine, scraped at their own times: smartctl_exporter's few series make a whole scrape
    of their own, at once, and node_exporter's still wait for all of theirs."""
    mapper = NodeExporter(grace_s=10.0)
    node, smart = machine(units=0, filler=0), disks()

    def add(ts: float, scrape: Scrape, now: float) -> None:
        mapper.add("srv1", round(ts * 1000), [(k, v) for (name, labels), v in scrape.items()
                                              if (k := key(name, dict(labels))) is not None], now)

    add(T0, node, T0)
    assert len(mapper.take(T0)) == 1
    add(T0 + 5, smart, T0 + 5)
    assert [sample for _scrape, sample in mapper.take(T0 + 5)] == [None], "whole at once: it joins the next sample"
    half = dict(list(node.items())[:len(node) // 2])
    add(T0 + 15, half, T0 + 15)
    assert mapper.take(T0 + 15) == [], "half of node_exporter's scrape waits for the rest"
    add(T0 + 15, node, T0 + 16)
    [(_scrape, sample)] = mapper.take(T0 + 16)
    assert sample is not None and smart_of(sample)["smart_health"] == {"sda": 1.0, "nvme0n1": 1.0}


def test_behind_a_load_balancer_a_smartctl_exporter_scrape_is_whole_at_its_own_size_whatever_others_stored() -> None:
    """Other receivers say how big the device's last stored scrape was: node_exporter's. smartctl_exporter's own
    scrape does not wait for that many series, and is not told to them as the size of a whole one."""
    mapper = NodeExporter(grace_s=10.0)
    node, smart = machine(units=0, filler=0), disks()
    ts_ms = round((T0 + 5) * 1000)
    mapper.add("srv1", ts_ms, [(k, v) for (name, labels), v in smart.items()
                               if (k := key(name, dict(labels))) is not None], T0 + 5)

    settled = mapper.settle("srv1", ts_ms, T0 + 5, expected=len(node))

    assert (settled.verdict, settled.series) == (Verdict.READY, 0)


def test_a_collector_that_is_off_gives_no_reading_and_one_that_found_nothing_an_empty_one() -> None:
    plain = machine(units=0)  # node_exporter's defaults on a VM: no md array, systemd off, no bond, no EDAC
    [sample] = scrapes((T0, plain))
    assert sample.readings is not None
    for absent in ("md_active", "md_failed", "unit_failed", "unit_restarts", "bond_active", "ecc_correctable",
                   "reboot_required", "pids_percent"):
        assert absent not in sample.readings, absent

    # systemd's collector on, no unit failed: every unit has its `failed` series at 0, and none is failed.
    [healthy] = scrapes((T0, machine(units=5)))
    assert healthy.readings is not None and healthy.readings["unit_failed"] == {}


def test_counts_since_the_previous_scrape_and_a_counter_that_went_down_gives_none() -> None:
    samples = scrapes((T0, server(oom_kill=3.0)), (T0 + 15, server(oom_kill=7.0)),
                      (T0 + 30, server(oom_kill=1.0, restarts=0.0, corrected=0.0)),  # rebooted meanwhile
                      (T0 + 45, server(oom_kill=1.0, restarts=0.0, uncorrected=2.0)))

    kills = [sample.readings.get("oom_kills") for sample in samples if sample.readings is not None]
    assert kills == [None, {"": 4.0}, None, {"": 0.0}]
    assert samples[2].readings is not None and "unit_restarts" not in samples[2].readings
    assert samples[3].readings is not None and samples[3].readings["unit_restarts"] == {}
    assert samples[3].readings["ecc_uncorrectable"] == {"mc0": 2.0} and samples[3].readings["ecc_correctable"] == {}


def test_errors_without_a_packet_through_are_all_of_them() -> None:
    _first, second = scrapes((T0, server(errs=0.0, drops=0.0)), (T0 + 15, server(errs=4.0, drops=6.0)))

    assert second.readings is not None
    assert second.readings["net_errors_percent"]["eth0"] == 100.0
    assert second.readings["net_drops_percent"] == {"eth0": 100.0, "eth1": 100.0, "docker0": 100.0}


def test_cpu_time_stolen_and_spent_waiting_for_io_are_shares_of_all_cpu_time() -> None:
    def cpu(idle: float, steal: float, iowait: float) -> Scrape:
        scrape = machine(cpus=2, units=0, filler=0)
        for c in ("0", "1"):
            for mode, spent in (("idle", idle), ("steal", steal), ("iowait", iowait)):
                scrape["node_cpu_seconds_total", (("cpu", c), ("mode", mode))] = spent
        return scrape

    _first, second = scrapes((T0, cpu(1000.0, 10.0, 20.0)), (T0 + 10, cpu(1006.0, 13.0, 21.0)))

    # Each CPU spent 4 of its 10 s stolen or waiting for I/O, and 6 s idle.
    assert second.metrics["cpu_steal_percent"] == 30.0 and second.metrics["cpu_iowait_percent"] == 10.0
    assert second.metrics["cpu_percent"] == 40.0


def test_a_read_only_filesystem_is_reported_and_still_left_out_of_the_disk_percentages() -> None:
    filesystems = {"/": ("ext4", 100e9, 60e9, 0), "/srv/archive": ("ext4", 100e9, 1e9, 1),
                   "/run": ("tmpfs", 3e9, 3e9, 0), "/var/lib/docker/overlay2/x": ("xfs", 1e9, 0.0, 0)}
    [sample] = scrapes((T0, machine(filesystems=filesystems, units=0)))

    assert sample.readings is not None and sample.readings["readonly"] == {"/": 0.0, "/srv/archive": 1.0}
    assert sample.filesystems == {"/": 40.0}


def test_a_filesystem_without_an_inode_table_is_left_out_of_the_inodes() -> None:
    scrape = machine(filesystems={"/": ("btrfs", 100e9, 60e9, 0), "/boot": ("ext4", 1e9, 5e8, 0)}, units=0)
    for (name, labels) in list(scrape):
        if name in ("node_filesystem_files", "node_filesystem_files_free") and ("mountpoint", "/") in labels:
            scrape[name, labels] = 0.0
    [sample] = scrapes((T0, scrape))

    assert sample.readings is not None and list(sample.readings["inodes_percent"]) == ["/boot"]


def test_a_reading_of_very_many_objects_keeps_the_worst() -> None:
    scrape = machine(units=0, filler=0)
    for i in range(100):
        scrape["node_systemd_unit_state", (("name", f"job{i:03d}.service"), ("state", "failed"))] = 1.0
        scrape["node_hwmon_temp_crit_alarm_celsius", (("chip", "acpi"), ("sensor", f"temp{i}"))] = float(i == 77)
    [sample] = scrapes((T0, scrape))

    assert sample.readings is not None and len(sample.readings["unit_failed"]) == MAX_READING_OBJECTS
    assert len(sample.readings["temp_alarm"]) == MAX_READING_OBJECTS
    assert sample.readings["temp_alarm"]["acpi/temp77"] == 1.0  # the alarm is kept, not a sensor at 0
    assert on_the_wire(sample).readings == sample.readings


# --------------------------------------------------------------------------------------------- the hot path


def read_unread(scrape: Scrape) -> list[tuple[str, ...]]:
    """The series of a scrape the receiver looks at, as (name, label values): the others it drops unread."""
    return [tuple(label.value for label in s.labels if label.name not in ("instance", "job"))
            for s in write_request({"srv1:9100": [(T0, scrape)]}).timeseries if MAYBE_READ.match(s.SerializeToString())]


def test_of_the_units_only_those_failed_and_the_count_of_failed_ones_are_read() -> None:
    """A machine has a few hundred units, each in five states: those of a healthy unit are dropped unread."""
    scrape: Scrape = {("node_systemd_unit_state", (("name", unit), ("state", state), ("type", "simple"))):
                      float(state == ("failed" if unit == "cron.service" else "active"))
                      for unit in ("cron.service", "nginx.service") for state in UNIT_STATES}
    scrape.update({("node_systemd_units", (("state", state),)): float(state in ("active", "failed"))
                   for state in UNIT_STATES})
    scrape["node_systemd_units", (("state", "failed"),)] = 0.0  # the count is read even when it is 0

    assert read_unread(scrape) == [("node_systemd_unit_state", "cron.service", "failed", "simple"),
                                   ("node_systemd_units", "failed")]


def test_of_smartctl_exporters_attributes_only_the_raw_values_and_of_its_temperatures_the_current_are_read() -> None:
    """Each attribute comes as four series (value, worst, thresh, raw) and the disk's temperatures as several: those
    not read are dropped unread, their names compared in place."""
    looked = read_unread(disks(("sda", ATA_DISK)))
    looked_at = {names[0] if names[0] != "smartctl_device_attribute" else f"attribute {names[3]} {names[5]}"
                 for names in looked}

    assert {name for name in looked_at if name.startswith("attribute")} == {
        f"attribute {ident} raw" for ident in (1, 5, 9, 187, 188, 194, 197, 198)}
    assert "smartctl_device_capacity_bytes" not in looked_at
    temperatures = [names for names in looked if names[0] == "smartctl_device_temperature"]
    assert temperatures == [("smartctl_device_temperature", "sda", "current")]


def test_a_write_of_a_server_stores_its_readings_through_the_receiver(tmp_path: Path) -> None:
    database: pw.Database = db.open_database(f"sqlite:///{tmp_path}/rigwatch.sqlite3")
    try:
        receiver = Receiver(lambda samples, rejects: db.store_batch(samples, [None] * len(samples), None, rejects))
        receiver.process(body(write_request({"srv1:9100": [(T0, server())]})))
        receiver.process(body(write_request({"srv1:9100": [(T0 + 15, server(oom_kill=4.0,
                                                                            failed=("nginx.service",)))]})))
        stored = db.latest_sample("srv1")
        first = json.loads(db.Metric.get(db.Metric.device == "srv1", db.Metric.ts == T0).readings)["readings"]
    finally:
        database.close()

    assert first["unit_failed"] == {}  # systemd's units were read, and none had failed
    assert stored is not None and stored.readings is not None
    assert stored.readings["oom_kills"] == {"": 1.0} and stored.readings["unit_failed"] == {"nginx.service": 1.0}
    assert stored.readings["md_failed"] == {"md0": 1.0}


# ------------------------------------------------------------------------------------------------- the wire

values = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, 1.0, 0.001, -1.0, 1e300]))
names = st.one_of(st.sampled_from(["md0", "eth0", "nginx.service", "0"]), st.text(max_size=300))


series = st.dictionaries(st.sampled_from(sorted({**server(), **disks(), **smartmon(ATA_DISK, "/dev/sdc")})), values,
                         max_size=60)


@settings(max_examples=200, deadline=None)
@given(first=series, second=series, objects=st.lists(names, max_size=5))
def test_every_sample_is_a_valid_wire_message_whatever_the_series_say(
        first: dict, second: dict, objects: list[str]) -> None:
    later = dict(second)
    for i, name in enumerate(objects):  # objects of strange names, too long or with control characters
        later["node_systemd_unit_state", (("name", name), ("state", "failed"))] = 1.0
        later["node_network_receive_errs_total", (("device", name or f"x{i}"),)] = 1.0
        later["node_hwmon_temp_crit_alarm_celsius", (("chip", name), ("sensor", "temp1"))] = 1.0
    for sample in scrapes((T0, first), (T0 + 15, later)):
        back = on_the_wire(sample)
        assert back.readings == sample.readings and back.metrics == sample.metrics
