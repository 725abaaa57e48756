"""The words the agent and the bot share, so that both read a machine the same way; the agent ships alone with
them. The metrics and their bounds, the device-id pattern, the file systems that are not disks, how a producer
talks to Kafka (the agent's, and the bot's remote-write sink in fleet mode), and the error a bad setting raises."""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Collection
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
