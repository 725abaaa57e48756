"""What the model learns to predict: a drive fails within HORIZON_DAYS of a reading.

A drive failed on the day Backblaze marks it (`failure` 1, its last day in the data). A person can say the same
of the bot's stored readings: a label 1 says the drive failed on its last reading, a label 0 that it is fine,
whatever the readings say; a drive nobody labelled and without a failure day did not fail.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

HORIZON_DAYS = 30


def failed_on(readings: pd.DataFrame, labels: Mapping[str, int] | None = None) -> pd.Series:
    """The day each drive of `readings` failed (NaT when it did not), by serial number."""
    last = readings.groupby("serial_number", sort=False)["date"].max()
    days = readings[readings["failure"] == 1].groupby("serial_number")["date"].min().reindex(last.index)
    for serial, label in (labels or {}).items():
        if label not in (0, 1):
            raise ValueError(f"the label of {serial} is {label!r}: 1 (failed) or 0 (fine)")
        if serial in days.index:
            days[serial] = pd.NaT if label == 0 else (days[serial] if pd.notna(days[serial]) else last[serial])
    return days


def target(readings: pd.DataFrame, failed: pd.Series) -> np.ndarray:
    """1 for each reading taken at most HORIZON_DAYS before its drive failed, else 0."""
    left = (readings["serial_number"].map(failed) - readings["date"]).dt.days
    return ((left >= 0) & (left <= HORIZON_DAYS)).to_numpy(dtype=int)
