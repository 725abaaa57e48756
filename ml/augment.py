"""Synthetic training samples: healthy machines, and machines with one or two metrics at an edge.

Machines that are down send nothing, so real stressed samples are rare. We make them: a sample whose
metrics lie anywhere in the healthy range (idle to busy), with one or two metrics pushed to their edge
(memory, swap or disk full, a hot CPU, a run queue far longer than the CPUs, which also pins the CPU).
Healthy rows span the same range, busy machines included, so that busy-but-healthy stays normal whatever
the fleet happens to look like. Everything is drawn from a seeded generator: the same seed, the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.features import FEATURES, ZONES

NO_SENSOR_SHARE = 0.15  # per metric: machines lack sensors (no temperature, no swap): teach the model to do without
# CPU at 100 % is a busy machine, not an edge of its own: it is pinned only together with a long run queue.
PUSHABLE = [name for name in FEATURES if name != "cpu_percent"]
PINNED_CPU = (90.0, 100.0)


def healthy_range(name: str) -> tuple[float, float]:
    """From an idle to a busy but healthy machine."""
    zone = ZONES[name]
    return min(0.0, zone.typical), zone.healthy


def edge_range(name: str) -> tuple[float, float]:
    """Where a metric says the machine needs a technical intervention."""
    zone = ZONES[name]
    return zone.edge, zone.top


def healthy_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    """Metrics drawn uniformly from idle to busy-but-healthy, some sensors missing."""
    bounds = np.array([healthy_range(name) for name in FEATURES])
    values = bounds[:, 0] + rng.random((n, len(FEATURES))) * (bounds[:, 1] - bounds[:, 0])
    values[rng.random(values.shape) < NO_SENSOR_SHARE] = np.nan
    return values


def push_edges(backgrounds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The rows with one or two metrics each pushed to an edge value; the rest of each row is kept."""
    values = backgrounds.copy()
    cpu, load = FEATURES.index("cpu_percent"), FEATURES.index("load_1m")
    for row in values:
        for name in rng.choice(PUSHABLE, size=rng.integers(1, 3), replace=False):
            row[FEATURES.index(name)] = rng.uniform(*edge_range(name))
        if row[load] >= ZONES["load_1m"].edge:
            row[cpu] = rng.uniform(*PINNED_CPU)
    return values


def synthetic(
    n_stressed: int, n_normal: int, seed: int, backgrounds: pd.DataFrame | None = None,
    background_weights: np.ndarray | None = None,
) -> pd.DataFrame:
    """`n_stressed` edge-value rows labelled 1 and `n_normal` healthy rows labelled 0.

    The stressed rows' other metrics are drawn from `backgrounds` (real normal rows, by weight) when given,
    else from the healthy range: either way from where normal rows lie, so a background alone says nothing.
    """
    rng = np.random.default_rng(seed)
    normal = healthy_rows(n_normal, rng)
    if backgrounds is None:
        base = healthy_rows(n_stressed, rng)
    else:
        p = None if background_weights is None else background_weights / background_weights.sum()
        base = backgrounds[FEATURES].to_numpy(dtype=float)[rng.choice(len(backgrounds), size=n_stressed, p=p)]
    out = pd.DataFrame(np.vstack([push_edges(base, rng), normal]), columns=FEATURES)
    out["label"] = np.r_[np.ones(n_stressed, dtype=int), np.zeros(n_normal, dtype=int)]
    return out


def clearly_normal(real: pd.DataFrame) -> pd.Series:
    """Rows whose every metric lies in the healthy range: only those may count as normal without a label.

    An unlabelled sample near an edge is most likely an alert nobody answered, not evidence of normal.
    """
    inside = pd.Series(True, index=real.index)
    for name in FEATURES:
        inside &= real[name].isna() | (real[name] <= ZONES[name].healthy)
    return inside
