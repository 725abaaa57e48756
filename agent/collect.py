"""What the agent measures: the known metrics of this machine, declared as data in one table, every real
filesystem, the processes using the most CPU and memory, and the readings of agent/readings.py."""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from stat import S_ISDIR
from typing import NamedTuple

import psutil

from agent.kernel import Roots
from agent.log_once import Once
from agent.readings import Readings
from agent.smart import EVERY_S as SMART_EVERY_S
from agent.vocabulary import DEVICE_RE, below, is_disk
from agent.wire import (
    MAX_FILESYSTEMS,
    MAX_MOUNT_POINT,
    MAX_PROCESS_CPU,
    MAX_PROCESS_NAME,
    MAX_PROCESSES,
)

log = logging.getLogger(__name__)

# Chips that measure the CPU itself, best first, and the label of the whole package on Intel; other
# sensors (disks, Wi-Fi, the battery) are a last resort.
_CPU_SENSOR_CHIPS = ("coretemp", "k10temp", "cpu_thermal")
_CPU_SENSOR_LABEL = "Package id 0"
# Loopback by name, for platforms where psutil reports no interface flags (Windows).
_LOOPBACK_NAME_RE = re.compile(r"lo\d*|Loopback Pseudo-Interface.*")


@dataclass(frozen=True)
class Metric:
    """One metric: its wire name, how to read it, and how the reading becomes the value sent."""

    name: str
    read: Callable[[], float]
    rate: bool = False  # the reading is a growing counter; the value sent is its change per second
    percent: bool = False  # clamped to 0..100


def _cpu_freq_mhz() -> float:
    # A zero means the platform does not know the frequency: send nothing rather than a made-up 0.
    current = psutil.cpu_freq().current
    if not current > 0:
        raise LookupError("CPU frequency is not reported")
    return current


def _load_1m() -> float:
    return os.getloadavg()[0] / (psutil.cpu_count() or 1)


def _cpu_temp_c() -> float:
    chips = psutil.sensors_temperatures()
    for chip in _CPU_SENSOR_CHIPS:
        if entries := chips.get(chip):
            package = [t.current for t in entries if t.label == _CPU_SENSOR_LABEL]
            return package[0] if package else max(t.current for t in entries)
    readings = [t.current for entries in chips.values() for t in entries]
    if not readings:
        raise LookupError("no temperature sensor")
    return max(readings)


def _is_loopback(name: str, flags: str) -> bool:
    return "loopback" in flags.split(",") or bool(_LOOPBACK_NAME_RE.fullmatch(name))


def _net_bytes(field: str) -> float:
    """Bytes sent or received (`field`) over every interface but loopback.

    Traffic a machine sends to itself (the bot and Kafka on one host) never leaves it; counting it would
    show a busy network on an idle machine, and count each byte twice (sent and received).
    """
    stats = psutil.net_if_stats()
    counters = {
        name: nic
        for name, nic in psutil.net_io_counters(pernic=True).items()
        if not _is_loopback(name, stats[name].flags if name in stats else "")
    }
    if not counters:
        raise LookupError("no network interface besides loopback")
    return float(sum(getattr(nic, field) for nic in counters.values()))


METRICS: tuple[Metric, ...] = (
    Metric("cpu_percent", lambda: psutil.cpu_percent(interval=None), percent=True),
    Metric("cpu_freq_mhz", _cpu_freq_mhz),
    Metric("load_1m", _load_1m),
    Metric("mem_percent", lambda: psutil.virtual_memory().percent, percent=True),
    Metric("swap_percent", lambda: psutil.swap_memory().percent, percent=True),
    Metric("disk_percent", lambda: psutil.disk_usage("/").percent, percent=True),
    Metric("disk_read_bps", lambda: psutil.disk_io_counters().read_bytes, rate=True),
    Metric("disk_write_bps", lambda: psutil.disk_io_counters().write_bytes, rate=True),
    Metric("net_sent_bps", lambda: _net_bytes("bytes_sent"), rate=True),
    Metric("net_recv_bps", lambda: _net_bytes("bytes_recv"), rate=True),
    Metric("cpu_temp_c", _cpu_temp_c),
    Metric("process_count", lambda: len(psutil.pids())),
    Metric("uptime_s", lambda: time.time() - psutil.boot_time()),
)


@dataclass(frozen=True)
class FilesystemFilter:
    """Which mounted filesystems are reported: every one but the pseudo types and mount points, with the
    agent's --fs-include and --fs-exclude (types such as `nfs`, or mount points such as `/boot/efi`)."""

    include: frozenset[str] = frozenset()  # types, and mount points (exactly)
    exclude: frozenset[str] = frozenset()  # types, and mount points (with all below them)

    def reports(self, mount: str, fstype: str) -> bool:
        if mount in self.include:
            return True
        excluded_points = {e for e in self.exclude if e.startswith("/")}
        if below(mount, excluded_points) or fstype in self.exclude:
            return False
        if fstype in self.include:
            return True
        return is_disk(mount, fstype)


class Reading(NamedTuple):
    """One sample of this machine, in the order of agent/wire.encode's arguments: its metrics, its filesystems
    (percent used by mount point) and its top processes ("cpu"/"memory" -> (name, pid, percent)), empty where
    there are none; its readings (reading -> object -> value, agent/readings.py), their notes, and the sources it
    could not read with why."""

    metrics: dict[str, float]
    filesystems: dict[str, float]
    processes: dict[str, list[tuple[str, int, float]]]
    readings: dict[str, dict[str, float]]
    notes: dict[str, dict[str, str]]
    unreadable: dict[str, str]


def _clean_name(name: str) -> str:
    """A process name as the wire format takes it: printable, at most MAX_PROCESS_NAME characters."""
    shown = "".join(c if c.isprintable() else "?" for c in name[:MAX_PROCESS_NAME])
    return shown or "?"


@dataclass
class TopProcesses:
    """The programs using the most CPU and memory, in one pass over the process table per sample.

    Processes of one name are added up, with the pid of the busiest: sixteen `stress-ng-cpu` workers at 12 %
    each are the load, not the single `python` at 58 %. psutil keeps a Process object per running process
    between passes (process_iter's cache), so a pass reads two small files per process (/proc/<pid>/stat and
    statm on Linux). CPU use is the change of each process's CPU time since the previous pass (kept here), as
    top shows it: 100 % is one CPU.
    """

    top: int = MAX_PROCESSES
    _cpu: dict[int, tuple[psutil.Process, float]] = field(default_factory=dict)  # pid -> (process, CPU seconds)
    _then: float | None = None

    def read(self) -> dict[str, list[tuple[str, int, float]]]:
        now = time.monotonic()
        elapsed = None if self._then is None else now - self._then
        self._then = now
        total_memory = psutil.virtual_memory().total
        seen: dict[int, tuple[psutil.Process, float]] = {}
        by_cpu: dict[str, list[float]] = {}  # name -> [total, the busiest one's, its pid]
        by_memory: dict[str, list[float]] = {}
        for process in psutil.process_iter(["name", "cpu_times", "memory_info"], ad_value=None):
            info = process.info
            times, memory = info["cpu_times"], info["memory_info"]
            name = _clean_name(info["name"] or "")
            if times is not None:
                cpu = times.user + times.system
                seen[process.pid] = (process, cpu)
                before = self._cpu.get(process.pid)
                # The same Process object: the same process (psutil makes a new one for a reused pid).
                if elapsed and before is not None and before[0] is process and cpu > before[1]:
                    _add(by_cpu, name, 100.0 * (cpu - before[1]) / elapsed, process.pid)
            if memory is not None and memory.rss > 0 and total_memory > 0:
                _add(by_memory, name, 100.0 * memory.rss / total_memory, process.pid)
        self._cpu = seen
        top: dict[str, list[tuple[str, int, float]]] = {}
        for kind, found in (("cpu", by_cpu), ("memory", by_memory)):
            best = sorted(found.items(), key=lambda item: item[1][0], reverse=True)[:self.top]
            high = MAX_PROCESS_CPU if kind == "cpu" else 100.0
            kept = [(name, int(pid), round(min(total, high), 1)) for name, (total, _most, pid) in best]
            if kept := [entry for entry in kept if entry[2] > 0]:
                top[kind] = kept
        return top


def _add(totals: dict[str, list[float]], name: str, percent: float, pid: int) -> None:
    """Add a process's use to its name's total; the name keeps the pid of its busiest process."""
    entry = totals.get(name)
    if entry is None:
        totals[name] = [percent, percent, pid]
        return
    entry[0] += percent
    if percent > entry[1]:
        entry[1], entry[2] = percent, pid


class Collector:
    """Samples the metrics this machine has; one that fails here is left out, never sent as 0.

    `roots` says where the machine's /proc, /sys and / are (the agent's --procfs, --sysfs, --rootfs); psutil reads
    that /proc too, which is one setting for the whole process (psutil.PROCFS_PATH), so an agent has one collector.
    `smart_every_s` is how often the disks' SMART is read (the agent's --smart-interval).
    """

    def __init__(self, metrics: Sequence[Metric] = METRICS, filesystems: FilesystemFilter | None = FilesystemFilter(),
                 processes: bool = True, roots: Roots | None = None, smart_every_s: float = SMART_EVERY_S) -> None:
        roots = roots or Roots()
        psutil.PROCFS_PATH = str(roots.procfs)
        self._metrics = tuple(metrics)
        self._filter = filesystems
        self._processes = TopProcesses() if processes else None
        self._readings = Readings(roots, smart_every_s)
        self._previous: dict[str, tuple[float, float]] = {}  # counter name -> (reading, monotonic time)
        self._unavailable = Once(log, logging.INFO)  # by what is not available, for good
        # psutil measures CPU use since the previous call; this first call starts the clock.
        psutil.cpu_percent(interval=None)

    def read(self) -> Reading:
        """The current metrics, filesystems, top processes and readings. `disk_percent` is the fullest filesystem;
        rates, processes' CPU use and readings since the previous sample need a previous sample, so the first has
        none of them."""
        try:
            mounts: dict[str, str] | str = self.mounts()
        except Exception as exc:
            self._report_once("filesystems", f"{type(exc).__name__}: {exc}")
            mounts = f"the mount table cannot be read ({type(exc).__name__}: {exc})"
        filesystems = self.filesystems(mounts) if isinstance(mounts, dict) else {}
        metrics = self.sample()
        if filesystems and "disk_percent" in metrics:
            metrics["disk_percent"] = max(filesystems.values())
        processes: dict[str, list[tuple[str, int, float]]] = {}
        if self._processes is not None:
            try:
                processes = self._processes.read()
            except Exception as exc:
                self._report_once("processes", f"{type(exc).__name__}: {exc}")
        sampled = self._readings.read(mounts)
        metrics.update(sampled.metrics)
        return Reading(metrics, filesystems, processes, sampled.readings, sampled.notes, sampled.unreadable)

    def mounts(self) -> dict[str, str]:
        """The real filesystems to report, by mount point, with their mount options ("rw,relatime"); a filesystem
        mounted at several places (bind mounts) once, at its shortest mount point. Raises when the mount table
        cannot be read."""
        if self._filter is None:
            return {}
        by_device: dict[int, tuple[str, str]] = {}  # st_dev -> (mount point, options)
        for part in psutil.disk_partitions(all=True):
            mount = part.mountpoint
            if not self._filter.reports(mount, part.fstype):
                continue
            if len(mount) > MAX_MOUNT_POINT or not mount.isprintable():
                self._report_once(f"filesystem {mount[:60]!r}", "its mount point is too long or not printable")
                continue
            try:
                stat = os.stat(mount)
            except OSError as exc:
                self._report_once(f"filesystem {mount}", f"{type(exc).__name__}: {exc}")
                continue
            if not S_ISDIR(stat.st_mode):  # a file bind-mounted over another (a container's /etc/hosts)
                continue
            if stat.st_dev not in by_device or len(mount) < len(by_device[stat.st_dev][0]):
                by_device[stat.st_dev] = (mount, part.opts)
        return dict(by_device.values())

    def filesystems(self, mounts: dict[str, str]) -> dict[str, float]:
        """Percent used of each filesystem of `mounts` by mount point, the fullest MAX_FILESYSTEMS."""
        used: dict[str, float] = {}
        for mount in mounts:
            try:
                usage = psutil.disk_usage(mount)
            except Exception as exc:
                self._report_once(f"filesystem {mount}", f"{type(exc).__name__}: {exc}")
                continue
            if usage.total > 0:
                used[mount] = min(100.0, max(0.0, usage.percent))
        fullest = sorted(used.items(), key=lambda item: (-item[1], item[0]))[:MAX_FILESYSTEMS]
        return dict(sorted(fullest))

    def sample(self) -> dict[str, float]:
        """The current values by metric name; rates need a previous sample, so the first has none."""
        values: dict[str, float] = {}
        for metric in self._metrics:
            try:
                reading = float(metric.read())
            except Exception as exc:
                self._report_once(metric.name, f"{type(exc).__name__}: {exc}")
                continue
            if not math.isfinite(reading):
                self._report_once(metric.name, f"not a finite number ({reading})")
                continue
            if metric.rate:
                rate = self._rate(metric.name, reading)
                if rate is not None:
                    values[metric.name] = rate
            elif metric.percent:
                values[metric.name] = min(100.0, max(0.0, reading))
            else:
                values[metric.name] = reading
        return values

    def _rate(self, name: str, reading: float) -> float | None:
        """Change per second of a counter since the previous sample, or None when there is none."""
        now = time.monotonic()
        previous = self._previous.get(name)
        self._previous[name] = (reading, now)
        if previous is None:
            return None
        before, then = previous
        # A counter that went backwards wrapped or was reset (a NIC went down): no honest rate now.
        if reading < before or now <= then:
            return None
        return (reading - before) / (now - then)

    def _report_once(self, name: str, reason: str) -> None:
        self._unavailable.say(name, "%s is not available on this machine (%s); not sending it", name, reason)


def default_device_id() -> str:
    """This machine's host name, made into a valid device id."""
    device = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64]
    return device if DEVICE_RE.fullmatch(device) else "host"
