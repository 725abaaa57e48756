"""The disks' SMART, as the agent reads it with smartctl --json.

Most tests give a made-up machine (tests/fakes/machine.py) the disks of the test in its /sys/block, and a smartctl
of the test first on PATH that answers with smartctl's own JSON (tests/fakes/smartctl.py); a real Collector reads
them, and every sample goes through agent.wire as the bot receives it. The last ones run the real smartctl of this
machine, whose disks are virtual and have no SMART.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from agent import smart
from agent.collect import Collector
from agent.config import parse_config
from agent.wire import Sample, encode, parse
from tests.fakes.machine import MachineTree
from tests.fakes.smartctl import ATA_DISK, NVME_DISK, FakeSmartctl, failing, scan, unreadable

ROOT = Path(__file__).resolve().parent.parent
SMART_READINGS = ("smart_health", "smart_5_raw", "smart_187_raw", "smart_188_raw", "smart_197_raw", "smart_198_raw",
                  "smart_9_raw", "smart_194_raw", "nvme_media_errors", "nvme_critical_warning", "nvme_available_spare",
                  "nvme_spare_threshold", "nvme_percentage_used")


@pytest.fixture(autouse=True)
def psutil_reads_the_real_proc_afterwards() -> Iterator[None]:
    yield
    psutil.PROCFS_PATH = "/proc"


@pytest.fixture
def machine(tmp_path: Path) -> MachineTree:
    tree = MachineTree(tmp_path / "machine")
    (tree.sysfs / "block" / "sda").rename(tree.sysfs / "block" / "unused")  # each test says which disks it has
    return tree


@pytest.fixture
def smartctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSmartctl:
    fake = FakeSmartctl(tmp_path / "smartctl")
    monkeypatch.setenv("PATH", f"{fake.folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return fake


def disks(machine: MachineTree, *names: str) -> None:
    """The machine's whole disks, as the kernel lists them in /sys/block."""
    for name in names:
        machine.write(f"sys/block/{name}/size", "1000000\n")


def read(collector: Collector) -> Sample:
    """One sample as the bot receives it."""
    return parse(encode("pc1", time.time(), *collector.read()))


def smart_of(sample: Sample) -> dict[str, dict[str, float]]:
    return {name: objects for name, objects in (sample.readings or {}).items() if name in SMART_READINGS}


def unreadable_smart(sample: Sample) -> dict[str, str]:
    return {source: why for source, why in (sample.unreadable or {}).items() if source.startswith("smart")}


# --- what a disk reads ----------------------------------------------------------------------------------------------

def test_an_ata_and_an_nvme_disk_read_their_verdict_model_serial_and_only_the_values_each_has(
    machine: MachineTree, smartctl: FakeSmartctl
) -> None:
    disks(machine, "sda", "nvme0n1")
    smartctl.scan(scan(("/dev/sda", "sat", "ATA"), ("/dev/nvme0", "nvme", "NVMe")))
    smartctl.answer("sat sda", ATA_DISK)
    smartctl.answer("nvme0n1", NVME_DISK)

    sample = read(Collector(processes=False, roots=machine.roots))

    assert smart_of(sample) == {
        "smart_health": {"sda": 1, "nvme0n1": 1},
        # What smartctl shows as the count: 8 of "8 (0 1)", the hours of "25056h+13m+45.120s"; the temperature,
        # not the raw value that packs the lowest and highest with it; the raw value where smartctl only lists it.
        "smart_5_raw": {"sda": 8}, "smart_9_raw": {"sda": 25056}, "smart_194_raw": {"sda": 32},
        "smart_187_raw": {"sda": 0}, "smart_188_raw": {"sda": 4295032833}, "smart_197_raw": {"sda": 16},
        "smart_198_raw": {"sda": 16},
        "nvme_media_errors": {"nvme0n1": 2}, "nvme_critical_warning": {"nvme0n1": 0},
        "nvme_available_spare": {"nvme0n1": 100}, "nvme_spare_threshold": {"nvme0n1": 10},
        "nvme_percentage_used": {"nvme0n1": 3},
    }
    assert (sample.notes or {})["smart_health"] == {"sda": "ST3000DM001-1CH166|Z1F0ABCD",
                                                    "nvme0n1": "Samsung SSD 970 EVO Plus 1TB|S4EWNX0R123456"}
    assert unreadable_smart(sample) == {}
    # The scan's type is used for its disk; the NVMe controller it lists is the namespace's, not a disk of its own.
    assert smartctl.asked("/dev/sda") == ["--json --info --health --attributes --nocheck=standby --device sat /dev/sda"]
    assert smartctl.asked("/dev/nvme0") == []


def test_a_disk_that_fails_its_self_assessment_reads_smart_health_0_with_its_values(
    machine: MachineTree, smartctl: FakeSmartctl
) -> None:
    disks(machine, "sda", "nvme0n1")
    smartctl.answer("sda", failing(ATA_DISK))
    critical = failing(NVME_DISK)
    critical["nvme_smart_health_information_log"].update(critical_warning=1, available_spare=5)
    smartctl.answer("nvme0n1", critical)

    sample = read(Collector(processes=False, roots=machine.roots))

    assert smart_of(sample)["smart_health"] == {"sda": 0, "nvme0n1": 0}
    assert smart_of(sample)["smart_197_raw"] == {"sda": 16}
    assert smart_of(sample)["nvme_critical_warning"] == {"nvme0n1": 1}
    assert smart_of(sample)["nvme_available_spare"] == {"nvme0n1": 5}
    assert (sample.notes or {})["smart_health"]["sda"] == "ST3000DM001-1CH166|Z1F0ABCD"


def test_a_disk_behind_a_raid_controller_is_read_as_the_scan_names_it(
    machine: MachineTree, smartctl: FakeSmartctl
) -> None:
    smartctl.scan(scan(("/dev/bus/0", "megaraid,0", "SCSI"), ("/dev/bus/0", "megaraid,1", "SCSI")))
    smartctl.answer("megaraid,0 bus/0", ATA_DISK)
    smartctl.answer("megaraid,1 bus/0", failing(ATA_DISK))

    sample = read(Collector(processes=False, roots=machine.roots))

    assert smart_of(sample)["smart_health"] == {"bus/0 megaraid,0": 1, "bus/0 megaraid,1": 0}
    assert smartctl.asked("/dev/bus/0")[0].endswith("--device megaraid,0 /dev/bus/0")


def test_a_disk_behind_a_raid_controller_the_agent_may_not_ask_says_why_in_smartctls_words(
    machine: MachineTree, smartctl: FakeSmartctl
) -> None:
    smartctl.scan(scan(("/dev/bus/0", "megaraid,0", "SCSI")))
    smartctl.answer("megaraid,0 bus/0", unreadable(2, "Smartctl open device: /dev/bus/0 [megaraid_disk_00] failed: "
                                                      "cannot open /dev/megaraid_sas_ioctl_node or /dev/megadev0"))

    sample = read(Collector(processes=False, roots=machine.roots))

    assert unreadable_smart(sample) == {"smart bus/0 megaraid,0": "smartctl could not open it: cannot open "
                                                                  "/dev/megaraid_sas_ioctl_node or /dev/megadev0"}
    assert "smart_health" not in smart_of(sample)


# --- what cannot be read is said, never sent as healthy ------------------------------------------------------------

QEMU_ATA = {**ATA_DISK, "model_name": "QEMU HARDDISK", "serial_number": "QM00001"}  # QEMU's IDE disk makes up SMART


@pytest.mark.parametrize(("disk", "answer", "said"), [
    ("sdb", unreadable(2, "Smartctl open device: /dev/sdb failed: Permission denied"),
     "permission denied opening /dev/sdb: SMART needs root, or the group disk and CAP_SYS_RAWIO"),
    ("sdb", {**unreadable(2, "Read Device Identity failed: Operation not permitted"), "model_name": "ST4000DM004"},
     "permission denied: SMART needs root or CAP_SYS_RAWIO"),
    ("nvme1n1", unreadable(2, "Smartctl open device: /dev/nvme1n1 failed: Permission denied"),
     "permission denied opening /dev/nvme1n1: SMART needs root, or the group disk and CAP_SYS_ADMIN"),
    ("nvme1n1", unreadable(2, "Read NVMe SMART/Health Information failed: Permission denied"),
     "permission denied: NVMe's health log needs root or CAP_SYS_ADMIN"),
    ("sdb", QEMU_ATA, "no SMART: a virtual disk (QEMU HARDDISK)"),
    ("sdc", unreadable(1, "/dev/sdc: Unknown USB bridge [0x152d:0x0578 (0x100)]"),
     "no SMART: a USB bridge that hides SMART [0x152d:0x0578 (0x100)]"),
    ("sdb", {**unreadable(4), "model_name": "Generic Flash Disk", "smart_support": {"available": False}},
     "no SMART: the disk does not support it (Generic Flash Disk)"),
    ("sdb", {**unreadable(0), "model_name": "ST4000DM004", "smart_support": {"available": True, "enabled": False}},
     "SMART is off on this disk (smartctl --smart=on /dev/sdb turns it on)"),
    ("vdb", unreadable(1, "/dev/vdb: Unable to detect device type"), "no SMART: a virtual disk (virtio)"),
    ("mmcblk0", unreadable(1, "/dev/mmcblk0: Unable to detect device type"),
     "no SMART: an SD card or eMMC, which have none"),
    ("sdb", unreadable(2, "Smartctl open device: /dev/sdb failed: No such device"),
     "its device file /dev/sdb is missing (a service's PrivateDevices=yes hides disks)"),
    ("sdb", unreadable(2, "Smartctl open device: /dev/sdb [SAT] failed: No such device or address"),
     "its device file /dev/sdb is missing (a service's PrivateDevices=yes hides disks)"),
    ("sdb", {"json_format_version": [1, 0], "smartctl": {"messages": [
        {"string": "Device is in STANDBY mode, exit(2)", "severity": "information"}], "exit_status": 2}},
     "asleep (standby): its SMART is read once it is awake, so as not to spin it up"),
])
def test_a_disk_whose_smart_cannot_be_read_is_said_with_why_and_never_sent_as_healthy(
    machine: MachineTree, smartctl: FakeSmartctl, disk: str, answer: dict, said: str
) -> None:
    disks(machine, "sda", disk)
    smartctl.answer("sda", ATA_DISK)
    smartctl.answer(disk, answer)

    sample = read(Collector(processes=False, roots=machine.roots))

    assert unreadable_smart(sample) == {f"smart {disk}": said}
    assert all(disk not in objects for objects in smart_of(sample).values())
    assert smart_of(sample)["smart_health"] == {"sda": 1}, "the disk that can be read still is"


def test_a_virtual_scsi_disk_is_said_virtual_from_what_the_kernel_says_of_it(
    machine: MachineTree, smartctl: FakeSmartctl
) -> None:
    disks(machine, "sdb")
    machine.write("sys/block/sdb/device/vendor", "Msft    \n")
    machine.write("sys/block/sdb/device/model", "Virtual Disk    \n")
    smartctl.answer("sdb", unreadable(2, "Smartctl open device: /dev/sdb failed: Permission denied"))

    sample = read(Collector(processes=False, roots=machine.roots))

    assert unreadable_smart(sample) == {"smart sdb": "no SMART: a virtual disk (Msft Virtual Disk)"}


def test_each_reason_is_said_once_in_the_log_and_again_after_the_disk_was_read_in_between(
    machine: MachineTree, smartctl: FakeSmartctl, caplog: pytest.LogCaptureFixture
) -> None:
    disks(machine, "sdb")
    denied = unreadable(2, "Read Device Identity failed: Operation not permitted")
    smartctl.answer("sdb", denied)
    collector = Collector(processes=False, roots=machine.roots, smart_every_s=0.05)

    with caplog.at_level(logging.WARNING, logger="agent"):
        for _ in range(3):
            read(collector)
        smartctl.answer("sdb", ATA_DISK)
        wait_for(collector, lambda s: "smart sdb" not in (s.unreadable or {}))
        smartctl.answer("sdb", denied)
        wait_for(collector, lambda s: "smart sdb" in (s.unreadable or {}))
        read(collector)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("smart sdb")]

    assert said == 2 * ["smart sdb unreadable: permission denied: SMART needs root or CAP_SYS_RAWIO; each sample says "
                        "so instead of sending its readings"]


def test_a_disk_asleep_is_not_woken_and_its_last_readings_are_sent_again(
    machine: MachineTree, smartctl: FakeSmartctl
) -> None:
    disks(machine, "sda")
    smartctl.answer("sda", ATA_DISK)
    collector = Collector(processes=False, roots=machine.roots, smart_every_s=0.05)
    awake = read(collector)
    smartctl.answer("sda", {"json_format_version": [1, 0], "smartctl": {"messages": [
        {"string": "Device is in STANDBY mode, exit(2)", "severity": "information"}], "exit_status": 2}})

    asleep = wait_for(collector, lambda s: len(smartctl.asked("/dev/sda")) >= 2)

    assert all("--nocheck=standby" in line for line in smartctl.asked("/dev/sda"))
    assert smart_of(asleep) == smart_of(awake)
    assert unreadable_smart(asleep) == {}


def wait_for(collector: Collector, done: Callable[[Sample], bool], seconds: float = 5.0) -> Sample:
    """Samples until `done(sample)`, then until the SMART read that is running in the background (its thread is
    called "smart") has ended; the sample after it."""
    deadline = time.monotonic() + seconds
    while not done(read(collector)):
        assert time.monotonic() < deadline, f"not done within {seconds} s"
        time.sleep(0.02)
    settled(seconds)
    return read(collector)


def settled(seconds: float = 5.0) -> None:
    """Wait for the SMART reading running in the background (its thread is called "smart") to end."""
    deadline = time.monotonic() + seconds
    while any(thread.name == "smart" for thread in threading.enumerate()):
        assert time.monotonic() < deadline, f"the SMART reading did not end within {seconds} s"
        time.sleep(0.01)


# --- cadence --------------------------------------------------------------------------------------------------------

def test_smart_is_read_at_most_once_per_interval_and_the_last_answer_is_sent_between(
    machine: MachineTree, smartctl: FakeSmartctl
) -> None:
    disks(machine, "sda")
    smartctl.answer("sda", ATA_DISK)
    collector = Collector(processes=False, roots=machine.roots, smart_every_s=0.4)

    started = time.monotonic()
    first = read(collector)
    smartctl.answer("sda", failing(ATA_DISK))  # the disk fails now; the agent learns it at its next read
    between = [read(collector) for _ in range(5)]
    asked_between = len(smartctl.asked("/dev/sda"))
    later = wait_for(collector, lambda s: len(smartctl.asked("/dev/sda")) > 1)
    elapsed = time.monotonic() - started

    assert smart_of(first)["smart_health"] == {"sda": 1}
    assert all(smart_of(sample) == smart_of(first) for sample in between), "the last answer, sent again"
    assert asked_between == 1
    assert smart_of(later)["smart_health"] == {"sda": 0}
    assert 2 <= len(smartctl.asked("/dev/sda")) <= 1 + elapsed / 0.4
    assert len(smartctl.asked("--scan")) == len(smartctl.asked("/dev/sda")), "one scan per read"


def test_a_disk_that_does_not_answer_is_said_so_and_never_holds_a_sample_back(
    machine: MachineTree, smartctl: FakeSmartctl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smart, "TIMEOUT_S", 0.3)
    disks(machine, "sda", "sdb")
    smartctl.answer("sda", ATA_DISK)
    smartctl.answer("sdb", ATA_DISK)
    smartctl.hang("sdb", 3)
    collector = Collector(processes=False, roots=machine.roots, smart_every_s=0.05)

    first = read(collector)  # the first reading is the first sample's: it waits for the disk, 0.3 s at most
    time.sleep(0.05)
    started = time.monotonic()
    during = [read(collector) for _ in range(3)]  # the second reading runs in the background meanwhile
    took = time.monotonic() - started

    assert unreadable_smart(first) == {"smart sdb": "smartctl did not answer within 0.3 s"}
    assert smart_of(first)["smart_health"] == {"sda": 1}
    assert any(thread.name == "smart" for thread in threading.enumerate()), "a reading is running"
    assert took < 0.25 and all(smart_of(sample) == smart_of(first) for sample in during)
    settled()


def test_the_interval_is_five_minutes_unless_set_by_option_or_environment() -> None:
    assert parse_config(["--once"], {}).smart_interval == 300
    assert parse_config(["--once"], {"AGENT_SMART_INTERVAL": "900"}).smart_interval == 900
    assert parse_config(["--once", "--smart-interval", "60"], {"AGENT_SMART_INTERVAL": "900"}).smart_interval == 60


# --- smartctl missing, many disks -----------------------------------------------------------------------------------

def test_without_smartctl_smart_is_said_unreadable_and_read_once_it_is_installed(
    machine: MachineTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    monkeypatch.setenv("PATH", str(nowhere))
    monkeypatch.setattr(smart, "SBIN", str(nowhere))
    disks(machine, "sda")
    collector = Collector(processes=False, roots=machine.roots, smart_every_s=0.05)

    before = read(collector)
    installed = FakeSmartctl(tmp_path / "smartctl")
    installed.answer("sda", ATA_DISK)
    monkeypatch.setenv("PATH", str(installed.folder))
    after = wait_for(collector, lambda s: bool(installed.asked("/dev/sda")))

    assert unreadable_smart(before) == {"smart": "smartctl is not installed (Debian: smartmontools)"}
    assert smart_of(before) == {}
    assert smart_of(after)["smart_health"] == {"sda": 1}
    assert unreadable_smart(after) == {}


def test_a_machine_of_many_disks_sends_what_the_wire_takes_the_failing_disks_first(
    machine: MachineTree, smartctl: FakeSmartctl
) -> None:
    names = [f"sd{a}{b}" for a in "abc" for b in "abcdefghijklmnopqrstuvwxyz"][:66]
    disks(machine, *names, *(f"vd{c}" for c in "abcdefghijklmnopqrstuvwxyz"), *(f"xvd{c}" for c in "abcdefgh"))
    smartctl.answer("default", ATA_DISK)
    smartctl.answer("sdcn", failing(ATA_DISK))  # the last by name

    sample = read(Collector(processes=False, roots=machine.roots))  # parse() takes it: within the wire's bounds

    health = smart_of(sample)["smart_health"]
    assert len(health) == 64 and health["sdcn"] == 0
    assert len(unreadable_smart(sample)) == 33
    assert unreadable_smart(sample)["smart"] == "2 more disks cannot be read (the first 32 are named)"


# --- this machine, for real ----------------------------------------------------------------------------------------

WHOLE_DISK = re.compile(r"sd[a-z]+|hd[a-z]+|nvme\d+n\d+|vd[a-z]+|xvd[a-z]+|mmcblk\d+")


def smartctl_verdict(disk: str) -> dict:
    """What the real smartctl says of a disk of this machine: its verdict, when it gives one."""
    done = subprocess.run(["smartctl", "--json", "--health", f"/dev/{disk}"], capture_output=True, text=True,
                          timeout=30, check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
    return json.loads(done.stdout).get("smart_status", {})


def test_on_this_machine_a_disk_without_smart_is_said_so_and_never_sent_as_healthy() -> None:
    assert smart.find_smartctl(), "smartctl is not installed: apt-get install -y smartmontools (CI does)"
    whole = sorted(name for name in os.listdir("/sys/block") if WHOLE_DISK.fullmatch(name))
    assert whole, "this machine has a disk"

    sample = read(Collector(processes=False))

    health = smart_of(sample).get("smart_health", {})
    said = unreadable_smart(sample)
    for disk in whole:
        assert (disk in health) != (f"smart {disk}" in said), f"{disk} is read or said unreadable"
        if disk.startswith("vd"):  # a virtio disk: smartctl cannot even tell what it is
            assert smartctl_verdict(disk) == {}
            assert said[f"smart {disk}"] == "no SMART: a virtual disk (virtio)"
        elif not smartctl_verdict(disk):
            assert disk not in health and said[f"smart {disk}"]


def test_once_prints_what_smartctl_says_of_this_machines_disks() -> None:
    done = subprocess.run([sys.executable, "-m", "agent", "--once"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    sample = parse(done.stdout.encode())

    assert "smart" not in (sample.unreadable or {}), "smartctl is installed here"
    for disk in (name for name in os.listdir("/sys/block") if name.startswith("vd")):
        assert (sample.unreadable or {})[f"smart {disk}"] == "no SMART: a virtual disk (virtio)"
        assert disk not in (sample.readings or {}).get("smart_health", {})
        assert f"smart {disk} unreadable: no SMART: a virtual disk (virtio)" in done.stderr
