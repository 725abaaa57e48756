"""The kernel's own files under /proc and /sys, and its clock: one small parser per file, giving numbers.

Each reads under the roots the agent was given (--procfs, --sysfs, --rootfs), so a test or a container can point
it at another tree, as node_exporter's --path.procfs and --path.sysfs do. A file that is missing or unreadable
raises OSError; one that is not what the kernel writes raises ValueError. What the numbers mean for a machine is
agent/readings.py's business.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple


class Unreadable(Exception):
    """A source the agent cannot read on this machine; the text says why, in a few words an operator understands
    ("no systemd on this machine", "permission denied reading /dev/kmsg")."""


@dataclass(frozen=True)
class Roots:
    """Where the machine's /proc, /sys and / are: themselves, or a tree of a test or of a container's host."""

    procfs: Path = Path("/proc")
    sysfs: Path = Path("/sys")
    rootfs: Path = Path("/")

    def proc(self, *parts: str) -> Path:
        return self.procfs.joinpath(*parts)

    def sys(self, *parts: str) -> Path:
        return self.sysfs.joinpath(*parts)

    def root(self, *parts: str) -> Path:
        return self.rootfs.joinpath(*parts)


def why(exc: OSError) -> str:
    """An OSError in the words of an operator: what went wrong with which file."""
    where = exc.filename if exc.filename is not None else "it"
    if isinstance(exc, PermissionError):
        return f"permission denied reading {where}"
    if isinstance(exc, FileNotFoundError):
        return f"no {where}"
    return f"{exc.strerror or type(exc).__name__} reading {where}"


def text(path: Path) -> str:
    """A small file of /proc or /sys, whole."""
    with open(path, encoding="utf-8", errors="replace") as file:
        return file.read()


def number(path: Path) -> int:
    """A file that holds one whole number (sysfs attributes, /proc/sys settings)."""
    return int(text(path).split()[0])


def key_values(path: Path) -> dict[str, int]:
    """A file of `name value` lines, as /proc/vmstat."""
    values = {}
    for line in text(path).splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[name] = int(value)
    return values


def pressure_full_us(path: Path) -> int:
    """Microseconds in which every task waited for the resource since boot: the `full total=` of a PSI file."""
    for line in text(path).splitlines():
        if line.startswith("full "):
            return int(line.rpartition("total=")[2])
    raise ValueError(f"{path} has no 'full' line")


def file_nr(path: Path) -> tuple[int, int]:
    """The file table (/proc/sys/fs/file-nr): handles allocated, and the most there may be."""
    allocated, _unused, most = (int(field) for field in text(path).split())
    return allocated, most


def tasks(path: Path) -> int:
    """Processes and threads that exist (the total of /proc/loadavg's fourth field): each holds a process id."""
    return int(text(path).split()[3].partition("/")[2])


class NetCounters(NamedTuple):
    """Packets of one interface since it came up, both ways, with how many had errors or were dropped."""

    packets: int
    errors: int
    drops: int


def net_dev(path: Path) -> dict[str, NetCounters]:
    """/proc/net/dev, by interface."""
    found = {}
    for line in text(path).splitlines()[2:]:
        name, _, counts = line.partition(":")
        fields = counts.split()
        if len(fields) < 12:
            raise ValueError(f"{path}: a line of {len(fields)} fields")
        rx_packets, rx_errs, rx_drop = (int(f) for f in fields[1:4])
        tx_packets, tx_errs, tx_drop = (int(f) for f in fields[9:12])
        found[name.strip()] = NetCounters(rx_packets + tx_packets, rx_errs + tx_errs, rx_drop + tx_drop)
    return found


# Whole disks by name, where there is no /sys/block to ask: not a partition (sda1, nvme0n1p1, mmcblk0p1).
_PARTITION_RE = re.compile(r"(?:[hsv]d[a-z]+|xvd[a-z]+)\d+|.*\dp\d+")
# Disks that are memory or files, not hardware: their queue says nothing of the machine's disks.
_NOT_HARDWARE_RE = re.compile(r"(?:loop|ram|zram|fd)\d+")


def io_weighted_ms(diskstats: Path, block: Path) -> dict[str, int]:
    """Milliseconds spent in I/O weighted by the I/Os in flight (/proc/diskstats' 11th statistic, node_exporter's
    node_disk_io_time_weighted_seconds_total), of each whole hardware disk: /sys/block lists those (no
    partitions); where it cannot be read, the names say which are partitions."""
    try:
        whole: set[str] | None = set(os.listdir(block))
    except OSError:
        whole = None
    found = {}
    for line in text(diskstats).splitlines():
        fields = line.split()
        if len(fields) < 14:
            continue
        name = fields[2]
        if _NOT_HARDWARE_RE.fullmatch(name):
            continue
        if (name.replace("/", "!") not in whole) if whole is not None else bool(_PARTITION_RE.fullmatch(name)):
            continue
        found[name] = int(fields[13])
    return found


class MdArray(NamedTuple):
    """An md array as /proc/mdstat and /sys/block/<md>/md/ show it."""

    active: int  # member disks in sync
    required: int  # disks the array is made of
    failed: list[str]  # faulty members, by name


_MD_HEADER_RE = re.compile(r"(md\w+) : (\w+)")
_MD_MEMBER_RE = re.compile(r"([^\s\[]+)\[\d+\]((?:\([A-Z]\))*)")
_MD_DISKS_RE = re.compile(r"\[(\d+)/(\d+)\]")


def md_arrays(mdstat: Path, block: Path) -> dict[str, MdArray]:
    """The md arrays of /proc/mdstat: `[required/in sync]` where the level has redundancy, members marked (F) for
    faulty and (S) for spare. sysfs adds what mdstat leaves out when it can be read (an array's `raid_disks`, a
    member whose state is `faulty`)."""
    arrays: dict[str, MdArray] = {}
    lines = text(mdstat).splitlines()
    for at, line in enumerate(lines):
        header = _MD_HEADER_RE.match(line)
        if header is None:
            continue
        name, state = header.groups()
        members = {m[1]: m[2] for m in _MD_MEMBER_RE.finditer(line.partition(" : ")[2])}
        failed = {member for member, flags in members.items() if "(F)" in flags} | _md_faulty(block / name / "md")
        working = [m for m, flags in members.items() if "(F)" not in flags and "(S)" not in flags and m not in failed]
        disks = _MD_DISKS_RE.search(lines[at + 1]) if at + 1 < len(lines) else None
        if disks is not None:
            required, active = int(disks[1]), int(disks[2])
        elif state == "active":  # no redundancy (raid0, linear): every member is needed
            required, active = _md_raid_disks(block / name / "md") or len(working) + len(failed), len(working)
        else:  # inactive: assembled from too few disks (each shown as a spare), or stopped; it serves nothing
            required, active = _md_raid_disks(block / name / "md") or len(members), 0
        arrays[name] = MdArray(active, required, sorted(failed))
    return arrays


def _md_faulty(md: Path) -> set[str]:
    """Members sysfs marks faulty; none where sysfs cannot say."""
    faulty = set()
    try:
        members = [entry for entry in os.listdir(md) if entry.startswith("dev-")]
    except OSError:
        return faulty
    for member in members:
        try:
            if "faulty" in text(md / member / "state").replace(",", " ").split():
                faulty.add(member.removeprefix("dev-"))
        except OSError:
            continue
    return faulty


def _md_raid_disks(md: Path) -> int | None:
    try:
        return number(md / "raid_disks")
    except (OSError, ValueError, IndexError):
        return None


def listing(folder: Path) -> list[str]:
    """The names in a folder, sorted; none when the folder does not exist (the machine has no such thing)."""
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        return []


def bonds(net: Path) -> dict[str, dict[str, str]]:
    """Each bond's links and their MII state ("up", "down"), from /sys/class/net: bonding_masters lists the bonds
    (no file: the bonding driver is not loaded, so there is none)."""
    try:
        masters = text(net / "bonding_masters").split()
    except FileNotFoundError:
        return {}
    found = {}
    for bond in masters:
        found[bond] = {link: _mii_status(net, bond, link) for link in text(net / bond / "bonding" / "slaves").split()}
    return found


def _mii_status(net: Path, bond: str, link: str) -> str:
    """A bonded link's state as its bond sees it: under lower_<link> (slave_<link> on old kernels), as
    node_exporter reads it, or under the link itself."""
    for folder in (net / bond / f"lower_{link}", net / bond / f"slave_{link}", net / link):
        try:
            return text(folder / "bonding_slave" / "mii_status").strip()
        except FileNotFoundError:
            continue
    raise FileNotFoundError(2, "No such file or directory", str(net / link / "bonding_slave" / "mii_status"))


def temperature_alarms(hwmon: Path) -> dict[str, int]:
    """Every temperature sensor that has a critical alarm, as "chip/label" ("coretemp/Core 0"), and whether the
    alarm is on (1) or off (0)."""
    alarms = {}
    for chip in listing(hwmon):
        folder = hwmon / chip
        try:
            files = os.listdir(folder)
            name = text(folder / "name").strip() if "name" in files else chip
        except OSError:
            continue
        for alarm in sorted(f for f in files if f.startswith("temp") and f.endswith("_crit_alarm")):
            sensor = alarm.removesuffix("_crit_alarm")
            try:
                label = text(folder / f"{sensor}_label").strip() if f"{sensor}_label" in files else sensor
                alarms[f"{name}/{label or sensor}"] = 1 if number(folder / alarm) else 0
            except (OSError, ValueError, IndexError):  # a sensor that cannot be read now is not an alarm
                continue
    return alarms


# --- the clock --------------------------------------------------------------------------------------------------

STA_UNSYNC = 0x0040  # the kernel's clock is not synchronised to a time server
STA_NANO = 0x2000  # the offset is in nanoseconds, not microseconds
TIME_ERROR = 5  # adjtimex's answer when the clock is not synchronised


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> (Linux)."""

    _fields_ = (
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long), ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long), ("status", ctypes.c_int), ("constant", ctypes.c_long),
        ("precision", ctypes.c_long), ("tolerance", ctypes.c_long), ("time", _Timeval), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int), ("_reserved", ctypes.c_int * 11),
    )


class Clock(NamedTuple):
    """The kernel's view of its clock's discipline, as `adjtimex --print` or node_exporter's timex collector."""

    synced: bool
    offset_s: float  # how far the clock is from the time server's, as last estimated
    maxerror_s: float  # the most the clock may be wrong by


@functools.cache
def _adjtimex() -> Callable[..., int]:
    """The C library's adjtimex, looked up once."""
    try:
        return ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        raise Unreadable("this system has no adjtimex (not Linux)") from None


def clock() -> Clock:
    """Ask the kernel about its clock with adjtimex(2) in read-only mode (modes 0): any user may."""
    adjtimex = _adjtimex()
    timex = _Timex()  # modes 0: read only, which needs no privilege
    state = adjtimex(ctypes.byref(timex))
    if state < 0:
        errno = ctypes.get_errno()
        reason = os.strerror(errno)
        if errno == 1:  # EPERM: no kernel refuses a read-only call; a seccomp filter does
            reason += " (a system call filter refuses adjtimex: systemd's ProtectClock= does)"
        raise Unreadable(f"adjtimex failed: {reason}")
    scale = 1e9 if timex.status & STA_NANO else 1e6
    synced = state != TIME_ERROR and not timex.status & STA_UNSYNC
    return Clock(synced, timex.offset / scale, timex.maxerror / 1e6)
