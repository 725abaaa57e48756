"""The SMART of each disk from Prometheus remote write: the series of the two common exporters become the readings
the agent sends from `smartctl --json` (agent/smart.py), declared as data like node_readings': prometheus-community's
smartctl_exporter (0.x) and the smartmon textfile scripts of node-exporter-textfile-collector-scripts (smartmon.sh,
which Debian's prometheus-node-exporter-collectors runs every 15 minutes, and smartmon.py).

Each disk is the kernel's name ("sda", "nvme0n1": the exporter's device path without /dev/), and `smart_health` is
noted "<model>|<serial>" from the exporter's info series, so the disk model follows a disk by its serial whichever
way it reports. The values are those the agent sends: the raw values Backblaze's drive stats record (the count
smartctl shows first: attribute 5's lowest 16 bits; the hours of attribute 9; the disk's temperature, not the raw
value that packs its lowest and highest), NVMe's health log for NVMe disks only, and a verdict only where smartctl
gave one: an exporter that writes 0 for a verdict smartctl never gave (smartctl_exporter before 0.9 did, for a disk
without SMART) is not read as a failed disk unless smartctl's exit status says DISK FAILING too. A disk the exporter
lists without a verdict (asleep, no SMART) is said unreadable, as the agent says it, never taken for a healthy one.

smartmon's series come with node_exporter's scrape (its textfile collector); smartctl_exporter is a target of its
own, scraped at its own times: bot/intake/node_exporter.py reads its scrape into the machine's samples, as the agent
sends its last SMART answer with each sample. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.smart import ATTRIBUTES, HEALTH, NVME, TEMPERATURE
from agent.vocabulary import DISK_NOTE, disk_source
from agent.wire import MAX_NOTE, MAX_READING_OBJECTS
from bot.intake.node_readings import LIMITS, NONE, Key, Labels, object_name

SMARTCTL = "smartctl"  # the kind of key of smartctl_exporter's series, scraped on their own
SMARTMON = "smartmon"  # of smartmon's, in node_exporter's scrape
DISK_FAILING = 0x08  # smartctl's exit status: "SMART status check returned DISK FAILING" (smartctl(8))
MOST_UNREADABLE = 32  # disks named in `unreadable`, as the agent names at most as many
ASLEEP = "asleep (standby): its SMART is read once it is awake, so as not to spin it up"
Reader = Callable[[Labels], Key | None]
# smartmon's attribute names (smartctl's, in lower case) -> reading; the temperature is attribute 194's.
SMARTMON_ATTRIBUTES = {"reallocated_sector_ct": "smart_5_raw", "reported_uncorrect": "smart_187_raw",
                       "command_timeout": "smart_188_raw", "current_pending_sector": "smart_197_raw",
                       "offline_uncorrectable": "smart_198_raw", "power_on_hours": "smart_9_raw",
                       "temperature_celsius": "smart_194_raw"}
_IDS = frozenset(str(ident) for ident in (*ATTRIBUTES, TEMPERATURE))


def disk_name(path: str, port: str = "") -> str | None:
    """A disk's name in readings: its device path without /dev/ ("sda"); one behind a RAID controller (a type with
    its port, "megaraid,0") with that type, as the agent names it ("bus/0 megaraid,0")."""
    name = path.strip().removeprefix("/dev/")
    if not name:
        return None
    return object_name(f"{name} {port}" if "," in port else name)


def _smartctl(*part: str) -> Reader:
    """A series of smartctl_exporter about one disk, its `device` label ("sda"; "/dev/sda" before 0.9)."""
    def key(labels: Labels) -> Key | None:
        disk = disk_name(labels.get("device", ""))
        return None if disk is None else (SMARTCTL, disk, *part)
    return key


def _smartctl_info(labels: Labels) -> Key | None:
    """The info series: the disk's model, serial and protocol ("ATA", "NVMe", "SCSI")."""
    disk = disk_name(labels.get("device", ""))
    if disk is None:
        return None
    return (SMARTCTL, disk, "info", labels.get("model_name", "").strip(), labels.get("serial_number", "").strip(),
            labels.get("protocol", ""))


def _smartctl_attribute(labels: Labels) -> Key | None:
    """The raw value of an attribute the agent reads (the others, and their normalised values, left out)."""
    ident = labels.get("attribute_id", "")
    read = ident in _IDS and labels.get("attribute_value_type") == "raw"
    disk = disk_name(labels.get("device", "")) if read else None
    return None if disk is None else (SMARTCTL, disk, "attr", ident)


def _smartctl_temperature(labels: Labels) -> Key | None:
    """The disk's temperature now (not its trip points)."""
    return _CURRENT(labels) if labels.get("temperature_type") == "current" else None


_CURRENT = _smartctl("temp")


def _smartmon_disk(labels: Labels) -> str | None:
    """smartmon.sh names a disk by its path in `disk` (its type in `type`); smartmon.py by its path in `device` (in
    `disk`, its type's RAID port, or "0")."""
    path = labels.get("disk", "")
    if path.startswith("/dev/"):
        return disk_name(path, labels.get("type", ""))
    return disk_name(labels.get("device", ""), path)


def _smartmon(part: str) -> Reader:
    def key(labels: Labels) -> Key | None:
        disk = _smartmon_disk(labels)
        return None if disk is None else (SMARTMON, disk, part)
    return key


def _smartmon_info(labels: Labels) -> Key | None:
    """The disk's model (ATA's Device Model; a SCSI disk's vendor and product; else its family) and serial."""
    disk = _smartmon_disk(labels)
    if disk is None:
        return None
    model = labels.get("device_model", "").strip() or " ".join(
        part for part in (labels.get("vendor", "").strip(), labels.get("product", "").strip()) if part) or labels.get(
        "model_family", "").strip()
    return SMARTMON, disk, "info", model, labels.get("serial_number", "").strip()


def _smartmon_attribute(reading: str) -> Reader:
    def key(labels: Labels) -> Key | None:
        disk = _smartmon_disk(labels)
        return None if disk is None else (SMARTMON, disk, "attr", reading)
    return key


def _smartmon_named(labels: Labels) -> Key | None:
    """smartmon.py's attributes: one series name, the attribute in the `name` label."""
    reading = SMARTMON_ATTRIBUTES.get(labels.get("name", ""))
    return None if reading is None else _smartmon_attribute(reading)(labels)


# The series that become SMART readings, by metric name, each giving the key of its value in a scrape (None: left
# out). smartctl_exporter 0.x (its `device` label without /dev/ since 0.9), smartmon.sh and smartmon.py.
READERS: dict[str, Reader] = {
    "smartctl_device": _smartctl_info,
    "smartctl_device_smart_status": _smartctl("health"),
    "smartctl_device_smartctl_exit_status": _smartctl("exit"),
    "smartctl_device_attribute": _smartctl_attribute,
    "smartctl_device_power_on_seconds": _smartctl("seconds"),
    "smartctl_device_temperature": _smartctl_temperature,
    **{f"smartctl_device_{name}": _smartctl("nvme", reading) for name, reading in NVME.items()},
    "smartmon_device_info": _smartmon_info,
    "smartmon_device_smart_healthy": _smartmon("health"),
    "smartmon_device_active": _smartmon("active"),
    **{f"smartmon_{name}_raw_value": _smartmon_attribute(reading) for name, reading in SMARTMON_ATTRIBUTES.items()},
    "smartmon_attr_raw_value": _smartmon_named,
}
# Series read only with this label (node_readings.ONLY_WITH): of an attribute's four values (value, worst, thresh,
# raw), only the raw one; of a disk's temperatures, the current one.
ONLY_WITH: dict[str, tuple[str, str, bool]] = {
    "smartctl_device_attribute": ("attribute_value_type", "raw", False),
    "smartctl_device_temperature": ("temperature_type", "current", False),
}


@dataclass
class Smart:
    """A scrape's SMART, as a sample carries it: reading -> disk -> value, smart_health's notes, and the disks that
    could not be read with why ("smart sda")."""

    readings: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: dict[str, dict[str, str]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


@dataclass
class _Disk:
    model: str = ""
    serial: str = ""
    protocol: str = ""
    health: float | None = None
    exit: float | None = None
    active: float | None = None
    seconds: float | None = None  # powered on
    temperature: float | None = None
    attributes: dict[str, float] = field(default_factory=dict)  # attribute id (smartctl_exporter) or reading
    nvme: dict[str, float] = field(default_factory=dict)  # reading -> value


def alone(groups: Mapping[str, object]) -> bool:
    """A scrape's values by kind of key are smartctl_exporter's alone: its own target's, to join the machine's
    samples."""
    return bool(groups) and groups.keys() <= {SMARTCTL}


def alone_keys(values: Iterable[Key]) -> bool:
    """The same of a scrape's keys (node_exporter's first key says it is not: nothing more is looked at)."""
    found = False
    for key in values:
        if key[0] != SMARTCTL:
            return False
        found = True
    return found


def read(groups: Mapping[str, Mapping[Key, float]]) -> Smart | None:
    """The SMART of a scrape's values by kind of key; None when it carries no exporter's SMART series."""
    if SMARTCTL not in groups and SMARTMON not in groups:
        return None
    disks: dict[tuple[str, str], _Disk] = {}
    for kind in (SMARTCTL, SMARTMON):
        for key, value in groups.get(kind, NONE).items():
            _learn(disks.setdefault((kind, key[1]), _Disk()), key[2:], value)
    found: dict[str, dict[str, float]] = {}
    notes: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    for (kind, name), disk in disks.items():
        values = _values(kind, name, disk)
        if values is None:
            unreadable[object_name(disk_source(name))] = _why(kind, disk)
            continue
        found[name] = values
        if (note := _note(disk.model, disk.serial)) is not None:
            notes[name] = note
    smart = Smart(unreadable=_bounded_unreadable(unreadable))
    for name in _kept(found):
        for reading, value in found[name].items():
            low, high = LIMITS[reading]
            smart.readings.setdefault(reading, {})[name] = round(min(high, max(low, float(value))), 6)
        if name in notes:
            smart.notes.setdefault(HEALTH, {})[name] = notes[name]
    return smart


def _learn(disk: _Disk, part: tuple[str, ...], value: float) -> None:
    what = part[0]
    if what == "info":
        disk.model, disk.serial = part[1], part[2]
        disk.protocol = part[3] if len(part) > 3 else ""
    elif what == "attr":
        disk.attributes[part[1]] = value
    elif what == "nvme":
        disk.nvme[part[1]] = value
    elif what in ("health", "exit", "active", "seconds"):
        setattr(disk, what, value)
    elif what == "temp":
        disk.temperature = value


def _values(kind: str, name: str, disk: _Disk) -> dict[str, float] | None:
    """A disk's readings, as the agent sends them; None without a verdict."""
    return _smartctl_values(name, disk) if kind == SMARTCTL else _smartmon_values(disk)


def _smartctl_values(name: str, disk: _Disk) -> dict[str, float] | None:
    if disk.health is None or (disk.health != 1 and not (disk.exit is None or int(disk.exit) & DISK_FAILING)):
        return None  # no verdict, or a 0 written for a verdict smartctl never gave
    values = {HEALTH: 1.0 if disk.health == 1 else 0.0}
    for ident, reading in ATTRIBUTES.items():
        raw = disk.attributes.get(str(ident))
        if raw is None:
            continue
        if ident == 9:  # hours, and milliseconds above them on many disks: the hours smartctl gives
            if disk.seconds is not None:
                values[reading] = float(int(disk.seconds // 3600))
        elif ident == 5:  # smartctl shows the count of its lowest 16 bits, the rest beside it ("8 (0 1)")
            values[reading] = float(int(raw) & 0xFFFF)
        else:
            values[reading] = raw
    if (raw := disk.attributes.get(str(TEMPERATURE))) is not None:
        values["smart_194_raw"] = disk.temperature if disk.temperature is not None else float(int(raw) & 0xFF)
    if disk.protocol == "NVMe" or (not disk.protocol and name.startswith("nvme")):
        values.update(disk.nvme)
    return values


def _smartmon_values(disk: _Disk) -> dict[str, float] | None:
    if disk.health is None:
        return None
    return {HEALTH: 1.0 if disk.health == 1 else 0.0, **disk.attributes}


def _why(kind: str, disk: _Disk) -> str:
    if kind == SMARTMON:
        return ASLEEP if disk.active == 0 else "no SMART verdict in smartmon's series (no SMART, or it is off)"
    status = f" (smartctl exit status {disk.exit:.0f})" if disk.exit is not None and 0 <= disk.exit < 256 else ""
    return f"no SMART verdict in smartctl_exporter's series{status}"


def _note(model: str, serial: str) -> str | None:
    """smart_health's note, "<model>|<serial>", printable and within the wire format's length (the model cut)."""
    if not model and not serial:
        return None
    model, serial = (("".join(c if c.isprintable() else "?" for c in text)) for text in (model, serial))
    serial = serial[:MAX_NOTE // 2]
    return model.replace(DISK_NOTE, " ")[:MAX_NOTE - len(serial) - 1] + DISK_NOTE + serial


def _kept(found: dict[str, dict[str, float]]) -> list[str]:
    """At most MAX_READING_OBJECTS disks, those failing first."""
    return sorted(sorted(found, key=lambda name: (found[name][HEALTH] != 0.0, name))[:MAX_READING_OBJECTS])


def _bounded_unreadable(unreadable: dict[str, str]) -> dict[str, str]:
    """At most MOST_UNREADABLE disks named with why; the others counted under "smart", as the agent counts them."""
    if len(unreadable) <= MOST_UNREADABLE:
        return unreadable
    named = dict(sorted(unreadable.items())[:MOST_UNREADABLE])
    return {**named, "smart": f"{len(unreadable) - MOST_UNREADABLE} more disks cannot be read (the first "
                              f"{MOST_UNREADABLE} are named)"}
