"""Synthetic training samples generated around edge values.

Machines that are down send nothing, so real stressed samples are rare. We make them: a sample whose
metrics lie inside the normal range observed on the fleet, with one or two metrics pushed to an
extreme (a CPU pinned at 100 %, memory or disk full, swap thrashing, a hot CPU). Everything is drawn
from a seeded generator, so the same seed gives the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.features import FEATURES

# Where a metric sits on a healthy machine when the fleet has not told us yet.
DEFAULT_NORMAL = {
    "cpu_percent": (1.0, 60.0),
    "load_1m": (0.01, 0.7),
    "mem_percent": (15.0, 70.0),
    "swap_percent": (0.0, 15.0),
    "disk_percent": (5.0, 75.0),
    "cpu_temp_c": (30.0, 68.0),
}
# Where a metric says the machine needs a technical intervention.
EDGES = {
    "cpu_percent": (95.0, 100.0),
    "load_1m": (1.8, 4.0),
    "mem_percent": (94.0, 100.0),
    "swap_percent": (75.0, 100.0),
    "disk_percent": (96.0, 100.0),
    "cpu_temp_c": (88.0, 105.0),
}
MIN_OBSERVED = 30  # fewer real values than this and the default normal range is used
NO_SENSOR_SHARE = 0.3  # many machines have no temperature sensor: teach the model to do without


def normal_ranges(real: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """The 5th to 95th percentile of each metric on real samples, kept below its edge."""
    ranges = {}
    for name in FEATURES:
        values = real[name].dropna() if name in real else pd.Series(dtype=float)
        low, high = DEFAULT_NORMAL[name]
        if len(values) >= MIN_OBSERVED:
            low, high = float(values.quantile(0.05)), float(values.quantile(0.95))
        edge = EDGES[name][0]
        high = min(high, edge * 0.9)
        ranges[name] = (min(low, high), high)
    return ranges


def _uniform(rng: np.random.Generator, ranges: dict[str, tuple[float, float]], n: int) -> np.ndarray:
    lows = np.array([ranges[name][0] for name in FEATURES])
    highs = np.array([ranges[name][1] for name in FEATURES])
    return lows + rng.random((n, len(FEATURES))) * (highs - lows)


def synthetic(
    n_stressed: int, n_normal: int, ranges: dict[str, tuple[float, float]], seed: int
) -> pd.DataFrame:
    """`n_stressed` edge-value rows labelled 1 and `n_normal` in-range rows labelled 0."""
    rng = np.random.default_rng(seed)
    normal = _uniform(rng, ranges, n_normal)
    stressed = _uniform(rng, ranges, n_stressed)
    edge_lows = np.array([EDGES[name][0] for name in FEATURES])
    edge_highs = np.array([EDGES[name][1] for name in FEATURES])
    for row in stressed:
        pushed = rng.choice(len(FEATURES), size=rng.integers(1, 3), replace=False)
        row[pushed] = edge_lows[pushed] + rng.random(len(pushed)) * (edge_highs[pushed] - edge_lows[pushed])
    values = np.vstack([stressed, normal])
    out = pd.DataFrame(values, columns=FEATURES)
    temp = FEATURES.index("cpu_temp_c")
    # Drop the sensor only where it was not the pushed metric, so every stressed row stays stressed.
    no_sensor = (rng.random(len(out)) < NO_SENSOR_SHARE) & (values[:, temp] < EDGES["cpu_temp_c"][0])
    out.loc[no_sensor, "cpu_temp_c"] = np.nan
    out["label"] = np.r_[np.ones(n_stressed, dtype=int), np.zeros(n_normal, dtype=int)]
    return out
