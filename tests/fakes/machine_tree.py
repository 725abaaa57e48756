"""A machine in trouble as /proc, /sys and a textfile directory that a real node_exporter reads (`--path.procfs`,
`--path.sysfs`, `--collector.textfile.directory`): each file small, in the kernel's own format, written here.

The machine has an md array degraded by a failed member (this kernel has no md driver: a crafted mdstat is how
an array is made), its file table near its limit, a bond with one link down, a critical temperature alarm, the
filesystem /usr mounted read-only, and a reboot waiting, as Debian's apt_info.py (prometheus-node-exporter-
collectors) writes it. Each `step()` makes its counters grow as they would on it: OOM kills, interface errors,
link changes, memory and I/O stalls, CPU time stolen and waiting for I/O, major page faults, disk I/O time and
corrected memory errors.
"""

from __future__ import annotations

import os
from pathlib import Path

MDSTAT = """Personalities : [raid1]
md0 : active raid1 sdb1[1](F) sda1[0]
      1046528 blocks super 1.2 [2/1] [U_]

unused devices: <none>
"""
HEALED_MDSTAT = """Personalities : [raid1]
md0 : active raid1 sdb1[1] sda1[0]
      1046528 blocks super 1.2 [2/2] [UU]

unused devices: <none>
"""
# One process of 7 threads: /proc/<pid>/stat, its fields as the kernel writes them (the 20th is the threads).
PROCESS = "4242 (worker) S 1 4242 4242 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 7 0 100 1000 10 " + " ".join(["0"] * 30)
# The filesystems: the real root, and /usr (on it) mounted read-only, so that statfs works on both.
MOUNTS = "/dev/root / ext4 rw,relatime 0 0\n/dev/sdz1 /usr ext4 ro,relatime 0 0\n"
THREADS, PID_MAX = 7, 32768
FILES_OPEN, FILES_MAX = 9700, 10000


class CraftedMachine:
    """The trees under `root`: `procfs`, `sysfs` and `textfiles`."""

    def __init__(self, root: Path) -> None:
        self.procfs, self.sysfs, self.textfiles = root / "proc", root / "sys", root / "textfile"
        self.steps = 0
        self._write_fixed()
        self.step()

    def flags(self) -> list[str]:
        """node_exporter's flags to read this machine: the trees, the textfile directory, /proc/net/dev rather than
        the real kernel's netlink, and the collectors that are off by default (processes)."""
        return [f"--path.procfs={self.procfs}", f"--path.sysfs={self.sysfs}", "--path.rootfs=/",
                f"--collector.textfile.directory={self.textfiles}", "--no-collector.netdev.netlink",
                "--collector.processes", "--collector.mdadm", "--collector.bonding", "--collector.edac",
                "--collector.hwmon", "--collector.pressure", "--collector.filefd", "--collector.conntrack",
                "--collector.vmstat", "--collector.diskstats", "--collector.netclass", "--collector.textfile",
                "--collector.timex", "--no-collector.systemd"]

    def _write_fixed(self) -> None:
        proc, sys = self.procfs, self.sysfs
        self._write(proc / "mdstat", MDSTAT)
        self._write(proc / "1" / "mounts", MOUNTS)
        self._write(proc / "4242" / "stat", PROCESS + "\n")
        self._write(proc / "sys" / "kernel" / "pid_max", f"{PID_MAX}\n")
        self._write(proc / "sys" / "kernel" / "threads-max", "60000\n")
        self._write(proc / "sys" / "fs" / "file-nr", f"{FILES_OPEN}\t0\t{FILES_MAX}\n")
        self._write(proc / "sys" / "net" / "netfilter" / "nf_conntrack_count", "1000\n")
        self._write(proc / "sys" / "net" / "netfilter" / "nf_conntrack_max", "4000\n")
        self._write(proc / "meminfo", "MemTotal: 16000000 kB\nMemFree: 1000000 kB\nMemAvailable: 4000000 kB\n"
                                      "SwapTotal: 0 kB\nSwapFree: 0 kB\n")
        self._write(proc / "loadavg", f"0.50 0.40 0.30 2/{THREADS} 4242\n")
        self._write(sys / "class" / "net" / "bonding_masters", "bond0\n")
        self._write(sys / "class" / "net" / "bond0" / "bonding" / "slaves", "eth0 eth1\n")
        for link, state in (("eth0", "up"), ("eth1", "down")):
            self._write(sys / "class" / "net" / "bond0" / f"lower_{link}" / "bonding_slave" / "mii_status",
                        f"{state}\n")
        self._write(sys / "class" / "net" / "eth0" / "operstate", "up\n")
        self._write(sys / "class" / "net" / "eth0" / "carrier", "1\n")
        hwmon = sys / "class" / "hwmon" / "hwmon0"
        for name, value in (("name", "coretemp"), ("temp1_input", "97000"), ("temp1_crit", "95000"),
                            ("temp1_crit_alarm", "1")):
            self._write(hwmon / name, f"{value}\n")
        self._write(sys / "devices" / "system" / "edac" / "mc" / "mc0" / "ue_count", "0\n")
        for name in ("ce_noinfo_count", "ue_noinfo_count"):
            self._write(sys / "devices" / "system" / "edac" / "mc" / "mc0" / name, "0\n")
        self._write(self.textfiles / "apt.prom", "# HELP node_reboot_required Node reboot is required for software "
                    "updates.\n# TYPE node_reboot_required gauge\nnode_reboot_required 1\n")

    def heal_md(self) -> None:
        """The failed member replaced and the array rebuilt: both disks active again."""
        self._write(self.procfs / "mdstat", HEALED_MDSTAT)

    def textfile(self, name: str, text: str) -> None:
        """A file of the textfile directory, as a script of the textfile collector writes it (smartmon.prom)."""
        self._write(self.textfiles / name, text)

    def step(self) -> None:
        """The counters one step further: two OOM kills, 30 interface errors in 1,000 packets, a link change,
        memory and I/O stalls, CPU time stolen and waiting for I/O, disk I/O time, a corrected memory error."""
        n = self.steps = self.steps + 1
        proc, sys = self.procfs, self.sysfs
        self._write(proc / "vmstat", f"nr_free_pages 100000\npgfault {1000000 + 900 * n}\npgmajfault {500 + 40 * n}\n"
                                     f"oom_kill {2 * n}\n")
        self._write(proc / "net" / "dev", (
            "Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
            "carrier compressed\n"
            f"    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n"
            f"  eth0: {500000 * n} {1000 * n} {30 * n} {n} 0 0 0 0 {400000 * n} {1000 * n} 0 0 0 0 0 0\n"))
        self._write(sys / "class" / "net" / "eth0" / "carrier_changes", f"{n}\n")
        for resource, full_us in (("memory", 200000), ("io", 300000)):
            self._write(proc / "pressure" / resource, f"some avg10=1.00 avg60=1.00 avg300=1.00 total={2 * full_us * n}"
                                                      f"\nfull avg10=1.00 avg60=1.00 avg300=1.00 total={full_us * n}\n")
        self._write(proc / "pressure" / "cpu", f"some avg10=0.00 avg60=0.00 avg300=0.00 total={1000 * n}\n")
        # user nice system idle iowait irq softirq steal, in 1/100 s: of 100 a step, 20 stolen and 10 waiting for I/O.
        cpu = f"{30 * n} 0 {10 * n} {30 * n} {10 * n} 0 0 {20 * n} 0 0"
        self._write(proc / "stat", f"cpu  {cpu}\ncpu0 {cpu}\nintr 0\nctxt 0\nbtime 1700000000\nprocesses 10\n"
                                   "procs_running 1\nprocs_blocked 0\n")
        self._write(proc / "diskstats", f"   8       0 sda 100 0 2000 50 200 0 4000 80 0 {300 * n} {1500 * n} "
                                        "0 0 0 0 0 0\n")
        self._write(sys / "devices" / "system" / "edac" / "mc" / "mc0" / "ce_count", f"{n}\n")

    @staticmethod
    def _write(path: Path, text: str) -> None:
        """Whole or not at all: node_exporter may read the file at any moment."""
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.part")
        part.write_text(text)
        os.replace(part, path)
