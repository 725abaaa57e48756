"""What the two common SMART exporters make of smartctl's answer about a disk (tests/fakes/smartctl.py's JSON), as
Prometheus scrapes them: series (name, labels) -> value, in the form of tests/fakes/node_exporter.py.

- prometheus-community's smartctl_exporter 0.9 and later (smartctl.go): the info series `smartctl_device`, the
  verdict and smartctl's exit status, each attribute's four values, the power-on time in seconds, the temperatures
  and NVMe's health log, every series of a disk by its `device` label, the path without /dev/ (0.9 pruned it).
- node-exporter-textfile-collector-scripts' smartmon.sh (Debian's prometheus-node-exporter-collectors runs it every
  15 minutes into its textfile directory): `smartmon_device_info`, `smartmon_device_smart_healthy`,
  `smartmon_device_active` and `smartmon_<attribute>_raw_value`, each disk by its path in `disk`; the raw value is
  the first number of smartctl's text (its awk's `$10`). `textfile` writes them as that script's file.
"""

from __future__ import annotations

import re

from tests.fakes.node_exporter import Labels

Scrape = dict[tuple[str, Labels], float]
# The attributes smartmon.sh keeps, of those the agent reads (its list is longer).
SMARTMON_ATTRIBUTES = ("reallocated_sector_ct", "reported_uncorrect", "command_timeout", "current_pending_sector",
                       "offline_uncorrectable", "power_on_hours", "temperature_celsius", "raw_read_error_rate")
NVME_FIELDS = ("critical_warning", "available_spare", "available_spare_threshold", "percentage_used", "media_errors")


def smartctl_exporter(doc: dict, device: str | None = None) -> Scrape:
    """smartctl_exporter's series of one disk, from smartctl's JSON answer about it."""
    disk = device or doc["device"]["name"].removeprefix("/dev/")
    of = (("device", disk),)
    scrape: Scrape = {("smartctl_device", tuple(sorted((
        ("device", disk), ("interface", doc["device"]["type"]), ("protocol", doc["device"]["protocol"]),
        ("model_family", doc.get("model_family", "")), ("model_name", doc.get("model_name", "")),
        ("serial_number", doc.get("serial_number", "")), ("firmware_version", doc.get("firmware_version", "")),
        ("ata_additional_product_id", "unknown"), ("ata_version", ""), ("sata_version", ""), ("form_factor", ""))))):
        1.0}
    scrape["smartctl_device_smartctl_exit_status", of] = float(doc["smartctl"]["exit_status"])
    if "passed" in doc.get("smart_status", {}):
        scrape["smartctl_device_smart_status", of] = float(doc["smart_status"]["passed"])
    for attribute in doc.get("ata_smart_attributes", {}).get("table", []):
        for kind, value in (("value", attribute["value"]), ("worst", attribute["worst"]),
                            ("thresh", attribute["thresh"]), ("raw", attribute["raw"]["value"])):
            labels = (("attribute_flags_long", "event_count,auto_keep"), ("attribute_flags_short", "-O--CK"),
                      ("attribute_id", str(attribute["id"])), ("attribute_name", attribute["name"]),
                      ("attribute_value_type", kind), ("device", disk))
            scrape["smartctl_device_attribute", labels] = float(value)
    power_on = doc.get("power_on_time", {})
    scrape["smartctl_device_power_on_seconds", of] = power_on.get("hours", 0) * 3600.0 + power_on.get("minutes", 0) * 60
    for kind, value in doc.get("temperature", {}).items():
        scrape["smartctl_device_temperature", (("device", disk), ("temperature_type", kind))] = float(value)
    scrape["smartctl_device_temperature", (("device", disk), ("temperature_type", "drive_trip"))] = 60.0
    health = doc.get("nvme_smart_health_information_log", {})
    for field in NVME_FIELDS:  # written for every disk: 0 where smartctl's answer has no NVMe log
        scrape[f"smartctl_device_{field}", of] = float(health.get(field, 0))
    scrape["smartctl_device_power_cycle_count", of] = float(doc.get("power_cycle_count", 0))
    scrape["smartctl_device_capacity_bytes", of] = 3e12
    return scrape


def smartmon(doc: dict | None, path: str, kind: str = "sat", active: bool = True) -> Scrape:
    """smartmon.sh's series of one disk, from smartctl's JSON answer about it (None: asleep, nothing asked)."""
    of = (("disk", path), ("type", kind))
    scrape: Scrape = {("smartmon_smartctl_run", of): 1.7e9, ("smartmon_device_active", of): float(active)}
    if doc is None:
        return scrape
    # Its info comes from smartctl's text, whose "Device Model:" only ATA disks have (NVMe's is "Model Number:").
    model = doc.get("model_name", "") if doc["device"]["protocol"] == "ATA" else ""
    info = (("device_model", model), ("disk", path), ("firmware_version", doc["firmware_version"]),
            ("lun_id", ""), ("model_family", doc.get("model_family", "")), ("product", ""), ("revision", ""),
            ("serial_number", doc["serial_number"]), ("type", kind), ("vendor", ""))
    scrape["smartmon_device_info", info] = 1.0
    scrape["smartmon_device_smart_available", of] = 1.0
    scrape["smartmon_device_smart_enabled", of] = 1.0
    scrape["smartmon_device_smart_healthy", of] = float(doc["smart_status"]["passed"])
    for attribute in doc.get("ata_smart_attributes", {}).get("table", []):
        name = attribute["name"].lower()
        if name not in SMARTMON_ATTRIBUTES:
            continue
        labels = (("disk", path), ("smart_id", str(attribute["id"])), ("type", kind))
        first = float(re.match(r"\d+", attribute["raw"]["string"])[0])  # awk's $10: the first word of RAW_VALUE
        for part, value in (("value", attribute["value"]), ("worst", attribute["worst"]),
                            ("threshold", attribute["thresh"]), ("raw_value", first)):
            scrape[f"smartmon_{name}_{part}", labels] = float(value)
    return scrape


def textfile(scrape: Scrape) -> str:
    """The series as smartmon.sh writes its file (sorted, each family with its HELP and TYPE)."""
    lines, family = [], None
    for (name, labels), value in sorted(scrape.items()):
        if name != family:
            lines += [f"# HELP {name} SMART metric {name.removeprefix('smartmon_')}", f"# TYPE {name} gauge"]
            family = name
        shown = ",".join(f'{key}="{text}"' for key, text in labels)
        lines.append(f"{name}{{{shown}}} {value:e}")
    return "\n".join(lines) + "\n"
