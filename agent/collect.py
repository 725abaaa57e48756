"""What the agent measures: the known metrics of this machine, declared as data in one table."""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil

from agent.wire import DEVICE_RE

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


class Collector:
    """Samples the metrics this machine has; one that fails here is left out, never sent as 0."""

    def __init__(self, metrics: Sequence[Metric] = METRICS) -> None:
        self._metrics = tuple(metrics)
        self._previous: dict[str, tuple[float, float]] = {}  # counter name -> (reading, monotonic time)
        self._reported: set[str] = set()
        # psutil measures CPU use since the previous call; this first call starts the clock.
        psutil.cpu_percent(interval=None)

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
        if name not in self._reported:
            self._reported.add(name)
            log.info("%s is not available on this machine (%s); not sending it", name, reason)


def default_device_id() -> str:
    """This machine's host name, made into a valid device id."""
    device = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64]
    return device if DEVICE_RE.fullmatch(device) else "host"
