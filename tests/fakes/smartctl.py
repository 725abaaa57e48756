"""A `smartctl` of the test's, first on PATH, answering with smartctl's own JSON (smartmontools 7, `--json`): what
the test says each disk answers, and its exit status.

The answers below follow the schema smartctl writes (json_format_version 1.0), cut down to the parts the agent reads
and a few around them: an ATA hard disk whose attribute 194 packs the lowest and highest temperatures into its raw
value, as smartctl's default "tempminmax" format shows them; an NVMe disk with its health log; and the messages
and exit statuses of the disks smartctl cannot read.
"""

from __future__ import annotations

import copy
import json
import stat
from pathlib import Path

SMARTCTL = {"version": [7, 3], "svn_revision": "5338", "platform_info": "x86_64-linux-6.1.0-18-amd64",
            "build_info": "(local build)", "exit_status": 0}


def _attribute(ident: int, name: str, value: int, worst: int, thresh: int, raw: int, shown: str) -> dict:
    return {"id": ident, "name": name, "value": value, "worst": worst, "thresh": thresh, "when_failed": "",
            "flags": {"value": 50, "string": "-O--CK ", "prefailure": False, "updated_online": True,
                      "performance": False, "error_rate": False, "event_count": True, "auto_keep": True},
            "raw": {"value": raw, "string": shown}}


ATA_DISK = {
    "json_format_version": [1, 0],
    "smartctl": {**SMARTCTL, "argv": ["smartctl", "--json", "--info", "--health", "--attributes", "/dev/sda"]},
    "device": {"name": "/dev/sda", "info_name": "/dev/sda [SAT]", "type": "sat", "protocol": "ATA"},
    "model_family": "Seagate Barracuda 7200.14 (AF)",
    "model_name": "ST3000DM001-1CH166",
    "serial_number": "Z1F0ABCD",
    "firmware_version": "CC27",
    "user_capacity": {"blocks": 5860533168, "bytes": 3000592982016},
    "rotation_rate": 7200,
    "smart_support": {"available": True, "enabled": True},
    "smart_status": {"passed": True},
    "ata_smart_attributes": {"revision": 10, "table": [
        _attribute(1, "Raw_Read_Error_Rate", 117, 99, 6, 148665384, "148665384"),
        # A count in the lowest 16 bits, more beside it: smartctl's default "raw16(raw16)" shows "8 (0 1)".
        _attribute(5, "Reallocated_Sector_Ct", 100, 100, 10, 65544, "8 (0 1)"),
        # Hours in the lowest 32 bits, milliseconds above ("msec24hour32", as smartctl's drive database reads this
        # family): 25056 h and 825,120 ms.
        _attribute(9, "Power_On_Hours", 72, 72, 0, 3543839006663136, "25056h+13m+45.120s"),
        _attribute(187, "Reported_Uncorrect", 100, 100, 0, 0, "0"),
        # Three 16-bit counters that smartctl only lists ("raw16" for this family): the raw value is what is kept.
        _attribute(188, "Command_Timeout", 100, 99, 0, 4295032833, "1 1 1"),
        # 32 °C now, 24 and 38 the lowest and highest since power-on, packed: 0x0026_0018_0020.
        _attribute(194, "Temperature_Celsius", 32, 40, 0, 163210330144, "32 (Min/Max 24/38)"),
        _attribute(197, "Current_Pending_Sector", 100, 100, 0, 16, "16"),
        _attribute(198, "Offline_Uncorrectable", 100, 100, 0, 16, "16"),
    ]},
    "power_on_time": {"hours": 25056, "minutes": 13},
    "power_cycle_count": 112,
    "temperature": {"current": 32},
}

NVME_DISK = {
    "json_format_version": [1, 0],
    "smartctl": {**SMARTCTL, "argv": ["smartctl", "--json", "--info", "--health", "--attributes", "/dev/nvme0n1"]},
    "device": {"name": "/dev/nvme0n1", "info_name": "/dev/nvme0n1", "type": "nvme", "protocol": "NVMe"},
    "model_name": "Samsung SSD 970 EVO Plus 1TB",
    "serial_number": "S4EWNX0R123456",
    "firmware_version": "2B2QEXM7",
    "nvme_pci_vendor": {"id": 5197, "subsystem_id": 5197},
    "smart_support": {"available": True, "enabled": True},
    "smart_status": {"passed": True, "nvme": {"value": 0}},
    "nvme_smart_health_information_log": {
        "critical_warning": 0, "temperature": 41, "available_spare": 100, "available_spare_threshold": 10,
        "percentage_used": 3, "data_units_read": 28318023, "data_units_written": 41561316,
        "host_reads": 325402190, "host_writes": 718218911, "controller_busy_time": 1371, "power_cycles": 388,
        "power_on_hours": 6177, "unsafe_shutdowns": 41, "media_errors": 2, "num_err_log_entries": 1024,
        "warning_temp_time": 0, "critical_comp_time": 0, "temperature_sensors": [41, 48],
    },
    "temperature": {"current": 41},
    "power_cycle_count": 388,
    "power_on_time": {"hours": 6177},
}


def failing(answer: dict) -> dict:
    """The same disk failing its self-assessment: smartctl's exit status has bit 3 (and 4: an attribute at or below
    its threshold) set."""
    failed = copy.deepcopy(answer)
    failed["smart_status"] = {"passed": False}
    failed["smartctl"]["exit_status"] = 24
    return failed


def grown(answer: dict, reallocated: int, pending: int) -> dict:
    """The same disk once its reallocated (5) and pending (197) sectors grew to these counts."""
    worse = copy.deepcopy(answer)
    for attribute in worse["ata_smart_attributes"]["table"]:
        count = {5: reallocated, 197: pending}.get(attribute["id"])
        if count is not None:
            attribute["raw"] = {"value": count, "string": str(count)}
    return worse


def unreadable(status: int, *messages: str, **more: object) -> dict:
    """What smartctl answers about a disk it cannot read: its messages (severity "error") and exit status."""
    return {"json_format_version": [1, 0],
            "smartctl": {**SMARTCTL, "messages": [{"string": m, "severity": "error"} for m in messages],
                         "exit_status": status}, **more}


def scan(*devices: tuple[str, str, str]) -> dict:
    """`smartctl --json --scan`: (name, type, protocol) of each device found."""
    return {"json_format_version": [1, 0], "smartctl": {**SMARTCTL, "argv": ["smartctl", "--json", "--scan"]},
            "devices": [{"name": name, "info_name": name, "type": kind, "protocol": protocol}
                        for name, kind, protocol in devices]}


# Answers with the files of a folder: scan.json for --scan; for a disk "<type> <device>.json" (the type when smartctl
# was given one with --device, the device without /dev/, "/" and " " as "_"), else default.json; the exit status is
# the answer's own; it first waits as long as the answer's .hang file says. Each call is added to the file "asked".
_SCRIPT = """#!/bin/sh
echo "$*" >> "{folder}/asked"
case " $* " in *" --scan "*) cat "{folder}/scan.json" 2>/dev/null || echo '{{"devices": []}}'; exit 0 ;; esac
key=""
while [ $# -gt 1 ]; do
  if [ "$1" = --device ]; then shift; key="$1 "; fi
  shift
done
key=$(printf '%s%s' "$key" "${{1#/dev/}}" | tr '/ ' '__')
answer="{folder}/$key.json"
[ -f "$answer" ] || answer="{folder}/default.json"
[ -f "$answer.hang" ] && sleep "$(cat "$answer.hang")"
cat "$answer"
exit $(cat "$answer.status")
"""


class FakeSmartctl:
    """The answers of a fake smartctl living in `folder`, which is put first on PATH."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        program = folder / "smartctl"
        program.write_text(_SCRIPT.format(folder=folder))
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
        self.answer("default", unreadable(2, "Smartctl open device: /dev/sdx failed: No such device"))

    def answer(self, disk: str, doc: dict) -> None:
        """What smartctl says about `disk` ("sda", "megaraid,0 bus/0", "default" for any other)."""
        key = disk.replace("/", "_").replace(" ", "_")
        (self.folder / f"{key}.json").write_text(json.dumps(doc, indent=2))
        (self.folder / f"{key}.json.status").write_text(str(doc["smartctl"]["exit_status"]))

    def hang(self, disk: str, seconds: float) -> None:
        """`disk` takes this long to answer, as a dying disk does while it retries."""
        (self.folder / f"{disk.replace('/', '_').replace(' ', '_')}.json.hang").write_text(f"{seconds}")

    def scan(self, doc: dict) -> None:
        (self.folder / "scan.json").write_text(json.dumps(doc))

    def asked(self, about: str = "") -> list[str]:
        """The command lines smartctl was run with (those that name `about`)."""
        try:
            lines = (self.folder / "asked").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [line for line in lines if about in line.split()]
