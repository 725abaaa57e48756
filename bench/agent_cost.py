"""What the agent costs the machine it watches: the CPU time of one whole sample (every metric, filesystem, top
process and reading), on a machine of ~300 processes and 20 filesystems, as a share of one CPU at one sample per
`--interval` seconds (5, the agent's default).

Starts idle processes until the machine runs `--processes`; as root, mounts `--filesystems` small ext4 images on
loop devices (otherwise it measures with the filesystems this machine has, and says so). Then it times
Collector.read() `--samples` times after two samples that fill psutil's cache and the agent's counters, in CPU
seconds of the process and of the processes it started and waited for (systemctl), with the parts: the pass over
the process table, and the readings (agent/readings.py) alone. systemctl runs at most every 30 s and smartctl at
most every 5 min (once per disk), so they are timed on their own: systemctl where systemd runs the machine, smartctl
where it is installed::

    python -m bench.agent_cost
    python -m bench.agent_cost --processes 1000 --filesystems 40 --samples 200
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from agent import smart, systemd
from agent.collect import Collector, TopProcesses
from agent.kernel import Roots
from agent.readings import Readings


def _cpu_s() -> float:
    """CPU seconds of this process and of the children it waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _cpu_ms_each(work: Callable[[], object], times: int) -> float:
    """Mean CPU milliseconds of one call of `work`."""
    before = _cpu_s()
    for _ in range(times):
        work()
    return 1000 * (_cpu_s() - before) / times


@contextlib.contextmanager
def _idle_processes(count: int) -> Iterator[None]:
    started = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]) for _ in range(count)]
    try:
        time.sleep(1.0)  # the interpreters settle
        yield
    finally:
        for process in started:
            process.kill()
        for process in started:
            process.wait()


@contextlib.contextmanager
def _loop_filesystems(count: int) -> Iterator[int]:
    """`count` 8 MiB ext4 images mounted on loop devices; yields how many were mounted (none without root)."""
    if os.geteuid() != 0 or count <= 0:
        yield 0
        return
    with tempfile.TemporaryDirectory(prefix="rigwatch-bench-") as folder:
        mounted: list[Path] = []
        try:
            for i in range(count):
                image, mount = Path(folder, f"fs{i}.img"), Path(folder, f"fs{i}")
                mount.mkdir()
                with open(image, "wb") as out:
                    out.truncate(8 << 20)
                subprocess.run(["mkfs.ext4", "-q", str(image)], check=True, capture_output=True, timeout=60)
                subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True, capture_output=True,
                               timeout=60)
                mounted.append(mount)
            yield len(mounted)
        finally:
            for mount in mounted:
                subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True, timeout=60)


def _systemctl_ms() -> float | None:
    """CPU milliseconds of one question to systemd (both systemctl calls), or None where systemd does not run."""
    if not Path("/run/systemd/system").is_dir():
        return None
    asker = systemd.Systemd(Path("/"))
    return _cpu_ms_each(asker.ask, 5)


def _smartctl_ms() -> tuple[float, int, int] | None:
    """CPU milliseconds of one reading of every disk's SMART (a scan, and smartctl for each disk), with how many
    disks were read and how many were said unreadable; None where smartctl is not installed."""
    if smart.find_smartctl() is None:
        return None
    reader = smart.Smart(Path("/sys/block"))
    answer = reader.ask()
    if isinstance(answer, str):
        return None
    return _cpu_ms_each(reader.ask, 5), len(answer.found.get("smart_health", {})), len(answer.unreadable)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agent_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=300, help="processes running while measured")
    parser.add_argument("--filesystems", type=int, default=20, help="loop ext4 filesystems mounted (as root)")
    parser.add_argument("--samples", type=int, default=100, help="samples timed")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between the agent's samples")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # what this machine cannot read is the agent's news, not the bench's
    with _loop_filesystems(args.filesystems) as mounted, \
            _idle_processes(max(0, args.processes - len(psutil.pids()))):
        running = len(psutil.pids())
        collector = Collector()
        for _ in range(2):
            collector.read()
        filesystems = len(collector.read().filesystems)
        sample_ms = _cpu_ms_each(collector.read, args.samples)
        top = TopProcesses()
        top.read()
        processes_ms = _cpu_ms_each(top.read, args.samples)
        readings = Readings(Roots())
        mounts = collector.mounts()
        readings.read(mounts)
        readings_ms = _cpu_ms_each(lambda: readings.read(mounts), args.samples)
        systemctl_ms = _systemctl_ms()
        smartctl = _smartctl_ms()
    print(f"{running} processes, {filesystems} filesystems reported ({mounted} loop ext4 mounted for this run"
          f"{'' if os.geteuid() == 0 else ': not root, so only those this machine has'}), {psutil.cpu_count()} CPUs")
    print(f"whole sample: {sample_ms:.2f} ms of CPU, of which the process table {processes_ms:.2f} ms and the "
          f"readings {readings_ms:.2f} ms (mean of {args.samples})")
    every_s = systemd.EVERY_S
    if systemctl_ms is None:
        print(f"systemctl: not measured, systemd does not run this machine (asked at most every {every_s:g} s)")
        per_s = sample_ms / args.interval
    else:
        print(f"systemctl: {systemctl_ms:.2f} ms of CPU per question, at most every {every_s:g} s")
        per_s = sample_ms / args.interval + systemctl_ms / every_s
    if smartctl is None:
        print("smartctl: not measured, it is not installed here")
    else:
        smartctl_ms, read, unreadable = smartctl
        print(f"smartctl: {smartctl_ms:.2f} ms of CPU per reading of every disk ({read} read, {unreadable} said "
              f"unreadable), at most every {smart.EVERY_S:g} s")
        per_s += smartctl_ms / smart.EVERY_S
    print(f"at one sample per {args.interval:g} s the agent uses {per_s / 10:.3f} % of one CPU")


if __name__ == "__main__":
    main()
