"""What needs an intervention besides a stressed machine: the catalogue of conditions, declared as data like the
model's zones (ml/features.py).

Each condition is about one kind of object of a machine (a filesystem, an md array, a systemd unit, an
interface, the machine itself), decided on the readings the agent and node_exporter both send
(agent/vocabulary.py READINGS), by a rule that follows the best practice of the alert it stands for:

- `Fact`: a state that holds or not (an array degraded, a unit failed, a read-only remount); it opens once it has
  held for `for_s` and recovers as soon as it clears. Most facts open at once; a level that may pass by itself
  (a queue, a share of errors) must last.
- `Count`: events over a window (OOM kills, restarts, link changes); it opens when more than `more_than`
  happened within `window_s` and recovers when the window holds no more than that.
- `Event`: something that happened once (the machine rebooted): said, and over at once.
- `Trend`: a forecast (bot/pipeline/forecast.py): the reading heads for its edge within the horizon, is past a
  first level already, and its filesystem is writable: the node-mixin's three-part rule.

One incident per (machine, condition, object), in the incident machinery of every other alert. The words a
condition's alert uses are here too, with what to do about it; docs/conditions.md lists every alert of the
node-mixin and every Netdata host alarm beside the condition that covers it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from agent.vocabulary import DISK_NOTE

Values = Mapping[str, float]  # one object's readings in one sample (its machine's metrics too, for the machine)


class Severity(StrEnum):
    INFO = "info"  # worth knowing; no reminders
    WARNING = "warning"
    CRITICAL = "critical"


class Evidence(NamedTuple):
    """What an alert says of its object: its readings now, their notes, and for a count how many in the window."""

    object: str
    values: Values
    notes: Mapping[str, str]
    count: float = 0.0


@dataclass(frozen=True)
class Fact:
    holds: Callable[[Values], bool]
    for_s: float = 0.0
    critical: Callable[[Values], bool] | None = None  # past this it is critical, whatever the condition's severity
    changed: bool = False  # opens only when the bot saw it not hold before (a remount, not a read-only disk)


@dataclass(frozen=True)
class Count:
    window_s: float
    more_than: float = 0.0


@dataclass(frozen=True)
class Event:
    happened: Callable[[Values, Values], bool]  # (now, the sample before)


@dataclass(frozen=True)
class Trend:
    past: float  # the reading is already past this
    edge: float  # where it is heading


@dataclass(frozen=True)
class Predicted:
    """Decided by a model (the disk model, bot/pipeline/disks.py): opens when P reaches its alert threshold, and
    does not recover by itself (a disk does not heal): a person says ✅ replaced or ❌ wrong, or the object
    leaves the machine."""


Rule = Fact | Count | Event | Trend | Predicted


@dataclass(frozen=True)
class Condition:
    name: str  # at most 16 characters: the outbox groups changes by it
    title: str  # "RAID array degraded"
    reading: str  # the reading whose objects it is about
    rule: Rule
    severity: Severity
    says: Callable[[Evidence], str]  # the alert's evidence: "md0 degraded: 1 of 2 disks active, sdb failed"
    todo: str  # what to do
    agent: str  # where the agent reads it
    series: tuple[str, ...]  # node_exporter's series it is read from by remote write
    anchor: str  # the alerts it follows (node-mixin, Netdata) and how its rule differs
    reads: tuple[str, ...] = field(default=())  # the object's other readings its rule and words need


def _value(values: Values, name: str, default: float = 0.0) -> float:
    return values.get(name, default)


def _n(value: float) -> str:
    """A count as people say it: 3, 1.2 k, 1.2 M."""
    for size, unit in ((1e6, " M"), (1e3, " k")):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def _pct(value: float) -> str:
    return f"{value:.1f} %"


def _duration(seconds: float) -> str:
    """'3 d 4 h', '2 h 5 min', '40 s': two units at most."""
    days, rest = divmod(int(max(0.0, seconds)), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    for amount, unit, then, then_unit in ((days, "d", hours, "h"), (hours, "h", minutes, "min")):
        if amount:
            return f"{amount} {unit}" + (f" {then} {then_unit}" if then else "")
    return f"{minutes} min" if minutes else f"{rest} s"


def _times(count: float) -> str:
    return {1: "once", 2: "twice"}.get(round(count), f"{count:.0f} times")


def _errors(count: float) -> str:
    return f"{_n(count)} memory error{'' if count == 1 else 's'}"


def _raid(e: Evidence) -> str:
    active, required, failed = (_value(e.values, n) for n in ("md_active", "md_required", "md_failed"))
    members = f", {e.notes['md_failed']} failed" if e.notes.get("md_failed") else (
        f", {failed:.0f} failed" if failed else "")
    if active < required:
        return f"RAID {e.object} degraded: {active:.0f} of {required:.0f} disks active{members}"
    return f"RAID {e.object}: a disk failed{members} ({active:.0f} of {required:.0f} still active)"


def disk_of(note: str | None) -> tuple[str, str]:
    """(model, serial) of a disk from its smart_health note ("ST3000DM001|Z1F0ABCD"); empty when unknown."""
    model, _, serial = (note or "").partition(DISK_NOTE)
    return model, serial


def _disk(e: Evidence) -> str:
    """'sdb (ST3000DM001, serial Z1F0ABCD)'."""
    model, serial = disk_of(e.notes.get("smart_health"))
    said = ", ".join(part for part in (model, f"serial {serial}" if serial else "") if part)
    return f"{e.object} ({said})" if said else e.object


def _nvme_wear(v: Values) -> bool:
    return _value(v, "nvme_percentage_used") >= 90 or (
        "nvme_available_spare" in v and _value(v, "nvme_available_spare") < _value(v, "nvme_spare_threshold"))


def _clock(e: Evidence) -> str:
    offset = _value(e.values, "clock_offset_s")
    if abs(offset) > CLOCK_OFFSET_S:
        return f"clock off by {offset:+.3g} s"
    return f"clock not synchronising (maximum error {_value(e.values, 'clock_maxerror_s'):.0f} s)"


def _clock_wrong(v: Values) -> bool:
    return (_value(v, "clock_synced", 1) == 0 and _value(v, "clock_maxerror_s") >= CLOCK_MAXERROR_S) or abs(
        _value(v, "clock_offset_s")) > CLOCK_OFFSET_S


def _net(v: Values) -> bool:
    return _value(v, "net_errors_percent") > NET_ERRORS_PERCENT or _value(v, "net_drops_percent") > NET_DROPS_PERCENT


def _writable(v: Values) -> bool:
    return _value(v, "readonly") != 1


def _inodes(e: Evidence) -> str:
    files = f", {_n(e.values['inodes_used'])} files" if "inodes_used" in e.values else ""
    return f"{e.object} almost out of inodes ({_pct(_value(e.values, 'inodes_percent'))} used{files})"


def _oom(e: Evidence) -> str:
    killed = f": {e.notes['oom_kills']}" if e.notes.get("oom_kills") else ""
    return f"the kernel killed {_n(e.count)} process{'es' if e.count != 1 else ''} for memory in 30 min{killed}"


MINUTE = 60.0
CLOCK_OFFSET_S = 0.05  # the node-mixin's skew
CLOCK_MAXERROR_S = 16.0  # the kernel's maximum error once nothing corrects it (the node-mixin's)
NET_ERRORS_PERCENT = 1.0  # the node-mixin's 1 % of packets
NET_DROPS_PERCENT = 2.0  # Netdata's inbound/outbound packets dropped ratio
INODES_PAST = 80.0  # a filesystem forecast to run out of inodes alerts once past this (the mixin's 20 % free)
INODES_EDGE = 100.0  # where that forecast is heading: no inode left

CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition(
        "inodes", "out of inodes", "inodes_percent",
        Fact(lambda v: _value(v, "inodes_percent") >= 95 and _writable(v), for_s=5 * MINUTE,
             critical=lambda v: _value(v, "inodes_percent") >= 97),
        Severity.WARNING, _inodes,
        "Find where the files are (du --inodes -x <mount> | sort -n | tail) and remove what is not needed: caches, "
        "old sessions, mail or print queues. No new file can be made once they run out, even with space left.",
        "os.statvfs of each filesystem", ("node_filesystem_files", "node_filesystem_files_free"),
        "NodeFilesystemAlmostOutOfFiles (node-mixin: < 5 % / < 3 % free for 1 h; here 5 min: inodes do not come "
        "back by themselves); Netdata disk_inode_usage", reads=("inodes_used", "readonly")),
    Condition(
        "inodes_filling", "running out of inodes", "inodes_percent", Trend(past=INODES_PAST, edge=INODES_EDGE),
        Severity.WARNING, _inodes,
        "Find what creates the files (du --inodes -x <mount> | sort -n | tail) before it runs out.",
        "os.statvfs of each filesystem", ("node_filesystem_files", "node_filesystem_files_free"),
        "NodeFilesystemFilesFillingUp (node-mixin: predict_linear over 6 h; here the bot's robust trend of the last "
        "3 h, the same three parts: heading for the edge within FORECAST_HOURS, past 80 % used, writable)",
        reads=("inodes_used", "readonly")),
    Condition(
        "readonly", "remounted read-only", "readonly", Fact(lambda v: _value(v, "readonly") == 1, changed=True),
        Severity.CRITICAL, lambda e: f"{e.object} was remounted read-only",
        "The kernel remounts a filesystem read-only after I/O or filesystem errors: read dmesg, check the disk "
        "(smartctl -a) and the filesystem (fsck after unmounting) before writing to it again.",
        "the mount options (/proc/mounts)", ("node_filesystem_readonly",),
        "node_filesystem_readonly (the node-mixin only uses it to leave read-only filesystems out); a filesystem "
        "that was writable while the bot watched"),
    Condition(
        "raid", "RAID array degraded", "md_required",
        Fact(lambda v: _value(v, "md_active") < _value(v, "md_required") or _value(v, "md_failed") > 0,
             critical=lambda v: _value(v, "md_active") < _value(v, "md_required")),
        Severity.WARNING, _raid,
        "Replace the failed disk and add the new one to the array (mdadm --manage <array> --add <disk>); until "
        "the rebuild ends, one more failure can lose the array: check its backups now.",
        "/proc/mdstat and /sys/block/md*/md/", ("node_md_disks", "node_md_disks_required"),
        "NodeRAIDDegraded (critical) and NodeRAIDDiskFailure (warning), node-mixin; Netdata mdstat_disks. At once, "
        "not after 15 min: an array does not heal by itself", reads=("md_active", "md_failed")),
    Condition(
        "unit_failed", "service failed", "unit_failed", Fact(lambda v: _value(v, "unit_failed") == 1),
        Severity.WARNING, lambda e: f"{e.object} failed",
        "Read why (systemctl status <unit>, journalctl -u <unit> -n 50), fix it and start it again "
        "(systemctl restart <unit>), or disable it if it is not needed.",
        "systemctl list-units --state=failed (every 30 s)", ("node_systemd_unit_state",),
        "NodeSystemdServiceFailed (node-mixin, for 5 min; here at once); Netdata systemd_service_unit_failed_state"),
    Condition(
        "unit_restarting", "service restarting in a loop", "unit_restarts", Count(window_s=15 * MINUTE, more_than=2),
        Severity.WARNING, lambda e: f"{e.object} restarted {_times(e.count)} in 15 min",
        "It crashes and systemd starts it again: read why (journalctl -u <unit> -n 100) and fix the cause; "
        "it may be failing its work between restarts.",
        "systemctl show -p NRestarts (every 30 s)", ("node_systemd_service_restart_total",),
        "NodeSystemdServiceCrashlooping (node-mixin: more than 2 restarts in 5 min, for 15 min; here more than 2 in "
        "15 min)"),
    Condition(
        "oom", "processes killed for memory", "oom_kills", Count(window_s=30 * MINUTE),
        Severity.WARNING, _oom,
        "Memory ran out: find what grew (the killed process, journalctl -k | grep -i oom), give it a memory "
        "limit, fix its leak, or give the machine more memory or swap.",
        "/proc/vmstat oom_kill; the process from the kernel log (/dev/kmsg) when readable", ("node_vmstat_oom_kill",),
        "Netdata oom_kill (any in 30 min); the node-mixin has none"),
    Condition(
        "clock", "clock wrong", "clock_synced", Fact(_clock_wrong, for_s=10 * MINUTE),
        Severity.WARNING, _clock,
        "Check the time service (timedatectl timesync-status, chronyc tracking) and that it can reach its "
        "servers; certificates, logs and databases go wrong with a wrong clock.",
        "adjtimex (read-only)", ("node_timex_sync_status", "node_timex_offset_seconds", "node_timex_maxerror_seconds"),
        "NodeClockNotSynchronising and NodeClockSkewDetected (node-mixin, 10 min); Netdata system_clock_sync_state",
        reads=("clock_offset_s", "clock_maxerror_s")),
    Condition(
        "fd", "file descriptors near the limit", "fd_percent",
        Fact(lambda v: _value(v, "fd_percent") > 70, for_s=5 * MINUTE, critical=lambda v: _value(v, "fd_percent") > 90),
        Severity.WARNING, lambda e: f"{_pct(_value(e.values, 'fd_percent'))} of the system's file descriptors in use",
        "Find the process holding them (ls /proc/*/fd | wc -l per process, lsof | sort), fix its leak or raise "
        "fs.file-max; at the limit no process can open a file or a connection.",
        "/proc/sys/fs/file-nr", ("node_filefd_allocated", "node_filefd_maximum"),
        "NodeFileDescriptorLimit (node-mixin: 70 % / 90 % for 15 min; here 5 min); Netdata "
        "system_file_descriptors_utilization"),
    Condition(
        "conntrack", "connection tracking table filling", "conntrack_percent",
        Fact(lambda v: _value(v, "conntrack_percent") > 75, critical=lambda v: _value(v, "conntrack_percent") > 90),
        Severity.WARNING,
        lambda e: f"connection tracking table {_pct(_value(e.values, 'conntrack_percent'))} full",
        "When it is full the kernel drops new connections: raise net.netfilter.nf_conntrack_max or find what "
        "opens so many connections.",
        "/proc/sys/net/netfilter/nf_conntrack_count and _max",
        ("node_nf_conntrack_entries", "node_nf_conntrack_entries_limit"),
        "NodeHighNumberConntrackEntriesUsed (node-mixin, 75 %); Netdata netfilter_conntrack_full (90 %)"),
    Condition(
        "pids", "process ids running out", "pids_percent",
        Fact(lambda v: _value(v, "pids_percent") > 80, for_s=5 * MINUTE),
        Severity.WARNING, lambda e: f"{_pct(_value(e.values, 'pids_percent'))} of the process ids in use",
        "Something forks without end or leaves zombies: find it (ps -eo ppid= | sort | uniq -c | sort -n | tail).",
        "the processes and /proc/sys/kernel/pid_max", ("node_processes_pids", "node_processes_max_processes"),
        "NodeProcessesCountIsHigh (node-mixin variants, 80 %); Netdata active_processes_limit"),
    Condition(
        "net_errors", "network errors", "net_errors_percent", Fact(_net, for_s=10 * MINUTE),
        Severity.WARNING,
        lambda e: (f"{e.object}: {_pct(_value(e.values, 'net_errors_percent'))} of packets with errors, "
                   f"{_pct(_value(e.values, 'net_drops_percent'))} dropped"),
        "Check the cable, the switch port and the link's speed and duplex (ethtool <interface>); drops alone "
        "can be a receive ring too small for the traffic (ethtool -g).",
        "/proc/net/dev", ("node_network_receive_errs_total", "node_network_transmit_errs_total",
                          "node_network_receive_drop_total", "node_network_transmit_drop_total",
                          "node_network_receive_packets_total", "node_network_transmit_packets_total"),
        "NodeNetworkReceiveErrs and NodeNetworkTransmitErrs (node-mixin: 1 % for 1 h; here 10 min); Netdata "
        "inbound/outbound_packets_dropped_ratio (2 %)", reads=("net_drops_percent",)),
    Condition(
        "link_flapping", "network link flapping", "link_changes", Count(window_s=5 * MINUTE, more_than=2),
        Severity.WARNING, lambda e: f"{e.object} went down and up {_times(e.count / 2)} in 5 min",
        "A loose cable, a failing port or a power-saving setting: check the cable and the switch's log.",
        "/sys/class/net/*/carrier_changes", ("node_network_carrier_changes_total",),
        "NodeNetworkInterfaceFlapping (node-mixin, more than 2 changes in 2 min; here in 5 min)"),
    Condition(
        "bond", "bonded link down", "bond_slaves",
        Fact(lambda v: _value(v, "bond_active") < _value(v, "bond_slaves")),
        Severity.WARNING,
        lambda e: f"{e.object}: {_value(e.values, 'bond_active'):.0f} of {_value(e.values, 'bond_slaves'):.0f} "
                  "links up",
        "The bond runs without its redundancy: check the link that is down (cable, switch port).",
        "/sys/class/net/*/bonding/", ("node_bonding_slaves", "node_bonding_active"),
        "NodeBondingDegraded (node-mixin)", reads=("bond_active",)),
    Condition(
        "reboot_required", "reboot required", "reboot_required", Fact(lambda v: _value(v, "reboot_required") == 1),
        Severity.INFO,
        lambda e: "needs a reboot to finish its updates" + (
            f" ({e.notes['reboot_required']})" if e.notes.get("reboot_required") else ""),
        "Plan a reboot: the updates (often the kernel or the C library) are installed but not running yet.",
        "/run/reboot-required and reboot-required.pkgs", ("node_reboot_required",),
        "Netdata's reboot alarms (apt); node_reboot_required of Debian's textfile collectors (apt_info)"),
    Condition(
        "rebooted", "rebooted", "uptime_s",
        Event(lambda now, before: _value(now, "uptime_s") < _value(before, "uptime_s")),
        Severity.INFO,
        lambda e: f"rebooted {_duration(_value(e.values, 'uptime_s'))} ago, after "
                  f"{_duration(_value(e.values, 'uptime_before'))} up",
        "If nobody rebooted it, look for why: a crash (journalctl -b -1 -e), a power loss, a watchdog.",
        "uptime (psutil.boot_time)", ("node_boot_time_seconds",),
        "NodeHasRebooted (node-mixin variants); Netdata's system uptime"),
    Condition(
        "major_faults", "memory thrashing", "major_faults_per_s",
        Fact(lambda v: _value(v, "major_faults_per_s") > 500, for_s=15 * MINUTE),
        Severity.WARNING, lambda e: f"{_n(_value(e.values, 'major_faults_per_s'))} major page faults a second",
        "Memory is too small for what runs: pages are read back from disk all the time. Find the biggest "
        "processes, add memory, or move work elsewhere.",
        "/proc/vmstat pgmajfault", ("node_vmstat_pgmajfault",),
        "NodeMemoryMajorPagesFaults (node-mixin: 500/s for 15 min)"),
    Condition(
        "io_saturation", "disk I/O saturated", "disk_io_queue",
        Fact(lambda v: _value(v, "disk_io_queue") > 10, for_s=15 * MINUTE),
        Severity.WARNING, lambda e: f"{e.object}: {_value(e.values, 'disk_io_queue'):.0f} I/Os waiting on average",
        "The disk cannot keep up: find who reads and writes (iotop, pidstat -d), and check the disk's health "
        "(a dying disk retries).",
        "/proc/diskstats (weighted I/O time)", ("node_disk_io_time_weighted_seconds_total",),
        "NodeDiskIOSaturation (node-mixin: 10 for 30 min; here 15 min); Netdata disk_backlog"),
    Condition(
        "ecc_corrected", "memory errors corrected", "ecc_correctable", Count(window_s=10 * MINUTE),
        Severity.WARNING, lambda e: f"{e.object}: {_errors(e.count)} corrected in 10 min",
        "A memory module is wearing out: find which (edac-util -v) and plan its replacement before errors "
        "become uncorrectable.",
        "/sys/devices/system/edac/mc/mc*/ce_count", ("node_edac_correctable_errors_total",),
        "Netdata ecc_memory_mc_correctable"),
    Condition(
        "ecc_uncorrected", "memory errors not corrected", "ecc_uncorrectable", Count(window_s=60 * MINUTE),
        Severity.CRITICAL, lambda e: f"{e.object}: {_errors(e.count)} NOT corrected in 1 h",
        "Data in memory was corrupted: replace the module (edac-util -v names it) and check what ran.",
        "/sys/devices/system/edac/mc/mc*/ue_count", ("node_edac_uncorrectable_errors_total",),
        "Netdata ecc_memory_mc_uncorrectable"),
    Condition(
        "temp_alarm", "temperature alarm", "temp_alarm", Fact(lambda v: _value(v, "temp_alarm") == 1),
        Severity.CRITICAL, lambda e: f"{e.object} reports a critical temperature",
        "Check the fans, the airflow and the room; the hardware throttles or shuts down beyond this.",
        "/sys/class/hwmon/hwmon*/temp*_crit_alarm", ("node_hwmon_temp_crit_alarm_celsius",),
        "Netdata's hardware sensor alarms; the node-mixin has none"),
    Condition(
        "smart_failed", "disk failing its SMART check", "smart_health",
        Fact(lambda v: _value(v, "smart_health", 1) == 0),
        Severity.CRITICAL, lambda e: f"disk {_disk(e)} fails its SMART self-assessment",
        "Copy what matters off it now and replace it: SMART's own verdict comes late, often days before the end.",
        "smartctl --json (every few minutes, root or CAP_SYS_RAWIO)",
        ("smartctl_device_smart_status", "smartmon_device_smart_healthy"),
        "smartctl_exporter ships no rule; the disk's own verdict", reads=("smart_health",)),
    Condition(
        "nvme_warning", "NVMe critical warning", "nvme_critical_warning",
        Fact(lambda v: _value(v, "nvme_critical_warning") > 0), Severity.CRITICAL,
        lambda e: f"disk {e.object} raises its NVMe critical warning ({_value(e.values, 'nvme_critical_warning'):.0f})",
        "The drive says it is in trouble (spare exhausted, too hot, read-only or degraded): copy what matters off it "
        "and read smartctl -a.",
        "smartctl --json (NVMe health log)", ("smartctl_device_critical_warning",),
        "the NVMe health log's critical warning"),
    Condition(
        "nvme_wear", "NVMe worn out", "nvme_percentage_used", Fact(_nvme_wear), Severity.WARNING,
        lambda e: (f"disk {e.object} has used {_value(e.values, 'nvme_percentage_used'):.0f} % of its endurance, "
                   f"{_value(e.values, 'nvme_available_spare', 100):.0f} % spare left"),
        "Plan its replacement: writes fail once the spare blocks run out.",
        "smartctl --json (NVMe health log)",
        ("smartctl_device_percentage_used", "smartctl_device_available_spare",
         "smartctl_device_available_spare_threshold"),
        "the NVMe health log: endurance used ≥ 90 %, or available spare below its threshold",
        reads=("nvme_available_spare", "nvme_spare_threshold")),
    Condition(
        "disk_failing", "disk likely to fail", "smart_health", Predicted(), Severity.WARNING,
        lambda e: f"disk {_disk(e)} is likely to fail within 30 days",
        "Copy what matters off it and plan the swap.",
        "smartctl --json: SMART attributes 5, 187, 188, 197, 198 and 9, day by day",
        ("smartctl_device_attribute", "smartmon_reallocated_sector_ct_raw_value",
         "smartmon_current_pending_sector_raw_value"),
        "the disk model (ml/disks/), trained on Backblaze's drive stats; smartctl_exporter and Netdata ship no rule",
        reads=("smart_health",)),
    Condition(
        "textfile_error", "textfile collector failed", "textfile_error",
        Fact(lambda v: _value(v, "textfile_error") == 1),
        Severity.WARNING, lambda e: "node_exporter could not read its textfile directory",
        "A script writing into node_exporter's textfile directory wrote a bad file: its readings (reboot "
        "required, SMART) are missing until it is fixed.",
        "(remote write only)", ("node_textfile_scrape_error",),
        "NodeTextFileCollectorScrapeError (node-mixin)"),
)}
BY_READING: dict[str, list[Condition]] = {}
for _condition in CONDITIONS.values():
    BY_READING.setdefault(_condition.reading, []).append(_condition)
CONDITION = "cond:"  # the metric of a condition's incident is "cond:<name>:<object>"


def key(name: str, obj: str) -> str:
    """The metric of a condition's incident (cut to its column by schema.domain.metric_key)."""
    return f"{CONDITION}{name}:{obj}"


def parse_key(metric: str) -> tuple[Condition, str] | None:
    """(condition, object) of an incident's metric, or None when it is not a condition's."""
    name, _, obj = metric.removeprefix(CONDITION).partition(":")
    condition = CONDITIONS.get(name)
    return (condition, obj) if metric.startswith(CONDITION) and condition is not None else None
