"""What the agent's top processes cost per sample: one pass over the process table with ~300 processes running.

Starts idle processes until the machine runs `--processes` (default 300), then times the agent's pass over the
process table (agent.collect.TopProcesses) and a whole sample of the agent (agent.collect.Collector.read) each
`--samples` times, after a first pass that only fills psutil's cache, as the agent's first sample does::

    python -m bench.agent_processes
    python -m bench.agent_processes --processes 1000 --samples 50
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import psutil

from agent.collect import Collector, TopProcesses


def _timed(work: Callable[[], object], times: int) -> list[float]:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        work()
        spent.append(time.perf_counter() - start)
    return spent


def _shown(spent: list[float]) -> str:
    ms = sorted(1000 * s for s in spent)
    return f"median {statistics.median(ms):.2f} ms, p90 {ms[int(0.9 * (len(ms) - 1))]:.2f} ms, max {ms[-1]:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agent_processes", description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=300, help="processes running while measured")
    parser.add_argument("--samples", type=int, default=30, help="passes timed")
    args = parser.parse_args()
    started = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
               for _ in range(max(0, args.processes - len(psutil.pids())))]
    try:
        time.sleep(1.0)  # the interpreters settle
        running = len(psutil.pids())
        top = TopProcesses()
        top.read()
        passes = _timed(top.read, args.samples)
        cpu_before = psutil.Process().cpu_times()
        collector = Collector()
        collector.read()
        samples = _timed(collector.read, args.samples)
        cpu = psutil.Process().cpu_times()
        found = top.read()
    finally:
        for process in started:
            process.kill()
        for process in started:
            process.wait()
    cpu_s = (cpu.user + cpu.system - cpu_before.user - cpu_before.system) / (args.samples + 1)
    print(f"processes running: {running}; {args.samples} passes each, on {psutil.cpu_count()} CPUs")
    print(f"top processes, one process_iter pass: {_shown(passes)}")
    print(f"whole sample (metrics, filesystems, top processes): {_shown(samples)}; CPU {1000 * cpu_s:.2f} ms each")
    print(f"at one sample per 5 s that is {100 * cpu_s / 5:.2f} % of one CPU")
    print(f"top now: {found}")


if __name__ == "__main__":
    main()
