"""SMART of each disk, from `smartctl --json` (Debian's smartmontools): the disk's own verdict with its model and
serial, the raw values of the ATA attributes that predict a failure (named as Backblaze's drive stats name them),
and NVMe's health log.

SMART changes slowly and each question is a process per disk, so smartctl is asked at most every `every_s` seconds
(5 min by default, the agent's --smart-interval); the samples in between carry the last answer again. The first
answer is read in the agent's first sample; later ones in a thread of their own, so that a disk slow to answer (a
dying one retries each command for a long while) never holds a sample back.

The disks are the machine's whole disks (/sys/block: sd*, nvme*n*, vd*, mmcblk*, …) and those only smartctl finds
(`--scan`: the members of a RAID controller, "bus/0 megaraid,0"). A disk smartctl cannot read is said, with why, as
the source "smart <disk>"; it is never sent as healthy. A disk asleep is not woken (`--nocheck=standby`): its last
readings are sent again until it wakes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import NamedTuple

from agent.kernel import Unreadable, listing, text
from agent.vocabulary import DISK_NOTE, disk_source
from agent.wire import MAX_READING_OBJECTS

EVERY_S = 300.0
TIMEOUT_S = 20.0  # one smartctl call, for one disk
MOST_UNREADABLE = 32  # disks named in `unreadable`; more are counted under "smart"
NOT_INSTALLED = "smartctl is not installed (Debian: smartmontools)"
# Where smartctl is installed when the agent's PATH leaves out the sbin folders (a user's shell on Debian).
SBIN = "/usr/sbin:/sbin"
_ENVIRONMENT = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
# The information, the verdict and the attributes (or NVMe's health log): what is sent, and no more commands to the
# disk than that; a disk asleep is left asleep.
_ASK = ("--json", "--info", "--health", "--attributes", "--nocheck=standby")

# ATA attribute id -> reading: its raw value (see _raw), as Backblaze's drive stats record it. Attribute 194 is the
# temperature, read apart.
ATTRIBUTES = {5: "smart_5_raw", 187: "smart_187_raw", 188: "smart_188_raw", 197: "smart_197_raw",
              198: "smart_198_raw", 9: "smart_9_raw"}
TEMPERATURE = 194
# NVMe health log field (smartctl's nvme_smart_health_information_log) -> reading.
NVME = {"media_errors": "nvme_media_errors", "critical_warning": "nvme_critical_warning",
        "available_spare": "nvme_available_spare", "available_spare_threshold": "nvme_spare_threshold",
        "percentage_used": "nvme_percentage_used"}
HEALTH = "smart_health"

# smartctl's exit status, bit by bit (smartctl(8), "RETURN VALUES").
COMMAND_LINE = 0x01  # the command line did not parse, or smartctl could not tell what kind of device it is
OPEN_FAILED = 0x02  # the device did not open, did not identify itself, or is in a low-power mode

# Whole disks as the kernel names them: SCSI/SATA/USB, old IDE, NVMe namespaces, virtio, Xen, SD cards and eMMC.
# Partitions, loop and RAM disks, md arrays and device-mapper volumes hold no SMART of their own.
_DISK_RE = re.compile(r"sd[a-z]+|hd[a-z]+|nvme\d+n\d+|vd[a-z]+|xvd[a-z]+|mmcblk\d+")
_NVME_CONTROLLER_RE = re.compile(r"/dev/nvme\d+")
# Vendors and models of the disks hypervisors make up; some of them (QEMU's IDE disk) even make up SMART.
_VIRTUAL_RE = re.compile(r"QEMU|VBOX|VMware|Virtual|\bXen\b|BHYVE|Amazon Elastic Block Store|PersistentDisk",
                         re.IGNORECASE)
_USB_BRIDGE_RE = re.compile(r"USB bridge (\[[^\]]*\])")  # unknown, unsupported, or of a type smartctl cannot tell
_ASLEEP_RE = re.compile(r"Device is in (STANDBY|SLEEP)")
_OPEN_FAILED_RE = re.compile(r"open device: .* failed: (.+)")
_COUNT_FIRST_RE = re.compile(r"(\d+)(?: \(|h\+)")  # "8 (0 1)", "380 (Average 380)", "25056h+13m+45.120s"

Value = float | tuple[float, str]  # as agent/readings.py's: a value, or a value with its note
Found = dict[str, dict[str, Value]]  # reading -> disk -> value


class SmartRead(NamedTuple):
    """The SMART readings of the disks that could be read, and why each other one could not ("smart sdb")."""

    found: Found
    unreadable: dict[str, str]


class Disk(NamedTuple):
    """A disk to ask: its name in readings ("sda", "bus/0 megaraid,0"), how smartctl names it, and its folder in
    /sys/block (None for one behind a RAID controller, which the kernel does not see)."""

    name: str
    args: tuple[str, ...]
    sysfs: Path | None


class Answer(NamedTuple):
    """What smartctl said of one disk: its readings, or why there are none; asleep, it said nothing new."""

    values: dict[str, Value] | None
    why: str | None = None
    asleep: bool = False


def find_smartctl() -> str | None:
    return shutil.which("smartctl") or shutil.which("smartctl", path=SBIN)


class Smart:
    """The SMART of every disk of the machine whose /sys/block is `block`, asked at most every `every_s` seconds."""

    def __init__(self, block: Path, every_s: float = EVERY_S) -> None:
        self.block = block
        self.every_s = every_s
        self._asked_at: float | None = None  # time.monotonic() of the last question
        self._last: SmartRead | str = SmartRead({}, {})  # the last answer, or why smartctl could not be asked
        self._worker: threading.Thread | None = None
        self._known: dict[str, dict[str, Value]] = {}  # each disk's last readings, sent again while it sleeps

    def read(self) -> SmartRead:
        """The last answer; asks again when it is older than `every_s` (the first time in this call, later in the
        background). Raises Unreadable when smartctl cannot be asked at all."""
        now = time.monotonic()
        if self._asked_at is None:
            self._asked_at = now
            self._answer()
        elif now - self._asked_at >= self.every_s and not (self._worker is not None and self._worker.is_alive()):
            self._asked_at = now
            self._worker = threading.Thread(target=self._answer, name="smart", daemon=True)
            self._worker.start()
        last = self._last
        if isinstance(last, str):
            raise Unreadable(last)
        return last

    def _answer(self) -> None:
        """Ask, and keep the answer for the samples until the next one; one that fails is why SMART is unreadable
        until then, never the answer before it sent again as if it were new."""
        try:
            answer = self.ask()
        except Exception as exc:
            answer = f"{type(exc).__name__}: {exc}"
        self._last = answer  # one assignment: a sample reads the old answer or the new one, whole

    def ask(self) -> SmartRead | str:
        """Ask smartctl about every disk now: their readings and why some could not be read, or why smartctl could
        not be asked at all."""
        smartctl = find_smartctl()  # looked for each time: installing smartmontools needs no restart of the agent
        if smartctl is None:
            return NOT_INSTALLED
        answers = {disk.name: self._ask_disk(smartctl, disk) for disk in self._disks(smartctl)}
        known: dict[str, dict[str, Value]] = {}
        unreadable: dict[str, str] = {}
        for name, answer in answers.items():
            values = self._known.get(name) if answer.asleep else answer.values
            if values is not None:
                known[name] = values
            elif answer.why is not None:
                unreadable[disk_source(name)] = answer.why
        self._known = known
        return SmartRead(_readings(known), _bounded(unreadable))

    def _disks(self, smartctl: str) -> list[Disk]:
        """The kernel's whole disks, with the type smartctl's scan gives them, and the disks only the scan finds."""
        whole = {name: Disk(name, (f"/dev/{name}",), self.block / name)
                 for name in listing(self.block) if _DISK_RE.fullmatch(name)}
        more: list[Disk] = []
        for device, kind in _scan(smartctl):
            base = device.removeprefix("/dev/")
            if base in whole:
                whole[base] = whole[base]._replace(args=("--device", kind, device) if kind else (device,))
            elif not _NVME_CONTROLLER_RE.fullmatch(device):  # an NVMe controller: its namespaces are the disks
                more.append(Disk(f"{base} {kind}".strip(), ("--device", kind, device) if kind else (device,), None))
        return [*whole.values(), *more]

    def _ask_disk(self, smartctl: str, disk: Disk) -> Answer:
        try:
            said = _run(smartctl, *_ASK, *disk.args)
        except OSError as exc:
            return Answer(None, f"smartctl could not be started: {exc.strerror or exc}")
        if said is None:
            return Answer(None, f"smartctl did not answer within {TIMEOUT_S:g} s")
        doc, status = said
        return judge(disk, doc, status)


def _run(smartctl: str, *args: str) -> tuple[dict | None, int] | None:
    """smartctl's JSON answer (None when it gave none) and exit status, or None when it did not answer within
    TIMEOUT_S. It is then killed and not waited for: one stuck in the kernel on a dying disk ends when the disk gives
    up, and is reaped then."""
    process = subprocess.Popen([smartctl, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               errors="replace", env=_ENVIRONMENT)
    try:
        out, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        if process.stdout is not None:
            process.stdout.close()
        return None
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    return (doc if isinstance(doc, dict) else None), process.returncode


def _scan(smartctl: str) -> list[tuple[str, str]]:
    """The devices smartctl's scan finds, with their types: ("/dev/sda", "sat"), ("/dev/bus/0", "megaraid,0"). A scan
    that fails finds none: the kernel's disks are asked all the same."""
    try:
        said = _run(smartctl, "--json", "--scan")
    except OSError:
        return []
    devices = (said[0] or {}).get("devices") if said is not None else None
    if not isinstance(devices, list):
        return []
    return [(found["name"], found.get("type") if isinstance(found.get("type"), str) else "")
            for found in devices if isinstance(found, dict) and isinstance(found.get("name"), str)]


def judge(disk: Disk, doc: dict | None, status: int) -> Answer:
    """What smartctl's answer about a disk says: its readings, or why it has none, told apart by the exit status and
    smartctl's messages."""
    if (kind := _what_the_kernel_says(disk.sysfs)) is not None:  # more to the point than how smartctl failed
        return Answer(None, f"no SMART: {kind}")
    if doc is None:
        return Answer(None, f"smartctl gave no answer it could read (exit status {status})")
    messages = [m["string"] for m in _dict(doc, "smartctl").get("messages", [])
                if isinstance(m, dict) and isinstance(m.get("string"), str)]
    if any(_ASLEEP_RE.search(m) for m in messages):
        return Answer(None, "asleep (standby): its SMART is read once it is awake, so as not to spin it up", True)
    device = disk.args[-1]
    nvme = disk.name.startswith("nvme") or _dict(doc, "device").get("protocol") == "NVMe"
    capability = "CAP_SYS_ADMIN" if nvme else "CAP_SYS_RAWIO"
    for message in messages:
        if (opening := _OPEN_FAILED_RE.search(message)) is None:
            continue
        if "Permission denied" in opening[1]:  # the device file's permissions, before any command
            return Answer(None, f"permission denied opening {device}: SMART needs root, or the group disk and "
                                f"{capability}")
        if disk.sysfs is not None and opening[1].startswith("No such"):  # the kernel has the disk, /dev does not
            return Answer(None, f"its device file {device} is missing (a service's PrivateDevices=yes hides disks)")
    if any("Permission denied" in m or "Operation not permitted" in m for m in messages):  # a command refused
        return Answer(None, "permission denied: NVMe's health log needs root or CAP_SYS_ADMIN" if nvme
                      else "permission denied: SMART needs root or CAP_SYS_RAWIO")
    model, serial = _model(doc), _text(doc.get("serial_number"))
    if _VIRTUAL_RE.search(model):
        return Answer(None, f"no SMART: a virtual disk ({model})")
    for message in messages:
        if bridge := _USB_BRIDGE_RE.search(message):
            return Answer(None, f"no SMART: a USB bridge that hides SMART {bridge[1]}")
    passed = _dict(doc, "smart_status").get("passed")
    if isinstance(passed, bool):
        return Answer(_values(doc, 1.0 if passed else 0.0, model, serial))
    support = _dict(doc, "smart_support")
    if support.get("available") is False:
        return Answer(None, f"no SMART: the disk does not support it ({model or 'no model given'})")
    if support.get("enabled") is False:
        return Answer(None, f"SMART is off on this disk (smartctl --smart=on {device} turns it on)")
    if status & COMMAND_LINE and any("Unable to detect device type" in m for m in messages):
        return Answer(None, "no SMART: smartctl cannot tell what kind of disk this is")
    for message in messages:
        if status & OPEN_FAILED and (failed := _OPEN_FAILED_RE.search(message)):
            return Answer(None, f"smartctl could not open it: {failed[1]}")
    return Answer(None, f"no SMART verdict: {messages[0] if messages else f'smartctl exit status {status}'}")


def _what_the_kernel_says(sysfs: Path | None) -> str | None:
    """What a disk is, as the kernel knows it, when it is one without SMART of its own: a virtual disk or a card."""
    if sysfs is None:
        return None
    if sysfs.name.startswith("mmcblk"):
        return "an SD card or eMMC, which have none"
    if sysfs.name.startswith("vd"):
        return "a virtual disk (virtio)"
    if sysfs.name.startswith("xvd"):
        return "a virtual disk (Xen)"
    vendor, model = (_sysfs_text(sysfs / "device" / file) for file in ("vendor", "model"))
    shown = model if vendor in ("", "ATA") or model.startswith(vendor) else f"{vendor} {model}"
    return f"a virtual disk ({shown})" if _VIRTUAL_RE.search(shown) else None


def _sysfs_text(path: Path) -> str:
    try:
        return text(path).strip()
    except OSError:
        return ""


def _values(doc: dict, health: float, model: str, serial: str) -> dict[str, Value]:
    """A disk's readings from smartctl's answer: only what the disk has."""
    note = f"{model.replace(DISK_NOTE, ' ')}{DISK_NOTE}{serial}" if model or serial else ""
    values: dict[str, Value] = {HEALTH: (health, note) if note else health}
    table = _dict(doc, "ata_smart_attributes").get("table", [])
    for attribute in table if isinstance(table, list) else []:
        if not isinstance(attribute, dict):
            continue
        ident, raw = attribute.get("id"), _dict(attribute, "raw")
        if ident in ATTRIBUTES and (shown := _raw(raw)) is not None:
            values[ATTRIBUTES[ident]] = shown
        elif ident == TEMPERATURE:
            # The raw value packs the lowest and highest temperatures too ("32 (Min/Max 24/38)"): the current one
            # is what smartctl gives as the disk's temperature, else the raw value's lowest byte.
            current = _dict(doc, "temperature").get("current")
            if _number(current):
                values["smart_194_raw"] = float(current)
            elif _number(raw.get("value")):
                values["smart_194_raw"] = float(int(raw["value"]) & 0xFF)
    log = _dict(doc, "nvme_smart_health_information_log")
    values.update({reading: float(log[field]) for field, reading in NVME.items() if _number(log.get(field))})
    return values


def _raw(raw: dict) -> float | None:
    """An attribute's raw value: the count smartctl shows first where it shows one with more beside it ("8 (0 1)"
    of a count in 16 bits, "25056h+13m+45.120s" of hours and milliseconds), else the whole raw value (a number
    alone, or bytes and words smartctl only lists: "1 1 1"), as Backblaze's drive stats record it."""
    shown = raw.get("string")
    if isinstance(shown, str) and (count := _COUNT_FIRST_RE.match(shown)):
        return float(count[1])
    return float(raw["value"]) if _number(raw.get("value")) else None


def _readings(known: dict[str, dict[str, Value]]) -> Found:
    """The disks' readings by reading, each reading only where a disk has it; at most MAX_READING_OBJECTS disks,
    the failing ones first."""
    def failing_first(name: str) -> tuple[bool, str]:
        health = known[name][HEALTH]
        return (health[0] if isinstance(health, tuple) else health) != 0.0, name

    kept = sorted(known, key=failing_first)[:MAX_READING_OBJECTS]
    found: Found = {}
    for name in sorted(kept):
        for reading, value in known[name].items():
            found.setdefault(reading, {})[name] = value
    return found


def _bounded(unreadable: dict[str, str]) -> dict[str, str]:
    """At most MOST_UNREADABLE disks named with why; the others counted under "smart"."""
    if len(unreadable) <= MOST_UNREADABLE:
        return unreadable
    named = dict(sorted(unreadable.items())[:MOST_UNREADABLE])
    return {**named, "smart": f"{len(unreadable) - MOST_UNREADABLE} more disks cannot be read (the first "
                              f"{MOST_UNREADABLE} are named)"}


def _model(doc: dict) -> str:
    """The disk's model (ATA, NVMe and SCSI alike in smartctl 7), or its SCSI vendor and product."""
    return _text(doc.get("model_name")) or " ".join(p for p in (_text(doc.get("vendor")), _text(doc.get("product")))
                                                    if p)


def _dict(doc: dict, key: str) -> dict:
    found = doc.get(key)
    return found if isinstance(found, dict) else {}


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
