"""node_exporter's series that become readings of a machine's objects (agent/vocabulary.READINGS), named as the
agent names them: a filesystem by its mount point, an md array, a systemd unit, an interface or a disk by its
device name, an EDAC memory controller as "mc<N>", a hwmon sensor as "<chip>/<sensor>", the machine as "".
Pure: bot/intake/node_exporter.py hands it a scrape's values, grouped by kind, and the counters' increases since
the device's previous scrape.

A reading present in a sample is whole: an object missing from it has none of it. So a reading is there only when
the scrape carried its series (a collector that is off, or md without an array, gives none, not an empty one), and
a count since the previous scrape only when that scrape had its counters and none of them went down (a reboot).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from agent.vocabulary import READINGS
from agent.wire import MAX_OBJECT_NAME, MAX_READING_OBJECTS

Key = tuple[str, ...]
Labels = dict[str, str]
Reader = Callable[[Labels], Key | None]
Found = dict[str, dict[str, float]]  # reading -> object -> value
# A counter kind's increase since the device's previous scrape: (seconds, increase of each counter both have),
# or None (the first scrape, a counter that went down, a gap too long to say anything).
Since = Callable[[str], tuple[float, dict[Key, float]] | None]
MACHINE = ""
LOOPBACK = "lo"
NONE: Mapping[Key, float] = {}  # a kind of key the scrape did not carry
LIMITS = {name: (reading.low, reading.high) for name, reading in READINGS.items()}


def object_name(text: str) -> str:
    """An object's name as the wire format takes it: printable, at most MAX_OBJECT_NAME characters."""
    if text.isprintable() and len(text) <= MAX_OBJECT_NAME:
        return text
    shown = "".join(c if c.isprintable() else "?" for c in text)
    return shown if len(shown) <= MAX_OBJECT_NAME else shown[:MAX_OBJECT_NAME - 1] + "…"


def _gauge(*key: str) -> Reader:
    return lambda labels: key


def _of(kind: str, label: str, *part: str, prefix: str = "") -> Reader:
    """The series of one object, named by `label` (loopback left out)."""
    def key(labels: Labels) -> Key | None:
        name = labels.get(label, "")
        return None if not name or name == LOOPBACK else (kind, object_name(prefix + name), *part)
    return key


def _md_disks(labels: Labels) -> Key | None:
    state = labels.get("state", "")
    return ("md", object_name(labels.get("device", "")), state) if state in ("active", "failed", "spare") else None


def _unit_failed(labels: Labels) -> Key | None:
    """Only the `failed` state: a unit's four other states are four series dropped at a glance."""
    return ("unit_failed", object_name(labels.get("name", ""))) if labels.get("state") == "failed" else None


def _units_failed(labels: Labels) -> Key | None:
    """How many units failed: that systemd's units were read, when none failed."""
    return ("unit_failed", MACHINE) if labels.get("state") == "failed" else None


def _sensor(labels: Labels) -> Key | None:
    return ("temp_alarm", object_name(f"{labels.get('chip', '')}/{labels.get('sensor', '')}"))


# The series that become readings, by metric name (node_exporter 1.x), each giving the key of its value in a scrape
# (None: left out). Filesystems' inodes and read-only flag are read with their sizes (bot/intake/node_exporter.py).
READERS: dict[str, Reader] = {
    "node_md_disks": _md_disks,
    "node_md_disks_required": _of("md", "device", "required"),
    "node_systemd_unit_state": _unit_failed,
    "node_systemd_units": _units_failed,
    "node_systemd_service_restart_total": _of("unit_restarts", "name"),
    "node_vmstat_oom_kill": _gauge("oom"),
    "node_timex_sync_status": _gauge("clock", "synced"),
    "node_timex_offset_seconds": _gauge("clock", "offset"),
    "node_timex_maxerror_seconds": _gauge("clock", "maxerror"),
    "node_filefd_allocated": _gauge("fd", "used"),
    "node_filefd_maximum": _gauge("fd", "most"),
    "node_nf_conntrack_entries": _gauge("conntrack", "used"),
    "node_nf_conntrack_entries_limit": _gauge("conntrack", "most"),
    # Every thread holds a process id: threads are what runs out of pid_max (the agent counts them too).
    "node_processes_threads": _gauge("pids", "used"),
    "node_processes_max_processes": _gauge("pids", "most"),
    **{f"node_network_{way}_{what}_total": _of("packets", "device", what, way)
       for way in ("receive", "transmit") for what in ("errs", "drop", "packets")},
    "node_network_carrier_changes_total": _of("carrier", "device"),
    "node_bonding_slaves": _of("bond", "master", "slaves"),
    "node_bonding_active": _of("bond", "master", "active"),
    "node_reboot_required": _gauge("reboot"),
    "node_textfile_scrape_error": _gauge("textfile_error"),
    "node_vmstat_pgmajfault": _gauge("pgmajfault"),
    "node_disk_io_time_weighted_seconds_total": _of("io_queue", "device"),
    "node_edac_correctable_errors_total": _of("ecc", "controller", "ecc_correctable", prefix="mc"),
    "node_edac_uncorrectable_errors_total": _of("ecc", "controller", "ecc_uncorrectable", prefix="mc"),
    "node_hwmon_temp_crit_alarm_celsius": _sensor,
}
# Series read only when they have this label, and (True) only when a value of theirs is not 0: the receiver drops
# the others unread, as it drops every series of a name it does not read. A machine has a few hundred units, each
# in five states: of a scrape's thousand or so, one series says that units were read (node_systemd_units) and one
# more for each unit that failed.
ONLY_WITH: dict[str, tuple[str, str, bool]] = {
    "node_systemd_unit_state": ("state", "failed", True),
    "node_systemd_units": ("state", "failed", False),
}
# The kinds of key that are counters: kept from one scrape to the next for their increase.
COUNTERS = frozenset({"unit_restarts", "oom", "packets", "carrier", "pgmajfault", "io_queue", "ecc"})


def read(groups: Mapping[str, dict[Key, float]], filesystems: Mapping[str, Mapping[str, float]],
         since: Since) -> Found:
    """A scrape's readings: its values by kind of key (`filesystems`: mount point -> part -> value), and the
    increase of its counters (`since`); each reading at most MAX_READING_OBJECTS objects, the worst kept, every
    value within its bounds."""
    found: Found = _filesystems(filesystems)
    for family in FAMILIES:
        found.update(family(groups, since))
    return {name: _bounded(name, objects) for name, objects in found.items()}


def _flag(value: float) -> float:
    return 1.0 if value > 0 else 0.0


def _filesystems(filesystems: Mapping[str, Mapping[str, float]]) -> Found:
    """Inodes used (as `df -i` shows them) and the read-only flag of each real filesystem. A filesystem without a
    fixed inode table (btrfs: 0 files) cannot run out of inodes and is left out of the inodes."""
    found: Found = {}
    readonly = {mount: _flag(parts["readonly"]) for mount, parts in filesystems.items() if "readonly" in parts}
    if readonly:
        found["readonly"] = readonly
    if any("files" in parts for parts in filesystems.values()):
        percent: dict[str, float] = {}
        used: dict[str, float] = {}
        for mount, parts in filesystems.items():
            files, free = parts.get("files"), parts.get("files_free")
            if files is not None and free is not None and 0 <= free <= files and files > 0:
                percent[mount], used[mount] = 100.0 * (files - free) / files, files - free
        found["inodes_percent"] = percent
        found["inodes_used"] = used
    return found


def _md(groups: Mapping[str, dict[Key, float]], since: Since) -> Found:
    """Disks active, failed and required of each md array; the same arrays in all three, the most degraded kept."""
    arrays: dict[str, dict[str, float]] = {}
    for (_kind, device, part), value in groups.get("md", NONE).items():
        arrays.setdefault(device, {})[part] = value
    if not arrays:
        return {}
    if len(arrays) > MAX_READING_OBJECTS:
        def degraded(name: str) -> float:
            parts = arrays[name]
            return parts.get("required", 0.0) - parts.get("active", 0.0) + parts.get("failed", 0.0)
        arrays = {name: arrays[name] for name in sorted(arrays, key=degraded)[-MAX_READING_OBJECTS:]}
    return {reading: {device: parts[part] for device, parts in arrays.items() if part in parts}
            for reading, part in (("md_active", "active"), ("md_failed", "failed"), ("md_required", "required"))}


def _units(groups: Mapping[str, dict[Key, float]], since: Since) -> Found:
    """Failed units (only those: a unit missing is not failed), and each service's restarts since the previous
    scrape (only those that restarted). The count of failed units (the machine's object) says the units were read."""
    found: Found = {}
    if (failed := groups.get("unit_failed")) is not None:
        found["unit_failed"] = {name: 1.0 for (_kind, name), value in failed.items() if value > 0 and name}
    if (restarts := _grown(groups, since, "unit_restarts")) is not None:
        found["unit_restarts"] = {key[1]: count for key, count in restarts[1].items() if count > 0}
    return found


def _machine(groups: Mapping[str, dict[Key, float]], since: Since) -> Found:
    """The machine's own readings: OOM kills, the clock, the kernel's tables, a reboot waiting, the textfile
    collector, major page faults."""
    found: Found = {}
    if (oom := _grown(groups, since, "oom")) is not None:
        found["oom_kills"] = {MACHINE: sum(oom[1].values())}
    clock = groups.get("clock", NONE)
    for reading, part in (("clock_synced", "synced"), ("clock_offset_s", "offset"), ("clock_maxerror_s", "maxerror")):
        if (value := clock.get(("clock", part))) is not None:
            found[reading] = {MACHINE: _flag(value) if reading == "clock_synced" else value}
    for reading, kind in (("fd_percent", "fd"), ("conntrack_percent", "conntrack"), ("pids_percent", "pids")):
        parts = groups.get(kind, NONE)
        used, most = parts.get((kind, "used")), parts.get((kind, "most"))
        if used is not None and most is not None and most > 0:
            found[reading] = {MACHINE: 100.0 * used / most}
    for reading, kind in (("reboot_required", "reboot"), ("textfile_error", "textfile_error")):
        if (value := groups.get(kind, NONE).get((kind,))) is not None:
            found[reading] = {MACHINE: _flag(value)}
    if (faults := _grown(groups, since, "pgmajfault")) is not None and faults[0] > 0:
        found["major_faults_per_s"] = {MACHINE: sum(faults[1].values()) / faults[0]}
    return found


def _interfaces(groups: Mapping[str, dict[Key, float]], since: Since) -> Found:
    """Of each interface but loopback, since the previous scrape: packets with errors and dropped, received and
    sent, as a share of its packets (all of them when errors came without a packet through); link changes (only
    the interfaces whose link changed). Bonds: their links, and how many are up."""
    found: Found = {}
    if (grown := _grown(groups, since, "packets")) is not None:
        counts: dict[str, dict[str, float]] = {}
        for (_kind, device, what, _way), count in grown[1].items():
            parts = counts.setdefault(device, {})
            parts[what] = parts.get(what, 0.0) + count
        for reading, what in (("net_errors_percent", "errs"), ("net_drops_percent", "drop")):
            found[reading] = {device: _share(parts.get(what, 0.0), parts.get("packets", 0.0))
                              for device, parts in counts.items()}
    if (changes := _grown(groups, since, "carrier")) is not None:
        found["link_changes"] = {key[1]: count for key, count in changes[1].items() if count > 0}
    bonds = groups.get("bond", NONE)
    for reading, part in (("bond_slaves", "slaves"), ("bond_active", "active")):
        values = {master: value for (_kind, master, what), value in bonds.items() if what == part}
        if values:
            found[reading] = values
    return found


def _share(some: float, packets: float) -> float:
    if packets > 0:
        return min(100.0, 100.0 * some / packets)
    return 100.0 if some > 0 else 0.0


def _hardware(groups: Mapping[str, dict[Key, float]], since: Since) -> Found:
    """I/O queue of each disk (I/Os in flight on average since the previous scrape), memory errors of each EDAC
    controller since the previous scrape (only those that had some), critical temperature alarms. node_exporter
    1.5 reads a hwmon alarm as milli-degrees (1 becomes 0.001): any value above 0 is an alarm."""
    found: Found = {}
    if (queues := _grown(groups, since, "io_queue")) is not None and queues[0] > 0:
        found["disk_io_queue"] = {key[1]: weighted / queues[0] for key, weighted in queues[1].items()}
    if (errors := _grown(groups, since, "ecc")) is not None:
        for reading in ("ecc_correctable", "ecc_uncorrectable"):
            found[reading] = {key[1]: count for key, count in errors[1].items() if key[2] == reading and count > 0}
    if (alarms := groups.get("temp_alarm")) is not None:
        found["temp_alarm"] = {key[1]: _flag(value) for key, value in alarms.items()}
    return found


def _grown(groups: Mapping[str, dict[Key, float]], since: Since,
           kind: str) -> tuple[float, dict[Key, float]] | None:
    """The increase of a kind of counter the scrape carried, or None."""
    return since(kind) if kind in groups else None


FAMILIES: tuple[Callable[[Mapping[str, dict[Key, float]], Since], Found], ...] = (
    _md, _units, _machine, _interfaces, _hardware)


def _bounded(name: str, objects: dict[str, float]) -> dict[str, float]:
    """A reading as the wire format takes it: at most MAX_READING_OBJECTS objects, the highest values kept (the
    worst, for every reading that can have that many), each value within the reading's bounds."""
    if len(objects) > MAX_READING_OBJECTS:
        objects = dict(sorted(objects.items(), key=lambda item: (-item[1], item[0]))[:MAX_READING_OBJECTS])
    low, high = LIMITS[name]
    return {obj: round(value, 6) if low <= value <= high else low if value < low else high
            for obj, value in objects.items()}
