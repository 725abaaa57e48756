"""The metrics the model uses, where each one is healthy and where it needs an intervention, and turning
samples into the frame the model expects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Zone:
    """What the values of one metric mean to an operator; every model metric is "more is worse"."""

    typical: float  # a healthy machine's usual value: stands in for a missing metric, reference of explanations
    healthy: float  # busy but healthy machines go up to here
    edge: float  # from here on the machine needs a technical intervention (None of CPU's own: see below)
    top: float  # the largest value a sample sensibly has
    # The hard limit: here the machine is out of room (a full disk, memory or swap, a CPU about to throttle or
    # shut down, a run queue eight times the CPUs), whatever anyone said about it: no machine's tolerance reaches
    # it (bot/pipeline/tolerating.py). None: no limit of its own, and the metric takes no tolerance.
    ceiling: float | None = None


# Rates (bytes per second) and counts depend on the machine's size, so the model leaves them out.
# CPU at 100 % alone is a busy machine; it is stressed when the run queue stays long too (load_1m), so CPU's
# edge is only ever reached together with load's, and a busy CPU takes no tolerance of its own.
ZONES: dict[str, Zone] = {
    "cpu_percent": Zone(typical=20.0, healthy=100.0, edge=100.0, top=100.0),
    "load_1m": Zone(typical=0.3, healthy=1.2, edge=2.0, top=8.0, ceiling=8.0),
    "mem_percent": Zone(typical=50.0, healthy=90.0, edge=96.0, top=100.0, ceiling=99.5),
    "swap_percent": Zone(typical=5.0, healthy=35.0, edge=85.0, top=100.0, ceiling=97.0),
    "disk_percent": Zone(typical=50.0, healthy=90.0, edge=97.0, top=100.0, ceiling=99.5),
    "cpu_temp_c": Zone(typical=50.0, healthy=82.0, edge=92.0, top=110.0, ceiling=100.0),
    # Pressures: the share of time every task waited (PSI "full"), and CPU time the hypervisor took or that waited
    # for I/O. A few per cent is a busy machine; a quarter of the time with every task stalled on memory is
    # thrashing, whatever memory_percent says.
    "psi_memory_full_percent": Zone(typical=0.0, healthy=5.0, edge=25.0, top=100.0, ceiling=60.0),
    "psi_io_full_percent": Zone(typical=0.0, healthy=10.0, edge=40.0, top=100.0, ceiling=80.0),
    "cpu_steal_percent": Zone(typical=0.0, healthy=10.0, edge=30.0, top=100.0, ceiling=70.0),
    "cpu_iowait_percent": Zone(typical=1.0, healthy=20.0, edge=50.0, top=100.0, ceiling=90.0),
}
FEATURES = list(ZONES)


def frame(samples: Iterable[Mapping[str, float]]) -> pd.DataFrame:
    """A float frame with one column per feature; a metric a sample lacks is NaN, never 0."""
    rows = [[*map(sample.get, FEATURES)] for sample in samples]  # None becomes NaN in the float array
    return pd.DataFrame(np.array(rows, dtype=float).reshape(-1, len(FEATURES)), columns=FEATURES)


def table(rows: Sequence[Sequence[float | None]], columns: Sequence[str]) -> pd.DataFrame:
    """The same frame from rows of values in the order of `columns` (None where a metric is missing), such as
    the rows a store writes: one conversion of the whole batch, no lookup in a mapping per sample."""
    at = [list(columns).index(name) for name in FEATURES]
    return pd.DataFrame(np.array(rows, dtype=float).reshape(-1, len(columns))[:, at], columns=FEATURES)
