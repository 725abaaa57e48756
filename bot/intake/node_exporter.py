"""node_exporter's series, as Prometheus remote write brings them, become Rigwatch samples: one per machine and
scrape. Pure: no I/O, no clock of its own; the receiver (bot/intake/remote_write.py) hands it series and time.

A scrape's series share its timestamp, so (device, ts) gathers them. Prometheus may split one scrape over
several writes (its shards, its batches): a scrape is handed out as a sample once it holds as many series as
the device's last whole scrape did, or once it has waited `grace_s` for the rest. Series that come for a scrape
handed out already are left out (its sample is stored), and tell how many a whole scrape now has. Counters
become rates against the device's newest earlier scrape, kept by its time: a retried write computes the same
rates again. The readings of the machine's objects (md arrays, units, interfaces, …) are bot/intake/node_readings.py's;
the disks' SMART, bot/intake/smart_readings.py's.

smartctl_exporter is a target of its own, scraped at its own times: its scrape is not a sample of its own but joins
the machine's next ones (for SMART_KEPT_S), as the agent sends its last SMART answer with each sample; a machine
whose node_exporter does not report has a sample of each. It is whole at as many series as its own last whole one.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from agent.vocabulary import BOUNDS, DEVICE_RE, is_disk
from agent.wire import MAX_AHEAD_S, TS_FROM, TS_TO, Sample
from bot.intake import node_readings, smart_readings
from bot.intake.node_readings import Key, Labels
from bot.intake.smart_readings import Smart

MAX_FILESYSTEMS = 32  # the fullest ones are kept
MAX_MOUNT_CHARS = 256
HISTORY = 4  # earlier scrapes kept per device for rates: enough for a retry and a scrape that came late
MAX_RATE_WINDOW_S = 900.0  # a rate over a longer gap (the machine was off) says nothing about now
MAX_DEVICES = 100_000
SMART_KEPT_S = 900.0  # a machine's smartctl_exporter scrape joins its samples this long: SMART changes slowly
TEMP_LOW, TEMP_HIGH = BOUNDS["cpu_temp_c"]
RATE_HIGH = BOUNDS["disk_read_bps"][1]


def _cpu(labels: Labels) -> Key | None:
    return ("cpu", labels.get("cpu", ""), labels.get("mode", ""))


def _filesystem(what: str) -> Callable[[Labels], Key | None]:
    def key(labels: Labels) -> Key | None:
        mount = labels.get("mountpoint", "")
        if not mount or len(mount) > MAX_MOUNT_CHARS or not mount.isprintable() \
                or not is_disk(mount, labels.get("fstype", "")):
            return None
        return ("fs", mount, what)
    return key


def _per_device(kind: str, skip: frozenset[str] = frozenset()) -> Callable[[Labels], Key | None]:
    def key(labels: Labels) -> Key | None:
        device = labels.get("device", "")
        return None if device in skip else (kind, device)
    return key


def _gauge(*key: str) -> Callable[[Labels], Key | None]:
    return lambda labels: key


def _sensor(kind: str, *names: str) -> Callable[[Labels], Key | None]:
    return lambda labels: (kind, *(labels.get(name, "") for name in names))


LOOPBACK = frozenset({"lo"})
# The series Rigwatch reads, by metric name (node_exporter 1.x): each gives the key of its value in a scrape,
# or None for a series to leave out; those of the readings are node_readings'. Every other series of a write is
# dropped unread.
READERS: dict[str, Callable[[Labels], Key | None]] = {
    "node_cpu_seconds_total": _cpu,
    "node_load1": _gauge("load1"),
    "node_memory_MemTotal_bytes": _gauge("mem", "MemTotal"),
    "node_memory_MemAvailable_bytes": _gauge("mem", "MemAvailable"),
    "node_memory_SwapTotal_bytes": _gauge("mem", "SwapTotal"),
    "node_memory_SwapFree_bytes": _gauge("mem", "SwapFree"),
    "node_filesystem_size_bytes": _filesystem("size"),
    "node_filesystem_avail_bytes": _filesystem("avail"),
    "node_filesystem_free_bytes": _filesystem("free"),
    "node_filesystem_readonly": _filesystem("readonly"),
    "node_filesystem_files": _filesystem("files"),
    "node_filesystem_files_free": _filesystem("files_free"),
    "node_hwmon_temp_celsius": _sensor("temp", "chip", "sensor"),
    "node_thermal_zone_temp": _sensor("temp", "zone", "type"),
    "node_network_receive_bytes_total": _per_device("net_recv", LOOPBACK),
    "node_network_transmit_bytes_total": _per_device("net_sent", LOOPBACK),
    "node_disk_read_bytes_total": _per_device("disk_read"),
    "node_disk_written_bytes_total": _per_device("disk_write"),
    "node_boot_time_seconds": _gauge("boot"),
    # The share of time every task stalled for memory or I/O (PSI "full").
    "node_pressure_memory_stalled_seconds_total": _gauge("psi", "psi_memory_full_percent"),
    "node_pressure_io_stalled_seconds_total": _gauge("psi", "psi_io_full_percent"),
    **node_readings.READERS,
    **smart_readings.READERS,
}
# Series read only when they have this label (and, True, a value not 0): the others are dropped unread.
ONLY_WITH = {**node_readings.ONLY_WITH, **smart_readings.ONLY_WITH}
# Counter families -> the rate metric each becomes (cpu is a share of time, not a rate).
RATES = {"net_recv": "net_recv_bps", "net_sent": "net_sent_bps", "disk_read": "disk_read_bps",
         "disk_write": "disk_write_bps"}
COUNTERS = frozenset({"cpu", "psi", *RATES, *node_readings.COUNTERS})
# CPU modes whose share of all CPU time is a metric of its own.
CPU_SHARES = {"steal": "cpu_steal_percent", "iowait": "cpu_iowait_percent"}


@dataclass(slots=True)
class Scrape:
    """The series of one device's scrape gathered so far: key -> value."""

    device: str
    ts_ms: int
    values: dict[Key, float] = field(default_factory=dict)
    since: float = 0.0  # when its first series came (the receiver's clock)
    recovered: bool = False  # held over from before a restart: it waits out its grace for the rest


class Verdict(Enum):
    """What became of a pending scrape (NodeExporter.settle)."""

    WAITING = "waiting"  # for the rest of its series
    READY = "ready"  # to be stored: whole, or it waited out its grace
    LATE = "late"  # it came after its scrape was stored: left out
    GONE = "gone"  # nothing pending


class Settled(NamedTuple):
    verdict: Verdict
    scrape: Scrape | None = None
    sample: Sample | None = None  # READY: None when it gave none
    # READY, LATE: what a whole scrape of its device has now (LATE: when it grew); 0 for smartctl_exporter's own
    # scrape, which says nothing of the size of node_exporter's.
    series: int | None = None


@dataclass(slots=True)
class _Device:
    # Series of its last whole scrape: of node_exporter's (False), of smartctl_exporter's alone (True).
    expected: dict[bool, int] = field(default_factory=lambda: {False: 0, True: 0})
    pending: dict[int, Scrape] = field(default_factory=dict)  # ts_ms -> scrape not handed out yet
    handed: dict[int, int] = field(default_factory=dict)  # ts_ms -> series, of the newest scrapes handed out
    history: list[tuple[int, dict[str, dict[Key, float]]]] = field(default_factory=list)  # (ts_ms, counters)
    smart: tuple[int, Smart] | None = None  # its last smartctl_exporter scrape, read: (ts_ms, SMART)
    sampled: bool = False  # a scrape of its node_exporter made a sample: smartctl_exporter's join those


def key(name: str, labels: Labels) -> Key | None:
    """Where a series' value goes in its scrape; None for a series Rigwatch does not read."""
    reader = READERS.get(name)
    return reader(labels) if reader is not None else None


def device_name(value: str) -> str | None:
    """The device a label value names: without a port (`host:9100`, `[::1]:9100`); None when it breaks the
    wire format's rule for device ids."""
    host, colon, port = value.rpartition(":")
    if colon and port.isdigit():
        value = host.removeprefix("[").removesuffix("]")
    return value if DEVICE_RE.fullmatch(value) else None


class NodeExporter:
    """Series in, samples out, per device. Not thread-safe: the receiver holds a lock around it."""

    def __init__(self, grace_s: float = 10.0) -> None:
        self.grace_s = grace_s
        self._devices: dict[str, _Device] = {}
        self._waiting: set[str] = set()  # devices with pending scrapes

    def add(self, device: str, ts_ms: int, values: Iterable[tuple[Key, float]], now: float) -> None:
        """Values of `device`'s scrape at `ts_ms`, each under its key (`key`), all finite."""
        state = self._devices.get(device)
        if state is None:
            if len(self._devices) >= MAX_DEVICES:
                self._forget_one()
            state = self._devices[device] = _Device()
        scrape = state.pending.get(ts_ms)
        if scrape is None:
            scrape = state.pending[ts_ms] = Scrape(device, ts_ms, since=now)
            self._waiting.add(device)
        scrape.values.update(values)

    def _forget_one(self) -> None:
        """Make room: the device heard from longest ago with nothing pending goes (dicts keep insertion order)."""
        for name in self._devices:
            if name not in self._waiting:
                del self._devices[name]
                return

    def take(self, now: float, everything: bool = False) -> list[tuple[Scrape, Sample | None]]:
        """The scrapes ready to be stored, each with its sample (None when it gave none): whole ones, those that
        waited `grace_s`, or (`everything`) all; and, without a sample, series that came for a scrape handed out
        already. They leave the pending ones; `restore` puts them back."""
        ready: list[tuple[Scrape, Sample | None]] = []
        for device in sorted(self._waiting):
            for ts_ms in sorted(self._devices[device].pending):
                settled = self.settle(device, ts_ms, now, everything=everything)
                if settled.verdict is not Verdict.WAITING:
                    ready.append((settled.scrape, settled.sample))
        return ready

    def settle(self, device: str, ts_ms: int, now: float, *, fresh: int | None = None,
               more: Iterable[tuple[Key, float]] = (), since: float | None = None, expected: int | None = None,
               taken: int | None = None, everything: bool = False) -> Settled:
        """Decide on the device's pending scrape at `ts_ms`, told what other receivers know of it: `more` series
        they hold of it, since `since`; `expected`, the series of a whole scrape of the device as they stored it
        last; `taken`, how many it had when one of them stored it. `fresh`: how many of its series came just now
        (by default, all it has). The scrape leaves the pending ones unless it waits; `restore` puts it back."""
        state = self._devices.get(device)
        scrape = state.pending.get(ts_ms) if state is not None else None
        if state is None or scrape is None:
            return Settled(Verdict.GONE)
        handed = taken if taken is not None else state.handed.get(ts_ms)
        if handed is not None:
            self._leave(device, state, ts_ms)
            count = len(scrape.values) if fresh is None else fresh
            # The rest of a scrape that seemed whole: a whole one is bigger now. (As many series or more: a write
            # answered before, sent again.)
            if 0 < count < handed:
                own = smart_readings.alone_keys(scrape.values)
                state.expected[own] = handed + count
                self._handed(state, ts_ms, state.expected[own])
                return Settled(Verdict.LATE, scrape, series=0 if own else state.expected[own])
            return Settled(Verdict.LATE, scrape)
        scrape.values.update(more)
        if since is not None:
            scrape.since = min(scrape.since, since)
        count = len(scrape.values)
        own = smart_readings.alone_keys(scrape.values)  # smartctl_exporter's: a whole of its own
        if own:
            expected = None  # what other receivers stored last is node_exporter's whole
        size = state.expected[own] if expected is None else expected
        # After a restart the receiver alone does not know how big a whole scrape is: one kept from before waits.
        whole = count >= size and (expected is not None or not scrape.recovered)
        if not (whole or everything or now - scrape.since >= self.grace_s):
            return Settled(Verdict.WAITING, scrape)
        # A whole scrape can only raise what a whole one is; one that waited out its grace says the machine now
        # has fewer series (a file system unmounted).
        state.expected[own] = max(size, count) if whole else count
        self._leave(device, state, ts_ms)
        self._handed(state, ts_ms, count)
        return Settled(Verdict.READY, scrape, self._sample(state, scrape), 0 if own else count)

    def due(self, now: float, everything: bool = False) -> list[tuple[str, int]]:
        """The pending scrapes that waited out their grace (or, `everything`, all), as (device, ts in ms)."""
        return [(device, ts_ms) for device in sorted(self._waiting)
                for ts_ms, scrape in sorted(self._devices[device].pending.items())
                if everything or now - scrape.since >= self.grace_s]

    def _leave(self, device: str, state: _Device, ts_ms: int) -> None:
        del state.pending[ts_ms]
        if not state.pending:
            self._waiting.discard(device)

    @staticmethod
    def _handed(state: _Device, ts_ms: int, count: int) -> None:
        state.handed[ts_ms] = count
        if len(state.handed) > HISTORY:
            del state.handed[min(state.handed)]

    def restore(self, scrapes: Iterable[Scrape]) -> None:
        """Scrapes taken but not stored: pending again, merged with what came for them meanwhile."""
        for scrape in scrapes:
            state = self._devices.setdefault(scrape.device, _Device())
            state.handed.pop(scrape.ts_ms, None)
            newer = state.pending.get(scrape.ts_ms)
            if newer is not None:
                scrape.values.update(newer.values)
            state.pending[scrape.ts_ms] = scrape
            self._waiting.add(scrape.device)

    def waiting(self, device: str, ts_ms: int) -> Scrape | None:
        """The device's scrape at `ts_ms` when it waits for the rest of its series."""
        state = self._devices.get(device)
        return state.pending.get(ts_ms) if state is not None else None

    def pending(self) -> int:
        """Scrapes waiting for the rest of their series."""
        return sum(len(self._devices[device].pending) for device in self._waiting)

    def _sample(self, state: _Device, scrape: Scrape) -> Sample | None:
        values = scrape.values
        groups: dict[str, dict[Key, float]] = {}  # the scrape's values by kind of key
        for key, value in values.items():
            group = groups.get(key[0])
            if group is None:
                group = groups[key[0]] = {}
            group[key] = value
        smart = smart_readings.read(groups)
        if smart is not None and smart_readings.alone(groups):  # smartctl_exporter's own scrape
            state.smart = (scrape.ts_ms, smart)
            if state.sampled:
                return None  # it joins the machine's samples
        elif smart is None and state.smart is not None and abs(scrape.ts_ms - state.smart[0]) <= SMART_KEPT_S * 1000:
            smart = state.smart[1]
        counters = {kind: groups[kind] for kind in COUNTERS if kind in groups}
        fs: dict[str, dict[str, float]] = {}
        for (_kind, mount, part), value in groups.get("fs", {}).items():
            fs.setdefault(mount, {})[part] = value
        temps = [value for value in groups.get("temp", {}).values() if TEMP_LOW <= value <= TEMP_HIGH]
        metrics: dict[str, float] = {}
        cpu = counters.get("cpu")
        ts = scrape.ts_ms / 1000
        if cpu:
            metrics.update(self._cpu_shares(state, scrape.ts_ms, cpu))
            cpus = len({key[1] for key in cpu})
            load = values.get(("load1",))
            if load is not None and 0 <= load / cpus <= RATE_HIGH:
                metrics["load_1m"] = round(load / cpus, 4)
        if (used := _used(values.get(("mem", "MemAvailable")), values.get(("mem", "MemTotal")))) is not None:
            metrics["mem_percent"] = used
        swap_total = values.get(("mem", "SwapTotal"))
        if swap_total == 0:
            metrics["swap_percent"] = 0.0  # no swap is none used, as the agent says it
        elif (used := _used(values.get(("mem", "SwapFree")), swap_total)) is not None:
            metrics["swap_percent"] = used
        filesystems = {mount: used for mount, parts in fs.items() if parts.get("readonly") != 1
                       and (used := _disk_used(parts)) is not None}
        if len(filesystems) > MAX_FILESYSTEMS:
            filesystems = dict(sorted(filesystems.items(), key=lambda item: -item[1])[:MAX_FILESYSTEMS])
        if filesystems:
            metrics["disk_percent"] = max(filesystems.values())
        if temps:
            metrics["cpu_temp_c"] = max(temps)
        for kind, metric in RATES.items():
            if (rate := self._rate(state, scrape.ts_ms, kind, counters.get(kind))) is not None:
                metrics[metric] = rate
        if (stalls := self._increases(state, scrape.ts_ms, "psi", counters.get("psi"))) is not None:
            seconds, stalled = stalls
            metrics.update({key[1]: _percent(100.0 * value / seconds) for key, value in stalled.items()})
        boot = values.get(("boot",))
        if boot is not None and 0 <= ts - boot <= RATE_HIGH:
            metrics["uptime_s"] = round(ts - boot, 3)
        readings = node_readings.read(
            groups, fs, lambda kind: self._increases(state, scrape.ts_ms, kind, counters.get(kind)))
        self._remember(state, scrape.ts_ms, counters)
        notes = unreadable = None
        if smart is not None:  # copied: a smartctl_exporter scrape joins several samples
            readings.update({name: dict(disks) for name, disks in smart.readings.items()})
            notes = {name: dict(disks) for name, disks in smart.notes.items()} or None
            unreadable = dict(smart.unreadable) or None
        if not metrics and not readings and not unreadable:
            return None
        state.sampled |= bool(metrics)
        return Sample(scrape.device, ts, metrics, filesystems=filesystems or None, readings=readings or None,
                      notes=notes, unreadable=unreadable)

    @staticmethod
    def _earlier(state: _Device, ts_ms: int, kind: str) -> tuple[int, dict[Key, float]] | None:
        """The device's newest earlier scrape that had counters of `kind`, within MAX_RATE_WINDOW_S."""
        for then, counters in reversed(state.history):
            if then < ts_ms and kind in counters:
                return (then, counters[kind]) if ts_ms - then <= MAX_RATE_WINDOW_S * 1000 else None
        return None

    def _increases(self, state: _Device, ts_ms: int, kind: str,
                   now: dict[Key, float] | None) -> tuple[float, dict[Key, float]] | None:
        """(seconds, increase of each counter both scrapes have) since the device's earlier scrape; None without
        one or when a counter went down (the machine rebooted: no rate, no count this time)."""
        if not now or (earlier := self._earlier(state, ts_ms, kind)) is None:
            return None
        then, before = earlier
        grown: dict[Key, float] = {}
        for key, value in now.items():
            old = before.get(key)
            if old is None:
                continue
            if value < old:
                return None
            grown[key] = value - old
        return (ts_ms - then) / 1000, grown

    def _cpu_shares(self, state: _Device, ts_ms: int, cpu: dict[Key, float]) -> dict[str, float]:
        """The share of CPU time not idle since the earlier scrape, all CPUs together, in % (cpu_percent); and the
        share stolen by the hypervisor and spent waiting for I/O. (One pass over the CPUs' counters: a machine of
        64 CPUs has 512.)"""
        earlier = self._earlier(state, ts_ms, "cpu")
        if earlier is None:
            return {}
        before = earlier[1]
        spent: dict[str, float] = {}
        for key, value in cpu.items():
            old = before.get(key)
            if old is None:
                continue
            if value < old:
                return {}
            mode = key[2]
            spent[mode] = spent.get(mode, 0.0) + value - old
        total = sum(spent.values())
        if total <= 0:
            return {}
        shares = {"cpu_percent": round(min(100.0, max(0.0, 100.0 * (1.0 - spent.get("idle", 0.0) / total))), 1)}
        for mode, metric in CPU_SHARES.items():
            if mode in spent:
                shares[metric] = _percent(100.0 * spent[mode] / total)
        return shares

    def _rate(self, state: _Device, ts_ms: int, kind: str, now: dict[Key, float] | None) -> float | None:
        found = self._increases(state, ts_ms, kind, now)
        if found is None:
            return None
        seconds, grown = found
        rate = sum(grown.values()) / seconds
        return round(rate, 1) if rate <= RATE_HIGH else None

    @staticmethod
    def _remember(state: _Device, ts_ms: int, counters: dict[str, dict[Key, float]]) -> None:
        """Keep the scrape's counters by its time; a retried scrape replaces its own entry."""
        if not counters:
            return
        history = state.history
        at = bisect.bisect_left(history, ts_ms, key=lambda entry: entry[0])
        if at < len(history) and history[at][0] == ts_ms:
            history[at] = (ts_ms, counters)
        else:
            history.insert(at, (ts_ms, counters))
        del history[:-HISTORY]


def _percent(value: float) -> float:
    """A share in %, within 0 and 100, to 0.01 as the agent sends it."""
    return round(min(100.0, max(0.0, value)), 2)


def _used(available: float | None, total: float | None) -> float | None:
    """Percent used of a total of which `available` is free, to 0.1 as the agent (psutil) reports it."""
    if available is None or total is None or total <= 0:
        return None
    return round(min(100.0, max(0.0, 100.0 * (1.0 - available / total))), 1)


def _disk_used(parts: dict[str, float]) -> float | None:
    """Percent used of a filesystem as `df` and the agent show it: of the space users can have, what is used.
    The blocks reserved for root count on neither side (on a disk with many reserved, 1 - avail/size would
    read 68 % where `df` says 22 %); both say 100 % once nothing is available."""
    size, avail, free = parts.get("size"), parts.get("avail"), parts.get("free")
    if free is None or size is None or avail is None or not 0 <= free <= size:
        return _used(avail, size)
    return _used(avail, size - free + avail)


def ts_problem(ts_ms: int, now: float) -> str | None:
    """Why a sample's time is refused: out of the wire format's bounds, or too far ahead of the receiver's clock."""
    ts = ts_ms / 1000
    if not TS_FROM <= ts < TS_TO:
        return "ts is out of range (expected Unix seconds between 2000 and 2100)"
    if ts <= now + MAX_AHEAD_S:
        return None
    return (f"ts is {(ts - now) / 60:.0f} min ahead of the receiver's clock (at most {MAX_AHEAD_S / 60:.0f} min): "
            "the sender's clock is wrong")
