"""A machine's /proc, /sys and / written by a test, in the kernel's own formats, for the agent to read through
--procfs, --sysfs and --rootfs (and node_exporter through --path.procfs and --path.sysfs).

It starts as a quiet, healthy machine: one CPU line, one disk, eth0 up, no md array, bond, EDAC or sensor. A test
writes what it needs on top, and changes counters between two samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.kernel import Roots

MDSTAT = """Personalities : [raid1] [raid0]
md0 : active raid1 sdc[1] sdb[0](F)
      1046528 blocks super 1.2 [2/1] [_U]

md1 : active raid0 sdd[1] sde[0]
      2093056 blocks super 1.2 512k chunks

md127 : inactive sdf[0](S)
      1046528 blocks super 1.2

unused devices: <none>
"""

# Columns of /proc/net/dev after the interface name.
_NET_DEV_HEADER = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier "
    "compressed\n"
)


@dataclass
class Interface:
    """One line of /proc/net/dev: packets, errors and drops each way."""

    rx_packets: int = 0
    rx_errors: int = 0
    rx_drops: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_drops: int = 0

    def line(self, name: str) -> str:
        rx = f"{self.rx_packets * 1000} {self.rx_packets} {self.rx_errors} {self.rx_drops} 0 0 0 0"
        tx = f"{self.tx_packets * 1000} {self.tx_packets} {self.tx_errors} {self.tx_drops} 0 0 0 0"
        return f"{name:>6}: {rx} {tx}\n"


class MachineTree:
    """The files of one made-up machine under `folder`: proc/, sys/ and root/."""

    def __init__(self, folder: Path) -> None:
        self.procfs, self.sysfs, self.rootfs = folder / "proc", folder / "sys", folder / "root"
        for root in (self.procfs, self.sysfs, self.rootfs):
            root.mkdir(parents=True)
        self.cpu("100 0 50 1000 10 0 0 0 0 0")
        self.vmstat(oom_kill=0, pgmajfault=0)
        self.write("proc/meminfo", "".join(f"{name}: {kib} kB\n" for name, kib in (
            ("MemTotal", 8000000), ("MemFree", 4000000), ("MemAvailable", 6000000), ("Buffers", 1000),
            ("Cached", 100000), ("Shmem", 1000), ("Active", 500000), ("Inactive", 500000), ("SReclaimable", 1000),
            ("SwapTotal", 0), ("SwapFree", 0))))
        self.write("proc/loadavg", "0.10 0.20 0.30 1/300 4242\n")
        self.write("proc/sys/kernel/pid_max", "4194304\n")
        self.write("proc/sys/fs/file-nr", "2000\t0\t100000\n")
        # The one filesystem the made-up machine has is the real root, so that statvfs has something to read.
        self.write("proc/self/mounts", "/dev/vda / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n")
        self.write("proc/diskstats", self.diskstats_line("sda", weighted_ms=0))
        self.net_dev({"lo": Interface(50, 0, 0, 50), "eth0": Interface()})
        for resource in ("cpu", "memory", "io"):  # node_exporter reads all three or none
            self.pressure(resource, 0)
        self.write("sys/block/sda/size", "1000000\n")
        self.write("sys/class/net/eth0/carrier_changes", "2\n")
        self.write("sys/class/net/lo/carrier_changes", "0\n")
        self._logged = 0  # records in the kernel log

    @property
    def roots(self) -> Roots:
        return Roots(self.procfs, self.sysfs, self.rootfs)

    @property
    def options(self) -> list[str]:
        """The agent's command-line options that make it read this machine."""
        return ["--procfs", str(self.procfs), "--sysfs", str(self.sysfs), "--rootfs", str(self.rootfs)]

    def write(self, relative: str, text: str) -> Path:
        """Write a file of the machine, `proc/...`, `sys/...` or `root/...`."""
        path = self.procfs.parent / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def log(self, *messages: str) -> None:
        """Add records to the kernel log (root/dev/kmsg) as /dev/kmsg gives them: a header, the text, and lines of
        context that start with a space."""
        path = self.rootfs / "dev" / "kmsg"
        path.parent.mkdir(exist_ok=True)
        with open(path, "a") as log:
            for message in messages:
                self._logged += 1
                log.write(f"3,{self._logged},{self._logged * 1000},-;{message}\n SUBSYSTEM=memory\n")

    def degraded_md_arrays(self) -> None:
        """md0 a mirror with sdb failed, md1 a healthy stripe, md127 an array of two disks assembled from one."""
        self.write("proc/mdstat", MDSTAT)
        self.write("sys/block/md0/md/raid_disks", "2\n")
        self.write("sys/block/md0/md/dev-sdb/state", "faulty\n")
        self.write("sys/block/md0/md/dev-sdc/state", "in_sync\n")
        self.write("sys/block/md127/md/raid_disks", "2\n")

    def cpu(self, ticks: str) -> None:
        """The machine's CPU time since boot, in /proc/stat's order: user nice system idle iowait irq softirq steal
        guest guest_nice."""
        self.write("proc/stat", f"cpu  {ticks}\ncpu0 {ticks}\nbtime 1764200000\nprocesses 5000\n")

    def vmstat(self, **counters: int) -> None:
        self.write("proc/vmstat", "".join(f"{name} {value}\n" for name, value in
                                          {"nr_free_pages": 100000, **counters, "pswpin": 0, "pswpout": 0}.items()))

    def net_dev(self, interfaces: dict[str, Interface]) -> None:
        self.write("proc/net/dev", _NET_DEV_HEADER + "".join(i.line(name) for name, i in interfaces.items()))

    def pressure(self, resource: str, full_us: int) -> None:
        """A PSI file whose tasks all stalled `full_us` microseconds since boot."""
        self.write(f"proc/pressure/{resource}", f"some avg10=0.00 avg60=0.00 avg300=0.00 total={2 * full_us}\n"
                                                f"full avg10=0.00 avg60=0.00 avg300=0.00 total={full_us}\n")

    @staticmethod
    def diskstats_line(disk: str, weighted_ms: int, major: int = 8, minor: int = 0) -> str:
        """A /proc/diskstats line of a disk whose I/Os waited `weighted_ms` in all, as Linux 5.5+ writes it."""
        return f"{major:4} {minor:7} {disk} 100 0 800 50 200 0 1600 80 0 120 {weighted_ms} 0 0 0 0 0 0\n"
