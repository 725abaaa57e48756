"""The agent's readings: everything that can need an intervention besides a resource filling up.

Most tests write a made-up machine's /proc, /sys and / (tests/fakes/machine.py) and let a real Collector read it
through --procfs/--sysfs/--rootfs, changing counters between two samples; node_exporter reads the same tree to
show it is one the kernel could have written. The rest run on this machine, as root: loop-mounted ext4
filesystems made read-only or out of inodes, a real OOM kill in a memory-limited cgroup, the kernel log without
CAP_SYSLOG, systemd installed but not running. Every sample the agent builds passes agent.wire.parse.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from agent import systemd
from agent.collect import Collector
from agent.wire import Sample, encode, parse
from tests.fakes import filesystems
from tests.fakes.machine import Interface, MachineTree
from tests.fakes.services import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def psutil_reads_the_real_proc_afterwards() -> Iterator[None]:
    """A Collector points psutil at its /proc for the whole process; the next test gets the real one back."""
    yield
    psutil.PROCFS_PATH = "/proc"


@pytest.fixture
def machine(tmp_path: Path) -> MachineTree:
    return MachineTree(tmp_path / "machine")


def read(collector: Collector) -> Sample:
    """One sample, as the bot receives it: encoded as the agent sends it and parsed as the bot parses it."""
    return parse(encode("pc1", time.time(), *collector.read()))


def two_samples(machine: MachineTree, change: Callable[[], object] | None = None) -> tuple[Sample, Sample]:
    """A collector's first sample of the machine, and its second after `change` changed the files."""
    collector = Collector(processes=False, roots=machine.roots)
    first = read(collector)
    if change is not None:
        change()
    time.sleep(0.05)
    return first, read(collector)


def readings(sample: Sample) -> dict[str, dict[str, float]]:
    assert sample.readings is not None
    return sample.readings


def notes(sample: Sample) -> dict[str, dict[str, str]]:
    return sample.notes or {}


# --- a made-up machine --------------------------------------------------------------------------------------------

def test_a_degraded_md_array_reads_fewer_disks_active_than_required_and_names_the_failed_one(
    machine: MachineTree
) -> None:
    machine.degraded_md_arrays()

    _, sample = two_samples(machine)

    found = readings(sample)
    assert found["md_active"] == {"md0": 1, "md1": 2, "md127": 0}
    assert found["md_required"] == {"md0": 2, "md1": 2, "md127": 2}
    assert found["md_failed"] == {"md0": 1, "md1": 0, "md127": 0}
    assert notes(sample)["md_failed"] == {"md0": "sdb"}


def test_a_machine_without_md_arrays_reads_none_rather_than_unreadable(machine: MachineTree) -> None:
    _, sample = two_samples(machine)  # the made-up machine has no /proc/mdstat: no md driver, so no array

    assert readings(sample)["md_failed"] == {} and readings(sample)["md_active"] == {}
    assert "raid" not in (sample.unreadable or {})


def test_oom_kills_are_the_kills_since_the_previous_sample_with_whom_the_kernel_killed(machine: MachineTree) -> None:
    machine.vmstat(oom_kill=3, pgmajfault=100)
    machine.log("Out of memory: Killed process 17 (old) total-vm:1kB")  # before the agent started: not news
    collector = Collector(processes=False, roots=machine.roots)

    first = read(collector)
    machine.vmstat(oom_kill=5, pgmajfault=100)
    machine.log("java invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0",
                "Out of memory: Killed process 4121 (java) total-vm:8388608kB, anon-rss:7340032kB, file-rss:0kB",
                "Memory cgroup out of memory: Killed process 77 (python3) total-vm:1kB, anon-rss:1kB")
    second = read(collector)
    third = read(collector)

    assert "oom_kills" not in readings(first), "the first sample has nothing to count from"
    assert readings(second)["oom_kills"] == {"": 2}
    assert notes(second)["oom_kills"] == {"": "java (pid 4121), python3 (pid 77)"}
    assert readings(third)["oom_kills"] == {"": 0} and "oom_kills" not in notes(third)
    assert "kernel log" not in (third.unreadable or {})


def test_without_the_kernel_log_oom_kills_are_still_counted_and_the_kernel_log_is_said_unreadable(
    machine: MachineTree
) -> None:
    machine.vmstat(oom_kill=0)

    _, sample = two_samples(machine, lambda: machine.vmstat(oom_kill=1))

    assert readings(sample)["oom_kills"] == {"": 1}
    assert "oom_kills" not in notes(sample)
    assert sample.unreadable is not None
    assert sample.unreadable["kernel log"] == f"no {machine.rootfs / 'dev' / 'kmsg'}"


def test_kernel_tables_near_their_limits_read_as_percent_used(machine: MachineTree) -> None:
    machine.write("proc/sys/fs/file-nr", "98304\t0\t100000\n")
    machine.write("proc/sys/net/netfilter/nf_conntrack_count", "262000\n")
    machine.write("proc/sys/net/netfilter/nf_conntrack_max", "262144\n")
    machine.write("proc/loadavg", "4.00 3.00 2.00 3/31000 4242\n")
    machine.write("proc/sys/kernel/pid_max", "32768\n")

    _, sample = two_samples(machine)

    found = readings(sample)
    assert found["fd_percent"] == {"": pytest.approx(98.304)}
    assert found["conntrack_percent"] == {"": pytest.approx(99.945, abs=0.001)}
    assert found["pids_percent"] == {"": pytest.approx(100 * 31000 / 32768)}


def test_a_machine_without_conntrack_has_an_empty_conntrack_reading(machine: MachineTree) -> None:
    _, sample = two_samples(machine)

    assert readings(sample)["conntrack_percent"] == {}
    assert "conntrack" not in (sample.unreadable or {})


def test_interface_errors_and_drops_are_shares_of_the_packets_since_the_previous_sample(
    machine: MachineTree
) -> None:
    machine.net_dev({"lo": Interface(10, 5, 5, 10), "eth0": Interface(1000, 0, 0, 500), "eth1": Interface(10)})

    first, second = two_samples(machine, lambda: machine.net_dev({
        "lo": Interface(20, 50, 50, 20),  # loopback is never an interface to repair
        "eth0": Interface(1900, 40, 0, 600, 10, 10),  # 1,000 packets: 50 with errors, 10 dropped
        "eth1": Interface(10),
    }))

    assert "net_errors_percent" not in readings(first), "a share since the previous sample needs one"
    assert readings(second)["net_errors_percent"] == {"eth0": pytest.approx(5.0), "eth1": 0}
    assert readings(second)["net_drops_percent"] == {"eth0": pytest.approx(1.0), "eth1": 0}


def test_link_changes_count_the_carrier_changes_since_the_previous_sample(machine: MachineTree) -> None:
    machine.write("sys/class/net/eth1/carrier_changes", "7\n")

    first, second = two_samples(machine, lambda: machine.write("sys/class/net/eth0/carrier_changes", "5\n"))

    assert "link_changes" not in readings(first)
    assert readings(second)["link_changes"] == {"eth0": 3}, "eth1's link did not change: it is not listed"


def test_a_bond_with_a_link_down_reads_fewer_links_up_and_names_the_down_one(machine: MachineTree) -> None:
    machine.write("sys/class/net/bonding_masters", "bond0\n")
    machine.write("sys/class/net/bond0/bonding/slaves", "eth0 eth1\n")
    machine.write("sys/class/net/bond0/lower_eth0/bonding_slave/mii_status", "up\n")
    machine.write("sys/class/net/bond0/lower_eth1/bonding_slave/mii_status", "down\n")

    _, sample = two_samples(machine)

    assert readings(sample)["bond_slaves"] == {"bond0": 2}
    assert readings(sample)["bond_active"] == {"bond0": 1}
    assert notes(sample)["bond_active"] == {"bond0": "eth1 down"}


def test_memory_errors_are_counted_per_controller_since_the_previous_sample(machine: MachineTree) -> None:
    for controller in ("mc0", "mc1"):
        machine.write(f"sys/devices/system/edac/mc/{controller}/ce_count", "3\n")
        machine.write(f"sys/devices/system/edac/mc/{controller}/ue_count", "0\n")

    def errors() -> None:
        machine.write("sys/devices/system/edac/mc/mc0/ce_count", "10\n")
        machine.write("sys/devices/system/edac/mc/mc1/ue_count", "1\n")

    first, second = two_samples(machine, errors)

    assert "ecc_correctable" not in readings(first)
    assert readings(second)["ecc_correctable"] == {"mc0": 7}
    assert readings(second)["ecc_uncorrectable"] == {"mc1": 1}


def test_a_machine_without_edac_reads_no_memory_errors_rather_than_unreadable(machine: MachineTree) -> None:
    _, sample = two_samples(machine)

    assert readings(sample)["ecc_correctable"] == {} and readings(sample)["ecc_uncorrectable"] == {}
    assert "ecc" not in (sample.unreadable or {})


def test_a_critical_temperature_alarm_names_its_chip_and_sensor(machine: MachineTree) -> None:
    machine.write("sys/class/hwmon/hwmon0/name", "coretemp\n")
    for sensor, label, alarm in (("temp2", "Core 0", "1"), ("temp3", "Core 1", "0")):
        machine.write(f"sys/class/hwmon/hwmon0/{sensor}_label", f"{label}\n")
        machine.write(f"sys/class/hwmon/hwmon0/{sensor}_input", "95000\n")
        machine.write(f"sys/class/hwmon/hwmon0/{sensor}_crit_alarm", f"{alarm}\n")
    machine.write("sys/class/hwmon/hwmon1/name", "nvme\n")
    machine.write("sys/class/hwmon/hwmon1/temp1_crit_alarm", "0\n")

    _, sample = two_samples(machine)

    assert readings(sample)["temp_alarm"] == {"coretemp/Core 0": 1, "coretemp/Core 1": 0, "nvme/temp1": 0}


def test_pressure_and_cpu_time_are_shares_of_the_interval_between_samples(machine: MachineTree) -> None:
    machine.pressure("memory", 1_000_000)
    machine.pressure("io", 1_000_000)
    machine.cpu("1000 0 500 10000 100 0 0 50 0 0")
    collector = Collector(processes=False, roots=machine.roots)
    before = time.monotonic()
    read(collector)
    after_first = time.monotonic()
    time.sleep(0.2)
    machine.pressure("memory", 1_100_000)  # all tasks stalled 0.1 s on memory
    machine.pressure("io", 1_000_000)
    machine.cpu("1040 0 520 10025 110 0 0 55 0 0")  # 100 ticks more: 5 stolen, 10 waiting for I/O
    second_starts = time.monotonic()
    metrics = read(collector).metrics
    after = time.monotonic()

    # The agent's interval is somewhere between these two; 0.1 s of stall is that share of it.
    assert 100 * 0.1 / (after - before) <= metrics["psi_memory_full_percent"] <= 100 * 0.1 / (
        second_starts - after_first)
    assert metrics["psi_io_full_percent"] == 0
    assert metrics["cpu_steal_percent"] == pytest.approx(5.0)
    assert metrics["cpu_iowait_percent"] == pytest.approx(10.0)


def test_without_pressure_stall_information_pressure_is_said_unreadable(machine: MachineTree) -> None:
    shutil.rmtree(machine.procfs / "pressure")

    _, sample = two_samples(machine)

    assert not {"psi_memory_full_percent", "psi_io_full_percent"} & set(sample.metrics)
    assert sample.unreadable is not None and "no /proc/pressure" in sample.unreadable["pressure"]


def test_a_disk_queue_is_the_rate_of_weighted_io_time_of_whole_disks_only(machine: MachineTree) -> None:
    def disks(weighted_ms: int) -> None:
        machine.write("proc/diskstats", "".join((
            machine.diskstats_line("sda", weighted_ms),
            machine.diskstats_line("sda1", weighted_ms, minor=1),  # a partition: its disk's queue already
            machine.diskstats_line("loop0", 10 * weighted_ms, major=7),  # a file, not a disk
        )))

    disks(1000)
    collector = Collector(processes=False, roots=machine.roots)
    read(collector)
    started = time.monotonic()
    time.sleep(0.2)
    disks(1000 + 800)  # 0.8 s of I/O time weighted by the I/Os in flight
    queues = readings(read(collector))["disk_io_queue"]
    elapsed = time.monotonic() - started

    assert set(queues) == {"sda"}
    assert 0.8 / (elapsed + 0.2) <= queues["sda"] <= 0.8 / 0.2


def test_a_reboot_asked_for_by_an_upgrade_names_the_packages_that_asked(machine: MachineTree) -> None:
    machine.write("root/usr/share/update-notifier/notify-reboot-required", "#!/bin/sh\n")
    _, before = two_samples(machine)
    machine.write("root/run/reboot-required", "*** System restart required ***\n")
    machine.write("root/run/reboot-required.pkgs", "linux-image-6.1.0-18-amd64\nlibc6\nlibc6\n" + "x" * 300 + "\n")

    _, after = two_samples(machine)

    assert readings(before)["reboot_required"] == {"": 0}
    assert readings(after)["reboot_required"] == {"": 1}
    note = notes(after)["reboot_required"][""]
    assert note.startswith("linux-image-6.1.0-18-amd64, libc6, xxx") and len(note) == 200


def test_where_nothing_flags_a_needed_reboot_reboot_is_unreadable_not_no(machine: MachineTree) -> None:
    _, sample = two_samples(machine)

    assert "reboot_required" not in readings(sample)
    assert sample.unreadable is not None and "reboot-notifier" in sample.unreadable["reboot"]


def test_a_machine_not_run_by_systemd_says_systemd_is_unreadable_not_that_no_unit_failed(
    machine: MachineTree
) -> None:
    _, sample = two_samples(machine)

    assert "unit_failed" not in readings(sample) and "unit_restarts" not in readings(sample)
    assert sample.unreadable is not None
    assert sample.unreadable["systemd"] == (
        f"systemd is not running this machine (no {machine.rootfs}/run/systemd/system)")


# A systemctl that answers from files the test writes, and counts how often it is asked.
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$@" >> "{folder}/asked"
case "$*" in
  *list-units*) cat "{folder}/failed" ;;
  *show*) cat "{folder}/show" ;;
esac
exit $(cat "{folder}/status")
"""


@pytest.fixture
def systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A systemctl of the test's first on PATH; its answers are the files of the folder it returns."""
    folder = tmp_path / "systemctl"
    folder.mkdir()
    program = folder / "systemctl"
    program.write_text(FAKE_SYSTEMCTL.format(folder=folder))
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    (folder / "asked").write_text("")
    (folder / "status").write_text("0\n")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def services(folder: Path, failed: list[str], restarts: dict[str, int]) -> None:
    """What the fake systemctl says: failed units as `list-units --plain --no-legend` prints them, and each
    service's NRestarts as `show` prints them (service properties first, blocks between blank lines)."""
    (folder / "failed").write_text("".join(f"{unit} loaded failed failed {unit} did not start\n" for unit in failed))
    (folder / "show").write_text("\n".join(f"NRestarts={count}\nId={unit}\n" for unit, count in restarts.items()))


def test_failed_units_and_restarted_services_come_from_systemctl_at_most_every_30_s(
    machine: MachineTree, systemctl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine.write("root/run/systemd/system/.keep", "")
    services(systemctl, ["nginx.service", "backup.timer"], {"nginx.service": 0, "worker.service": 4})
    collector = Collector(processes=False, roots=machine.roots)

    first = read(collector)
    services(systemctl, ["nginx.service"], {"nginx.service": 0, "worker.service": 6})
    soon_after = read(collector)
    asked_within_30_s = len((systemctl / "asked").read_text().splitlines())
    monkeypatch.setattr(systemd, "EVERY_S", 0.0)
    later = read(collector)
    then_again = read(collector)

    assert readings(first)["unit_failed"] == {"backup.timer": 1, "nginx.service": 1}
    assert "unit_restarts" not in readings(first), "restarts are counted from the answer before"
    assert asked_within_30_s == 2, "one list-units and one show, for two samples"
    assert readings(soon_after)["unit_failed"] == readings(first)["unit_failed"], "the last answer, sent again"
    assert "unit_restarts" not in readings(soon_after), "no new answer: its restarts were not counted"
    assert readings(later)["unit_failed"] == {"nginx.service": 1}
    assert readings(later)["unit_restarts"] == {"worker.service": 2}
    assert readings(then_again)["unit_restarts"] == {}
    assert "systemd" not in (later.unreadable or {})


def test_a_systemctl_that_fails_makes_systemd_unreadable_with_its_own_words(
    machine: MachineTree, systemctl: Path
) -> None:
    machine.write("root/run/systemd/system/.keep", "")
    services(systemctl, [], {})
    (systemctl / "status").write_text("1\n")
    (systemctl / "failed").write_text("")
    (systemctl / "systemctl").write_text((systemctl / "systemctl").read_text().replace(
        "exit", 'echo "Failed to connect to bus: No such file or directory" >&2\nexit'))

    _, sample = two_samples(machine)

    assert "unit_failed" not in readings(sample)
    assert sample.unreadable is not None
    assert sample.unreadable["systemd"] == (
        "systemctl list-units failed: Failed to connect to bus: No such file or directory")


@pytest.mark.filterwarnings("ignore:'sin' and 'sout' swap memory stats:RuntimeWarning")  # psutil reads vmstat too
def test_a_source_that_cannot_be_read_is_left_out_and_said_once_until_it_can_be_read_again(
    machine: MachineTree, caplog: pytest.LogCaptureFixture
) -> None:
    vmstat = machine.procfs / "vmstat"
    vmstat.unlink()
    vmstat.mkdir()  # reading it fails as a broken file would
    collector = Collector(processes=False, roots=machine.roots)
    with caplog.at_level(logging.WARNING, logger="agent.readings"):
        broken = [read(collector) for _ in range(3)]
    vmstat.rmdir()
    machine.vmstat(oom_kill=0, pgmajfault=0)
    mended = [read(collector) for _ in range(2)]

    for sample in broken:
        assert sample.unreadable is not None
        assert sample.unreadable["oom"] == sample.unreadable["memory"] == f"Is a directory reading {vmstat}"
        assert not {"oom_kills", "major_faults_per_s"} & set(readings(sample))
        assert readings(sample)["fd_percent"], "every other source is still read"
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("oom unreadable")] == [
        f"oom unreadable: Is a directory reading {vmstat}; each sample says so instead of sending its readings"]
    assert "oom" not in (mended[-1].unreadable or {})
    assert readings(mended[-1])["oom_kills"] == {"": 0}


def test_a_reading_of_many_objects_keeps_the_worst_64_within_the_wire_formats_bounds(machine: MachineTree) -> None:
    names = [f"veth{i:03d}" for i in range(99)] + ["veth" + "x" * 300]  # the last, too long a name, the worst
    machine.net_dev({name: Interface(1000) for name in names})

    _, sample = two_samples(machine, lambda: machine.net_dev({
        name: Interface(2000, i, 0) for i, name in enumerate(names)}))  # i errors in 1,000 packets

    errors = readings(sample)["net_errors_percent"]
    assert len(errors) == 64
    assert min(errors.values()) == pytest.approx(3.6), "the 64 with the most errors: 36 to 99 in 1,000"
    assert errors["veth" + "x" * 251 + "…"] == pytest.approx(9.9), "a name cut to 256 characters, and said so"


def test_once_reads_the_folders_its_options_and_variables_name(machine: MachineTree) -> None:
    machine.degraded_md_arrays()

    def once(*options: str, env: dict[str, str] | None = None) -> Sample:
        done = subprocess.run([sys.executable, "-m", "agent", "--once", *options], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, env={**os.environ, **(env or {})})
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return parse(done.stdout.encode())

    by_options = once(*machine.options)
    by_variables = once(env={"AGENT_PROCFS": str(machine.procfs), "AGENT_SYSFS": str(machine.sysfs),
                             "AGENT_ROOTFS": str(machine.rootfs)})

    for sample in (by_options, by_variables):
        assert readings(sample)["md_failed"]["md0"] == 1 and notes(sample)["md_failed"] == {"md0": "sdb"}
        assert readings(sample)["fd_percent"] == {"": 2.0}
        assert sample.unreadable is not None and str(machine.rootfs) in sample.unreadable["systemd"]


def scrape(address: str) -> dict[str, float]:
    """node_exporter's metrics by `name{labels}`, as it writes them."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2]) for line in lines if not line.startswith("#")}


@pytest.fixture
def node_exporter_of(machine: MachineTree) -> Iterator[str]:
    """Debian's node_exporter reading the made-up machine; its host:port."""
    port = free_port()
    proc = subprocess.Popen(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{port}",
                             f"--path.procfs={machine.procfs}", f"--path.sysfs={machine.sysfs}",
                             f"--path.rootfs={machine.rootfs}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_agent_reads_a_made_up_machine_as_node_exporter_does(
    machine: MachineTree, node_exporter_of: str
) -> None:
    machine.degraded_md_arrays()
    machine.write("proc/sys/fs/file-nr", "90000\t0\t100000\n")
    machine.write("proc/sys/net/netfilter/nf_conntrack_count", "600\n")
    machine.write("proc/sys/net/netfilter/nf_conntrack_max", "1000\n")
    machine.write("sys/class/net/bonding_masters", "bond0\n")
    machine.write("sys/class/net/bond0/bonding/slaves", "eth0 eth1\n")
    machine.write("sys/class/net/bond0/lower_eth0/bonding_slave/mii_status", "up\n")
    machine.write("sys/class/net/bond0/lower_eth1/bonding_slave/mii_status", "down\n")
    machine.write("sys/devices/system/edac/mc/mc0/ce_count", "3\n")
    machine.write("sys/devices/system/edac/mc/mc0/ue_count", "0\n")
    machine.vmstat(oom_kill=1, pgmajfault=0)
    collector = Collector(processes=False, roots=machine.roots)
    read(collector)
    before = scrape(node_exporter_of)
    machine.vmstat(oom_kill=4, pgmajfault=0)
    machine.write("sys/devices/system/edac/mc/mc0/ce_count", "5\n")
    machine.write("sys/class/net/eth0/carrier_changes", "6\n")
    sample = read(collector)
    after = scrape(node_exporter_of)
    found = readings(sample)

    assert found["md_failed"]["md0"] == after['node_md_disks{device="md0",state="failed"}'] == 1
    for md in ("md0", "md1"):
        assert found["md_active"][md] == after[f'node_md_disks{{device="{md}",state="active"}}']
        assert found["md_required"][md] == after[f'node_md_disks_required{{device="{md}"}}']
    assert found["fd_percent"][""] == 100 * after["node_filefd_allocated"] / after["node_filefd_maximum"]
    assert found["conntrack_percent"][""] == 100 * after["node_nf_conntrack_entries"] / after[
        "node_nf_conntrack_entries_limit"]
    assert found["bond_slaves"]["bond0"] == after['node_bonding_slaves{master="bond0"}']
    assert found["bond_active"]["bond0"] == after['node_bonding_active{master="bond0"}']
    assert found["oom_kills"][""] == after["node_vmstat_oom_kill"] - before["node_vmstat_oom_kill"] == 3
    assert found["ecc_correctable"]["mc0"] == after['node_edac_correctable_errors_total{controller="0"}'] - before[
        'node_edac_correctable_errors_total{controller="0"}'] == 2
    assert found["link_changes"]["eth0"] == after['node_network_carrier_changes_total{device="eth0"}'] - before[
        'node_network_carrier_changes_total{device="eth0"}'] == 4
    # The clock is the kernel's, not the tree's: both ask adjtimex.
    assert found["clock_synced"][""] == after["node_timex_sync_status"]
    assert found["clock_maxerror_s"][""] == pytest.approx(after["node_timex_maxerror_seconds"], abs=1.0)


# --- this machine, as root ----------------------------------------------------------------------------------------

def test_a_filesystem_remounted_read_only_reads_read_only(tmp_path: Path) -> None:
    with filesystems.loop_filesystem(tmp_path, 10) as (mount, _percent):
        collector = Collector(processes=False)
        writable = read(collector)
        filesystems.run("mount", "-o", "remount,ro", mount)
        read_only = read(collector)

    assert readings(writable)["readonly"][mount] == 0
    assert readings(read_only)["readonly"][mount] == 1
    assert readings(read_only)["readonly"]["/"] == 0
    assert mount in (read_only.filesystems or {}), "a read-only filesystem is still reported"


def df_inodes(mount: str) -> tuple[int, int]:
    """Inodes used and IUse% of a filesystem, as `df -i` shows them."""
    line = subprocess.run(["df", "--output=iused,ipcent", mount], capture_output=True, text=True, check=True,
                          timeout=30).stdout.splitlines()[1].split()
    return int(line[0]), int(line[1].rstrip("%"))


def test_a_filesystem_out_of_inodes_reads_them_all_used_as_df_does(tmp_path: Path) -> None:
    with filesystems.loop_filesystem(tmp_path, 0, size_mib=16, inodes=64) as (mount, _percent):
        collector = Collector(processes=False)
        before = read(collector)
        used_before = df_inodes(mount)
        created = 0
        with pytest.raises(OSError, match="No space left"):  # files are made until the inodes run out
            while created < 1000:
                Path(mount, f"empty-{created}").touch()
                created += 1
        full = read(collector)
        used_full = df_inodes(mount)

    assert created < 64
    assert (readings(before)["inodes_used"][mount], round(readings(before)["inodes_percent"][mount])) == pytest.approx(
        used_before, abs=1)
    assert readings(full)["inodes_percent"][mount] == 100 == used_full[1]
    assert readings(full)["inodes_used"][mount] == used_full[0]


def memory_cgroup(limit: int) -> tuple[Path, str]:
    """A new memory cgroup limited to `limit` bytes without swap, of cgroup v2 where the memory controller is there,
    else of v1; its folder and the file a process's pid is written to to move it in."""
    v2 = Path("/sys/fs/cgroup")
    v1 = Path("/sys/fs/cgroup/memory")
    name = f"rigwatch-oom-{uuid.uuid4().hex[:8]}"
    if (v2 / "cgroup.controllers").exists() and "memory" in (v2 / "cgroup.controllers").read_text().split():
        (v2 / "cgroup.subtree_control").write_text("+memory")
        group = v2 / name
        group.mkdir()
        (group / "memory.max").write_text(str(limit))
        if (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")
        return group, "cgroup.procs"
    if (v1 / "memory.limit_in_bytes").exists():
        group = v1 / name
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit))
        if (group / "memory.memsw.limit_in_bytes").exists():
            (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
        return group, "cgroup.procs"
    raise AssertionError("this kernel has no memory cgroup controller (v1 or v2): a real OOM kill cannot be bounded")


def test_a_real_oom_kill_in_a_memory_limited_cgroup_is_counted_with_the_name_of_the_killed_process(
    tmp_path: Path
) -> None:
    hog = tmp_path / "rigwatch-hog"  # the name the kernel logs: the file it was started from
    hog.symlink_to(sys.executable)
    group, procs = memory_cgroup(64 << 20)
    collector = Collector(processes=False)
    # It waits for a line, then asks for 1 GiB: far more than its cgroup's 64 MiB.
    child = subprocess.Popen([hog, "-c", "import sys; sys.stdin.readline(); block = b'x' * (1 << 30)"],
                             stdin=subprocess.PIPE)
    try:
        read(collector)  # the OOM counter's starting point
        (group / procs).write_text(str(child.pid))
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.close()
        ended = child.wait(timeout=60)
        after = read(collector)
    finally:
        child.kill()
        child.wait()
        group.rmdir()

    assert ended == -9, "the kernel killed it for memory"
    assert readings(after)["oom_kills"][""] >= 1
    assert f"rigwatch-hog (pid {child.pid})" in notes(after)["oom_kills"][""]


def test_without_cap_syslog_the_kernel_log_is_unreadable_and_everything_else_is_read() -> None:
    def once(*prefix: str) -> Sample:
        done = subprocess.run([*prefix, sys.executable, "-m", "agent", "--once"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return parse(done.stdout.encode())

    privileged = once()
    without = once("setpriv", "--bounding-set=-all", "--inh-caps=-all")  # root's uid, no capability at all

    restricted = Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() == "1"
    assert "kernel log" not in (privileged.unreadable or {})
    if restricted:
        assert (without.unreadable or {})["kernel log"] == "permission denied reading /dev/kmsg"
    else:
        assert "kernel log" not in (without.unreadable or {})
    assert set(readings(without)) == set(readings(privileged))
    assert set(without.unreadable or {}) - {"kernel log"} == set(privileged.unreadable or {})


def test_on_this_machine_systemd_is_read_or_said_unreadable_never_taken_for_no_failed_unit() -> None:
    collector = Collector(processes=False)

    sample = read(collector)

    if not Path("/run/systemd/system").is_dir():  # systemd installed but not running, as on the test machines
        assert "unit_failed" not in readings(sample)
        assert (sample.unreadable or {})["systemd"] == "systemd is not running this machine (no /run/systemd/system)"
    else:
        assert ("unit_failed" in readings(sample)) != ("systemd" in (sample.unreadable or {}))
