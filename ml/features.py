"""The metrics the model uses, and turning samples into the frame it expects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

# Rates (bytes per second) and counts depend on the machine's size, so the model leaves them out.
FEATURES = ["cpu_percent", "load_1m", "mem_percent", "swap_percent", "disk_percent", "cpu_temp_c"]


def frame(samples: Iterable[Mapping[str, float]]) -> pd.DataFrame:
    """A float frame with one column per feature; a metric a sample lacks is NaN, never 0."""
    rows = [[sample.get(name, np.nan) for name in FEATURES] for sample in samples]
    return pd.DataFrame(np.array(rows, dtype=float).reshape(-1, len(FEATURES)), columns=FEATURES)
