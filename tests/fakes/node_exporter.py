"""Remote-write requests as Prometheus sends them after scraping node_exporter: hand-built, for the unit tests
and the benchmark.

A machine's scrape is about 1,000 series, as a real node_exporter 1.x on an 8-CPU server gives: the families
Rigwatch reads (its readings too: vmstat, timex, pressure, systemd units, ...), and the many it drops (Go runtime,
netstat, scrape meta-series, ...).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import cramjam

from bot.intake.prompb import remote_pb2

Labels = tuple[tuple[str, str], ...]
CPU_MODES = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")
UNIT_STATES = ("activating", "active", "deactivating", "failed", "inactive")
STALE_NAN = 0x7FF0000000000002  # Prometheus' stale marker, as the bits of a float64


def machine(cpus: int = 8, idle_s: float = 64800.0, busy_s: float = 21600.0, mem_total: float = 16e9,
            mem_available: float = 8e9, swap_total: float = 4e9, swap_free: float = 3e9, load1: float = 2.0,
            filesystems: dict[str, tuple[str, float, float, int]] | None = None, temps: Iterable[float] = (52.0,),
            net_bytes: float = 1e9, disk_bytes: float = 5e9, reserved: float = 0.0, units: int = 30,
            filler: int = 1000) -> dict[tuple[str, Labels], float]:
    """One node_exporter scrape: (name, labels other than instance and job) -> value.

    Each CPU has spent `idle_s` seconds idle and `busy_s` in the other modes since boot. Filesystems: mount
    point -> (fstype, size, avail, readonly), each with `reserved` of its size kept for root (free, not
    available). `units` systemd units, none failed, each in node_exporter's five states. Unused families fill the
    scrape up to `filler` series.
    """
    if filesystems is None:
        filesystems = {"/": ("ext4", 100e9, 60e9, 0), "/boot/efi": ("vfat", 5e8, 4e8, 0),
                       "/run": ("tmpfs", 3e9, 3e9, 0), "/data": ("xfs", 2e12, 3e11, 0)}
    scrape: dict[tuple[str, Labels], float] = {}
    for cpu in range(cpus):
        for mode in CPU_MODES:
            spent = idle_s if mode == "idle" else busy_s * {"user": 0.7, "system": 0.3}.get(mode, 0.0)
            scrape["node_cpu_seconds_total", (("cpu", str(cpu)), ("mode", mode))] = spent
        scrape["node_cpu_scaling_frequency_hertz", (("cpu", str(cpu)),)] = 2.4e9
    scrape["node_load1", ()] = load1
    scrape["node_load5", ()] = load1
    scrape["node_load15", ()] = load1
    for field, value in (("MemTotal", mem_total), ("MemAvailable", mem_available), ("MemFree", mem_available / 2),
                         ("SwapTotal", swap_total), ("SwapFree", swap_free), ("Cached", 3e9), ("Buffers", 2e8)):
        scrape[f"node_memory_{field}_bytes", ()] = value
    for i, (mount, (fstype, size, avail, readonly)) in enumerate(filesystems.items()):
        labels = (("device", f"/dev/sd{chr(97 + i)}1"), ("fstype", fstype), ("mountpoint", mount))
        scrape["node_filesystem_size_bytes", labels] = size
        scrape["node_filesystem_avail_bytes", labels] = avail
        scrape["node_filesystem_free_bytes", labels] = avail + reserved * size
        scrape["node_filesystem_readonly", labels] = float(readonly)
        scrape["node_filesystem_files", labels] = 6e6
        scrape["node_filesystem_files_free", labels] = 5e6
        scrape["node_filesystem_device_error", labels] = 0.0
    for i, temp in enumerate(temps):
        sensor = (("chip", "platform_coretemp_0"), ("sensor", f"temp{i + 1}"))
        scrape["node_hwmon_temp_celsius", sensor] = temp
        scrape["node_hwmon_temp_crit_celsius", sensor] = 100.0
        scrape["node_hwmon_temp_crit_alarm_celsius", sensor] = 0.0
    for device in ("lo", "eth0", "eth1", "docker0"):
        factor = 0.0 if device == "docker0" else 1.0
        for direction in ("receive", "transmit"):
            scrape[f"node_network_{direction}_bytes_total", (("device", device),)] = net_bytes * factor
            for what in ("packets", "errs", "drop", "fifo", "compressed", "multicast"):
                scrape[f"node_network_{direction}_{what}_total", (("device", device),)] = 1e6
        scrape["node_network_up", (("device", device),)] = 1.0
        scrape["node_network_carrier_changes_total", (("device", device),)] = 2.0
        scrape["node_network_mtu_bytes", (("device", device),)] = 1500.0
    for device in ("nvme0n1", "sda", "sdb"):
        scrape["node_disk_read_bytes_total", (("device", device),)] = disk_bytes
        scrape["node_disk_written_bytes_total", (("device", device),)] = disk_bytes * 2
        for what in ("reads_completed_total", "writes_completed_total", "io_time_seconds_total",
                     "read_time_seconds_total", "write_time_seconds_total", "io_now"):
            scrape[f"node_disk_{what}", (("device", device),)] = 1e5
        scrape["node_disk_io_time_weighted_seconds_total", (("device", device),)] = 2e5
    for field, value in (("oom_kill", 0.0), ("pgmajfault", 1e4), ("pgfault", 1e8), ("pgpgin", 1e7), ("pgpgout", 2e7),
                         ("pswpin", 0.0), ("pswpout", 0.0)):
        scrape[f"node_vmstat_{field}", ()] = value
    for name, value in (("filefd_allocated", 3e3), ("filefd_maximum", 9.2e18), ("timex_sync_status", 1.0),
                        ("timex_offset_seconds", 1e-4), ("timex_maxerror_seconds", 0.2), ("timex_status", 8193.0),
                        ("nf_conntrack_entries", 200.0), ("nf_conntrack_entries_limit", 262144.0),
                        ("pressure_memory_stalled_seconds_total", 1.0), ("pressure_memory_waiting_seconds_total", 2.0),
                        ("pressure_io_stalled_seconds_total", 30.0), ("pressure_io_waiting_seconds_total", 40.0),
                        ("pressure_cpu_waiting_seconds_total", 500.0), ("textfile_scrape_error", 0.0)):
        scrape[f"node_{name}", ()] = value
    for i in range(units):
        for state in UNIT_STATES:
            labels = (("name", f"service-{i:02d}.service"), ("state", state), ("type", "simple"))
            scrape["node_systemd_unit_state", labels] = 1.0 if state == "active" else 0.0
    if units:
        for state in UNIT_STATES:
            scrape["node_systemd_units", (("state", state),)] = float(units) if state == "active" else 0.0
    for quantile in ("0", "0.25", "0.5", "0.75", "1"):
        scrape["go_gc_duration_seconds", (("quantile", quantile),)] = 1e-4
    for meta in ("up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                 "scrape_series_added"):
        scrape[meta, ()] = 1.0
    rng = random.Random(len(scrape))
    i = 0
    while len(scrape) < filler:
        scrape[f"node_netstat_Tcp_Ext{i // 8}", (("collector", f"c{i % 8}"),)] = float(rng.randint(0, 10**6))
        i += 1
    return scrape


def write_request(scrapes: dict[str, list[tuple[float, dict[tuple[str, Labels], float]]]],
                  job: str = "node") -> remote_pb2.WriteRequest:
    """A WriteRequest of instance -> [(ts in s, scrape)], one series per (instance, name, labels) with its
    samples in time order, labels sorted by name as Prometheus sends them."""
    request = remote_pb2.WriteRequest()
    for instance, timed in scrapes.items():
        keys = dict.fromkeys(key for _ts, scrape in timed for key in scrape)
        for name, labels in keys:
            series = request.timeseries.add()
            for label_name, value in sorted((("__name__", name), ("instance", instance), ("job", job), *labels)):
                series.labels.add(name=label_name, value=value)
            for ts, scrape in timed:
                if (name, labels) in scrape:
                    series.samples.add(value=scrape[name, labels], timestamp=round(ts * 1000))
    return request


def body(request: remote_pb2.WriteRequest) -> bytes:
    """The HTTP body: the request in snappy's block format, as remote write 1.0 sends it."""
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))
