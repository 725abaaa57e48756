"""Everything on a machine that can need an intervention besides a resource filling up, read each sample: the
readings of agent/vocabulary.READINGS (inodes, read-only filesystems, md arrays, failed units, OOM kills, the
clock, the kernel's tables, interfaces, bonds, a reboot waiting, page faults, disk queues, memory errors,
temperature alarms, each disk's SMART) and the pressure metrics (PSI, CPU steal and iowait).

Each source is read on its own: one that cannot be read here is left out of the sample, named in `unreadable`
with why, and said once in the log, so the bot never takes "not read" for "all fine"; it never stops the agent.
What a machine simply does not have (no md array, no bond, no EDAC, no conntrack module) is an empty reading:
read, and none there. Counts marked per_sample are what happened since the previous sample, so the first sample
after a start has none of them, as it has no rates.

Everything here reads small files of /proc and /sys and one system call (adjtimex); only systemd costs a process,
at most every 30 s (agent/systemd.py), and SMART one per disk, at most every 5 min (agent/smart.py).
docs/performance.md ("The agent's cost") has the figures.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Hashable
from typing import NamedTuple, TypeVar

import psutil

from agent import kernel
from agent.kernel import Roots, Unreadable, listing, why
from agent.kernel_log import KernelLog, oom_victims
from agent.log_once import Once
from agent.smart import EVERY_S as SMART_EVERY_S
from agent.smart import Smart, SmartRead
from agent.systemd import Systemd
from agent.vocabulary import READINGS
from agent.wire import MAX_NOTE, MAX_OBJECT_NAME, MAX_READING_OBJECTS

log = logging.getLogger(__name__)

Value = float | tuple[float, str]  # a reading of one object, or a reading with its note ("sdb")
Found = dict[str, dict[str, Value]]  # reading -> object -> value; the machine itself is the object ""
_Part = TypeVar("_Part", Found, dict[str, float], SmartRead)  # what a reader gives: readings, metrics, or SMART
MACHINE = ""
# What packages call to write /run/reboot-required when an upgrade needs a reboot; Ubuntu's update-notifier-common
# and Debian's reboot-notifier install it. Where it is missing nothing ever writes the flag, and its absence would
# be a false "no reboot needed".
_REBOOT_FLAGGER = "usr/share/update-notifier/notify-reboot-required"


class Sampled(NamedTuple):
    """What one sample read: the pressure metrics, the readings with their notes, and what could not be read."""

    metrics: dict[str, float]
    readings: dict[str, dict[str, float]]
    notes: dict[str, dict[str, str]]
    unreadable: dict[str, str]


def printable(text: str, limit: int) -> str:
    """Text as the wire format takes it: printable, at most `limit` characters (the last one … when cut)."""
    shown = "".join(c if c.isprintable() else "?" for c in text.strip())
    return shown if len(shown) <= limit else shown[:limit - 1] + "…"


def worst(objects: dict[str, Value], most: int = MAX_READING_OBJECTS) -> dict[str, Value]:
    """The `most` objects of a reading with the highest values, which are the worst for every reading that can
    have that many objects (inodes, errors, queues, alarms)."""
    if len(objects) <= most:
        return objects
    return dict(sorted(objects.items(), key=lambda item: _value(item[1]), reverse=True)[:most])


def _value(given: Value) -> float:
    return given[0] if isinstance(given, tuple) else given


class Readings:
    """Reads every source of this machine's readings, keeping the counters that per-sample readings and rates need
    from one sample to the next."""

    def __init__(self, roots: Roots, smart_every_s: float = SMART_EVERY_S) -> None:
        self.roots = roots
        self._kernel_log = KernelLog(roots.root("dev", "kmsg"))
        self._systemd = Systemd(roots.rootfs)
        self._smart = Smart(roots.sys("block"), smart_every_s)
        self._said = Once(log, logging.WARNING)  # by source, until it can be read again
        self._unreadable: set[str] = set()  # the sources the previous sample could not read
        self._counters: dict[Hashable, float] = {}  # counters of the previous sample
        self._next: dict[Hashable, float] = {}  # counters of this sample
        self._then: float | None = None  # time.monotonic() of the previous sample
        self._elapsed = 0.0  # seconds since the previous sample
        self._mounts: dict[str, str] | str = {}  # this sample's filesystems (mount point -> options), or why none
        self._kernel_lines: list[str] | None = None  # this sample's new kernel log lines; None: unreadable
        self._vmstat: dict[str, int] | None = None  # this sample's /proc/vmstat
        # Source (agent/vocabulary.SOURCES) and its reader, in this order: the kernel log before the OOM counter,
        # which the kernel raises before it logs the kill.
        self._readers: tuple[tuple[str, Callable[[], Found]], ...] = (
            ("filesystems", self._filesystems), ("raid", self._raid), ("systemd", self._units),
            ("kernel log", self._read_kernel_log), ("oom", self._oom_kills), ("clock", self._clock),
            ("file descriptors", self._file_descriptors), ("conntrack", self._conntrack),
            ("process ids", self._process_ids), ("network", self._interfaces), ("network", self._link_changes),
            ("bonding", self._bonds), ("reboot", self._reboot), ("memory", self._major_faults),
            ("disk io", self._disk_queues), ("ecc", self._memory_errors), ("hwmon", self._temperature_alarms),
        )
        self._metric_readers: tuple[tuple[str, Callable[[], dict[str, float]]], ...] = (
            ("pressure", self._stalls), ("pressure", self._cpu_shares),
        )

    def read(self, mounts: dict[str, str] | str) -> Sampled:
        """One sample of every source; `mounts` are the filesystems the agent reports (mount point -> mount
        options), or why the mount table could not be read."""
        now = time.monotonic()
        self._elapsed = now - self._then if self._then is not None else 0.0
        self._mounts, self._vmstat, self._next = mounts, None, {}
        unreadable: dict[str, str] = {}
        found: Found = {}
        for source, reader in self._readers:
            found.update(self._attempt(source, reader, unreadable) or {})
        smart = self._attempt("smart", self._smart.read, unreadable)
        if smart is not None:  # the disks read, and each one that could not be ("smart sdb") with why
            found.update(smart.found)
            unreadable.update({printable(disk, MAX_OBJECT_NAME): printable(reason, MAX_NOTE)
                               for disk, reason in smart.unreadable.items()})
        metrics: dict[str, float] = {}
        for source, metric_reader in self._metric_readers:
            metrics.update(self._attempt(source, metric_reader, unreadable) or {})
        self._counters, self._then = self._next, now
        for source, reason in unreadable.items():
            self._said.say(source, "%s unreadable: %s; each sample says so instead of sending its readings",
                           source, reason)
        for source in self._unreadable - unreadable.keys():  # readable again: the next problem is said at once
            self._said.forget(source)
        self._unreadable = set(unreadable)
        return Sampled({name: round(min(100.0, max(0.0, value)), 2) for name, value in metrics.items()},
                       *_wire(found), unreadable)

    @staticmethod
    def _attempt(source: str, reader: Callable[[], _Part], unreadable: dict[str, str]) -> _Part | None:
        """What a reader read, or None with why in `unreadable`: a reader that fails never stops the agent."""
        try:
            return reader()
        except Exception as exc:
            unreadable.setdefault(source, printable(_reason(exc), MAX_NOTE))
            return None

    # --- counters ---------------------------------------------------------------------------------------------

    def _read_before(self, what: str) -> bool:
        """Whether `what` was read in the previous sample, which a reading since the previous sample needs (an
        object missing from it would say "none" where nothing could be counted); and it is read in this one."""
        self._next["read", what] = 1.0
        return ("read", what) in self._counters

    def _grew(self, key: Hashable, value: float) -> float | None:
        """How much a counter grew since the previous sample; None on the first sample, for a counter not read
        then, or for one that went back (reset, or a device replaced)."""
        self._next[key] = value
        before = self._counters.get(key)
        return None if before is None or value < before else value - before

    def _rate(self, key: Hashable, value: float) -> float | None:
        grew = self._grew(key, value)
        return grew / self._elapsed if grew is not None and self._elapsed > 0 else None

    def _vmstat_now(self) -> dict[str, int]:
        if self._vmstat is None:
            self._vmstat = kernel.key_values(self.roots.proc("vmstat"))
        return self._vmstat

    # --- the readers: each returns its readings, or raises when its source cannot be read -----------------------

    def _filesystems(self) -> Found:
        """Inodes and read-only of the filesystems the agent reports. Filesystems without a fixed inode table
        (btrfs, some network filesystems: a count of 0) cannot run out of inodes and are left out of inodes."""
        if isinstance(self._mounts, str):
            raise Unreadable(self._mounts)
        if not hasattr(os, "statvfs"):
            raise Unreadable("this system has no statvfs")
        percent: dict[str, Value] = {}
        used: dict[str, Value] = {}
        readonly: dict[str, Value] = {}
        for mount, options in self._mounts.items():
            readonly[mount] = 1.0 if "ro" in options.split(",") else 0.0
            try:
                stat = os.statvfs(mount)
            except OSError:  # gone since the mount table was read
                continue
            if stat.f_files > 0:
                in_use = stat.f_files - stat.f_ffree
                percent[mount], used[mount] = 100.0 * in_use / stat.f_files, float(in_use)
        percent = worst(percent)
        return {"inodes_percent": percent, "inodes_used": {m: used[m] for m in percent}, "readonly": worst(readonly)}

    def _raid(self) -> Found:
        """md arrays. No /proc/mdstat means no md driver, so no array: an empty reading."""
        try:
            arrays = kernel.md_arrays(self.roots.proc("mdstat"), self.roots.sys("block"))
        except FileNotFoundError:
            arrays = {}
        if len(arrays) > MAX_READING_OBJECTS:  # the most degraded first, the same arrays in all three readings
            kept = sorted(arrays, key=lambda n: arrays[n].required - arrays[n].active + len(arrays[n].failed))
            arrays = {name: arrays[name] for name in kept[-MAX_READING_OBJECTS:]}
        return {
            "md_active": {name: float(md.active) for name, md in arrays.items()},
            "md_required": {name: float(md.required) for name, md in arrays.items()},
            "md_failed": {name: (float(len(md.failed)), ", ".join(md.failed)) if md.failed else 0.0
                          for name, md in arrays.items()},
        }

    def _units(self) -> Found:
        """Failed units, and restarts of services. No systemd is unreadable, not "no failed unit": the bot would
        otherwise take a machine it cannot watch for one whose services are all fine."""
        failed, restarted = self._systemd.read()
        found: Found = {"unit_failed": dict(sorted(failed.items())[:MAX_READING_OBJECTS])}
        if restarted is not None:
            found["unit_restarts"] = worst(dict(restarted))
        return found

    def _read_kernel_log(self) -> Found:
        self._kernel_lines = None
        self._kernel_lines = self._kernel_log.new_lines()
        return {}

    def _oom_kills(self) -> Found:
        """Processes the kernel killed for memory since the previous sample, named when the kernel log says who."""
        vmstat = self._vmstat_now()
        if "oom_kill" not in vmstat:
            raise Unreadable("this kernel does not count OOM kills (no oom_kill in /proc/vmstat before Linux 4.13)")
        killed = self._grew("oom_kill", vmstat["oom_kill"])
        if killed is None:
            return {}
        victims = oom_victims(self._kernel_lines or [])
        return {"oom_kills": {MACHINE: (killed, ", ".join(victims)) if killed and victims else killed}}

    def _clock(self) -> Found:
        clock = kernel.clock()
        return {"clock_synced": {MACHINE: 1.0 if clock.synced else 0.0},
                "clock_offset_s": {MACHINE: clock.offset_s}, "clock_maxerror_s": {MACHINE: clock.maxerror_s}}

    def _file_descriptors(self) -> Found:
        """Open files of the whole machine against the kernel's limit, as node_exporter's filefd."""
        allocated, most = kernel.file_nr(self.roots.proc("sys", "fs", "file-nr"))
        if most <= 0:
            raise Unreadable(f"/proc/sys/fs/file-nr gives a limit of {most}")
        return {"fd_percent": {MACHINE: 100.0 * allocated / most}}

    def _conntrack(self) -> Found:
        """The connection tracking table. Without the conntrack module there is no table to fill: empty."""
        try:
            count = kernel.number(self.roots.proc("sys", "net", "netfilter", "nf_conntrack_count"))
            most = kernel.number(self.roots.proc("sys", "net", "netfilter", "nf_conntrack_max"))
        except FileNotFoundError:
            return {"conntrack_percent": {}}
        # A limit of 0 is no limit: a table that cannot fill up.
        return {"conntrack_percent": {MACHINE: 100.0 * count / most} if most > 0 else {}}

    def _process_ids(self) -> Found:
        """Process ids in use against pid_max: every thread holds one, so threads count as processes do."""
        in_use = kernel.tasks(self.roots.proc("loadavg"))
        most = kernel.number(self.roots.proc("sys", "kernel", "pid_max"))
        if most <= 0:
            raise Unreadable(f"/proc/sys/kernel/pid_max gives a limit of {most}")
        return {"pids_percent": {MACHINE: 100.0 * in_use / most}}

    def _interfaces(self) -> Found:
        """Packets with errors, and dropped, of each interface but loopback, as a share of its packets since the
        previous sample (all of them when errors came without a packet through)."""
        errors: dict[str, Value] = {}
        drops: dict[str, Value] = {}
        for name, counters in kernel.net_dev(self.roots.proc("net", "dev")).items():
            if name == "lo":
                continue
            packets = self._grew(("packets", name), counters.packets)
            erred, dropped = self._grew(("errors", name), counters.errors), self._grew(("drops", name), counters.drops)
            if packets is None or erred is None or dropped is None:
                continue
            errors[name] = min(100.0, 100.0 * erred / packets) if packets else 100.0 if erred else 0.0
            drops[name] = min(100.0, 100.0 * dropped / packets) if packets else 100.0 if dropped else 0.0
        if not self._read_before("interfaces"):
            return {}
        return {"net_errors_percent": worst(errors), "net_drops_percent": worst(drops)}

    def _link_changes(self) -> Found:
        """Times each interface's link went up or down since the previous sample; only those it happened to."""
        net = self.roots.sys("class", "net")
        changes: dict[str, Value] = {}
        for name in listing(net):
            try:
                count = kernel.number(net / name / "carrier_changes")
            except (OSError, ValueError, IndexError):  # not an interface, or one without a carrier (loopback)
                continue
            grew = self._grew(("carrier", name), count)
            if grew:
                changes[name] = grew
        return {"link_changes": worst(changes)} if self._read_before("carrier") else {}

    def _bonds(self) -> Found:
        """Bonded links, and how many are up, the down ones named. No bonding driver: no bond, an empty reading."""
        bonds = kernel.bonds(self.roots.sys("class", "net"))
        active: dict[str, Value] = {}
        for bond, links in bonds.items():
            up = float(sum(1 for state in links.values() if state == "up"))
            down = [f"{link} {state}" for link, state in links.items() if state != "up"]
            active[bond] = (up, ", ".join(down)) if down else up
        return {"bond_slaves": {bond: float(len(links)) for bond, links in bonds.items()}, "bond_active": active}

    def _reboot(self) -> Found:
        """Whether an upgrade asked for a reboot (Debian and Ubuntu's /run/reboot-required), with the first packages
        that asked. Where nothing on the machine writes that flag, its absence says nothing: unreadable."""
        flag = self.roots.root("run", "reboot-required")
        if not flag.exists():
            if not self.roots.root(_REBOOT_FLAGGER).exists():
                raise Unreadable("nothing on this machine flags a needed reboot in /run/reboot-required (Debian: "
                                 "reboot-notifier; Ubuntu: update-notifier-common)")
            return {"reboot_required": {MACHINE: 0.0}}
        try:
            packages = ", ".join(dict.fromkeys(kernel.text(flag.with_name("reboot-required.pkgs")).split()))
        except OSError:
            packages = ""
        return {"reboot_required": {MACHINE: (1.0, printable(packages, MAX_NOTE)) if packages else 1.0}}

    def _major_faults(self) -> Found:
        """Page faults that had to read from disk, per second: a machine swapping or thrashing its page cache."""
        vmstat = self._vmstat_now()
        if "pgmajfault" not in vmstat:
            raise Unreadable("/proc/vmstat has no pgmajfault")
        rate = self._rate("pgmajfault", vmstat["pgmajfault"])
        return {"major_faults_per_s": {MACHINE: rate}} if rate is not None else {}

    def _disk_queues(self) -> Found:
        """The average number of I/Os in flight on each whole disk since the previous sample."""
        queues: dict[str, Value] = {}
        for disk, weighted_ms in kernel.io_weighted_ms(self.roots.proc("diskstats"), self.roots.sys("block")).items():
            rate = self._rate(("io", disk), weighted_ms)
            if rate is not None:
                queues[disk] = rate / 1000.0
        return {"disk_io_queue": worst(queues)} if self._read_before("disks") else {}

    def _memory_errors(self) -> Found:
        """Memory errors each EDAC memory controller corrected, or could not, since the previous sample; only
        those that had some. No EDAC (no ECC memory, or no driver for it): none."""
        folder = self.roots.sys("devices", "system", "edac", "mc")
        corrected: dict[str, Value] = {}
        uncorrected: dict[str, Value] = {}
        for controller in (name for name in listing(folder) if name.startswith("mc")):
            for counts, file in ((corrected, "ce_count"), (uncorrected, "ue_count")):
                grew = self._grew((file, controller), kernel.number(folder / controller / file))
                if grew:
                    counts[controller] = grew
        if not self._read_before("edac"):
            return {}
        return {"ecc_correctable": worst(corrected), "ecc_uncorrectable": worst(uncorrected)}

    def _temperature_alarms(self) -> Found:
        """Each sensor's critical temperature alarm; no hwmon sensor with one: none."""
        return {"temp_alarm": worst({sensor: float(on) for sensor, on in
                                     kernel.temperature_alarms(self.roots.sys("class", "hwmon")).items()})}

    # --- the pressure metrics ---------------------------------------------------------------------------------

    def _stalls(self) -> dict[str, float]:
        """The share of the interval in which every task waited for memory, or for I/O (PSI "full")."""
        if not self.roots.proc("pressure").is_dir():
            raise Unreadable("the kernel gives no pressure stall information (no /proc/pressure: Linux 4.20 and "
                             "later with CONFIG_PSI, not booted with psi=0)")
        stalls = {}
        for resource in ("memory", "io"):
            stalled_us = self._rate(("psi", resource), kernel.pressure_full_us(self.roots.proc("pressure", resource)))
            if stalled_us is not None:
                stalls[f"psi_{resource}_full_percent"] = stalled_us / 1e4  # µs per s -> percent
        return stalls

    def _cpu_shares(self) -> dict[str, float]:
        """The share of CPU time the hypervisor stole and the CPUs spent waiting for I/O since the previous sample
        (where the system counts them: Linux)."""
        times = psutil.cpu_times()
        if not hasattr(times, "steal") or not hasattr(times, "iowait"):
            return {}
        total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)  # both in user/nice
        spent, stolen, waited = self._grew("cpu", total), self._grew("steal", times.steal), self._grew(
            "iowait", times.iowait)
        if not spent or stolen is None or waited is None:
            return {}
        return {"cpu_steal_percent": 100.0 * stolen / spent, "cpu_iowait_percent": 100.0 * waited / spent}


def _reason(exc: Exception) -> str:
    """Why a source could not be read, in a few words."""
    if isinstance(exc, Unreadable):
        return str(exc)
    if isinstance(exc, OSError):
        return why(exc)
    if isinstance(exc, ValueError | IndexError):
        return f"not what the kernel writes ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _wire(found: Found) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, str]]]:
    """The readings and their notes as the wire format takes them: each value within its reading's bounds, each
    object and note printable and not too long."""
    readings: dict[str, dict[str, float]] = {}
    notes: dict[str, dict[str, str]] = {}
    for name, objects in found.items():
        bounds = READINGS[name]
        values: dict[str, float] = {}
        for obj, given in worst(objects).items():
            shown = printable(obj, MAX_OBJECT_NAME) if obj else MACHINE
            values[shown] = round(min(bounds.high, max(bounds.low, float(_value(given)))), 6)
            if isinstance(given, tuple) and given[1].strip():
                notes.setdefault(name, {})[shown] = printable(given[1], MAX_NOTE)
        readings[name] = dict(sorted(values.items()))
    return readings, notes
