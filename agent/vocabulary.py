"""The words the agent and the bot share, so that both read a machine the same way; the agent ships alone with
them. The metrics and their bounds, the device-id pattern, the file systems that are not disks, how a producer
talks to Kafka (the agent's, and the bot's remote-write sink in fleet mode), and the error a bad setting raises."""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot be used (a variable, an option); the text names it and says what is
    expected. The one error every program of the project stops on, with that text as its last line."""


DEVICE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

# name -> (label for people, unit); the order is the order in which people see them.
KNOWN_METRICS: dict[str, tuple[str, str]] = {
    "cpu_percent": ("CPU", "%"),
    "cpu_freq_mhz": ("CPU frequency", "MHz"),
    "load_1m": ("Load (1 min, per CPU)", ""),
    "mem_percent": ("Memory", "%"),
    "swap_percent": ("Swap", "%"),
    "disk_percent": ("Disk (root)", "%"),
    "disk_read_bps": ("Disk read", "B/s"),
    "disk_write_bps": ("Disk write", "B/s"),
    "net_sent_bps": ("Network sent", "B/s"),
    "net_recv_bps": ("Network received", "B/s"),
    "cpu_temp_c": ("CPU temperature", "°C"),
    "process_count": ("Processes", ""),
    "uptime_s": ("Uptime", "s"),
    # Pressure: the share of the last interval in which every task waited for memory or for I/O (PSI "full"), and
    # the share of CPU time stolen by the hypervisor or spent waiting for I/O.
    "psi_memory_full_percent": ("Memory pressure", "%"),
    "psi_io_full_percent": ("I/O pressure", "%"),
    "cpu_steal_percent": ("CPU steal", "%"),
    "cpu_iowait_percent": ("CPU iowait", "%"),
}
# Rates, counts and unknown metrics: any larger number is a unit or overflow error in the sender, and
# would swamp every sum and model fitted on the column.
LIMIT = 1e15
BELOW_LIMIT = math.nextafter(LIMIT, 0.0)
# Inclusive bounds by unit; any other unit is a rate or a count.
_BOUNDS_BY_UNIT = {"%": (0.0, 100.0), "°C": (-50.0, 150.0)}
BOUNDS: dict[str, tuple[float, float]] = {
    name: _BOUNDS_BY_UNIT.get(unit, (0.0, BELOW_LIMIT)) for name, (_label, unit) in KNOWN_METRICS.items()
}


@dataclass(frozen=True)
class Reading:
    """A reading of one object of a machine (a filesystem, an md array, a systemd unit, …) that a condition is
    decided on (schema/conditions.py): what people call it, its unit, what its objects are, and its bounds. A
    count marked `per_sample` is what happened since the sample before (the sender keeps the counter)."""

    label: str
    unit: str  # "%", "s", "/s", "" for a count, "flag" for 0 or 1
    of: str  # what an object is: "filesystem", "md array", "unit", "interface", …; "" for the machine itself
    low: float = 0.0
    high: float = BELOW_LIMIT
    per_sample: bool = False


_FLAG = {"unit": "flag", "high": 1.0}
# Every reading a sample may carry, by name: `"readings": {name: {object: value}}` on the wire. A reading present
# in a sample is a whole reading of it: an object missing from it has none of it (no failed unit, no degraded
# array), while a reading missing from the sample was not read (see UNREADABLE). The machine's object is "".
READINGS: dict[str, Reading] = {
    "inodes_percent": Reading("inodes used", "%", "filesystem", high=100.0),
    "inodes_used": Reading("files", "", "filesystem"),
    "readonly": Reading("read-only", of="filesystem", **_FLAG),
    "md_active": Reading("disks active", "", "md array"),
    "md_required": Reading("disks required", "", "md array"),
    "md_failed": Reading("disks failed", "", "md array"),
    "unit_failed": Reading("failed", of="unit", **_FLAG),
    "unit_restarts": Reading("restarts", "", "unit", per_sample=True),
    "oom_kills": Reading("processes killed for memory", "", "", per_sample=True),
    "clock_synced": Reading("clock synchronised", of="", **_FLAG),
    "clock_offset_s": Reading("clock offset", "s", "", low=-1e9, high=1e9),
    "clock_maxerror_s": Reading("clock maximum error", "s", "", high=1e9),
    "fd_percent": Reading("file descriptors used", "%", "", high=100.0),
    "conntrack_percent": Reading("connection tracking table used", "%", "", high=100.0),
    "pids_percent": Reading("process ids used", "%", "", high=100.0),
    "net_errors_percent": Reading("packets with errors", "%", "interface", high=100.0),
    "net_drops_percent": Reading("packets dropped", "%", "interface", high=100.0),
    "link_changes": Reading("link changes", "", "interface", per_sample=True),
    "bond_slaves": Reading("bonded links", "", "bond"),
    "bond_active": Reading("bonded links up", "", "bond"),
    "reboot_required": Reading("reboot required", of="", **_FLAG),
    "major_faults_per_s": Reading("major page faults", "/s", ""),
    "disk_io_queue": Reading("I/O queue", "", "disk"),
    "ecc_correctable": Reading("corrected memory errors", "", "memory controller", per_sample=True),
    "ecc_uncorrectable": Reading("uncorrected memory errors", "", "memory controller", per_sample=True),
    "temp_alarm": Reading("critical temperature alarm", of="sensor", **_FLAG),
    "textfile_error": Reading("textfile collector failed", of="", **_FLAG),
    # SMART, per disk (the object is the disk's name, "sdb"): the overall verdict, with the disk's model and serial
    # as its note ("ST3000DM001|Z1F0ABCD"), and the raw values that predict a failure, named as Backblaze's drive
    # stats name them (the disk model reads them as they are: ml/disks/); NVMe's health log for NVMe disks.
    "smart_health": Reading("SMART self-assessment passed", of="disk", **_FLAG),
    "smart_5_raw": Reading("reallocated sectors", "", "disk"),
    "smart_187_raw": Reading("reported uncorrectable errors", "", "disk"),
    "smart_188_raw": Reading("command timeouts", "", "disk"),
    "smart_197_raw": Reading("pending sectors", "", "disk"),
    "smart_198_raw": Reading("offline uncorrectable sectors", "", "disk"),
    "smart_9_raw": Reading("power-on hours", "", "disk"),
    "smart_194_raw": Reading("temperature", "°C", "disk", low=-50.0, high=150.0),
    "nvme_media_errors": Reading("media errors", "", "disk"),
    "nvme_critical_warning": Reading("critical warning", "", "disk", high=255.0),
    "nvme_available_spare": Reading("available spare", "%", "disk", high=100.0),
    "nvme_spare_threshold": Reading("available spare threshold", "%", "disk", high=100.0),
    "nvme_percentage_used": Reading("endurance used", "%", "disk", high=255.0),
}
DISK_NOTE = "|"  # smart_health's note: "<model>|<serial>"
# What a sender can say it could not read, with why (`"unreadable": {source: reason}`): never taken for "all fine".
SOURCES = ("filesystems", "raid", "systemd", "oom", "kernel log", "clock", "file descriptors", "conntrack",
           "network", "bonding", "reboot", "pressure", "memory", "disk io", "ecc", "hwmon", "process ids", "smart")
# A disk whose SMART cannot be read (a virtual disk, a USB bridge that hides it, no permission) is said as the
# source "smart <disk>" ("smart sdb": "no SMART: a virtual disk"): never taken for a healthy disk.


def disk_source(disk: str) -> str:
    """The source under which a disk whose SMART cannot be read is said unreadable: "smart sdb"."""
    return f"smart {disk}"


# Pseudo and virtual filesystems, which hold no data of the machine's own: node_exporter's defaults, an empty
# type (the node-exporter mixin's `fstype!=""`), the memory-backed ones (tmpfs, ramfs) and those of containers and
# desktops. The agent's `--fs-include` brings one back.
NOT_DISK_FS_TYPES = frozenset({
    "", "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devfs", "devpts", "devtmpfs",
    "efivarfs", "erofs", "fuse.gvfsd-fuse", "fuse.lxcfs", "fuse.portal", "fusectl", "hugetlbfs", "iso9660",
    "mqueue", "nsfs", "nfsd", "none", "overlay", "proc", "procfs", "pstore", "ramfs", "rpc_pipefs", "securityfs",
    "selinuxfs", "squashfs", "sysfs", "tmpfs", "tracefs",
})
# Mount points whose filesystems belong to the system or to containers (node_exporter's defaults), and all below.
NOT_DISK_MOUNT_POINTS = ("/dev", "/proc", "/sys", "/run/credentials", "/var/lib/docker",
                         "/var/lib/containers/storage")


def below(mount: str, points: Collection[str]) -> bool:
    """The mount point is one of `points` or below one of them."""
    return any(mount == p or mount.startswith(p.rstrip("/") + "/") for p in points)


def is_disk(mount: str, fstype: str) -> bool:
    """Whether a mounted filesystem holds the machine's own data: not a pseudo type, not a system mount point."""
    return fstype not in NOT_DISK_FS_TYPES and not below(mount, NOT_DISK_MOUNT_POINTS)


def command_name(module: str) -> str:
    """How the program was started, for its --help: `rigwatch-bot` when run as the installed command, else
    `python -m <module>`."""
    started = os.path.basename(sys.argv[0]) if sys.argv else ""
    return started if started and started != "__main__.py" and not started.endswith(".py") else f"python -m {module}"


def producer_settings(bootstrap: str, client_id: str, timeout_s: float, max_queued: int, linger_ms: int,
                      logger: object, **more: Callable[..., Any] | str | int) -> dict[str, object]:
    """A Kafka producer's settings: every message acknowledged by all in-sync replicas, waiting at most
    `timeout_s` for the broker (a sample older than that is no use to anyone), at most `max_queued` waiting
    locally; librdkafka's own log goes to `logger`, its critical lines only."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "acks": "all",
        "linger.ms": linger_ms,
        "message.timeout.ms": int(timeout_s * 1000),
        "queue.buffering.max.messages": max_queued,
        "logger": logger,
        "log_level": 2,
        **more,
    }
