"""What the disk model sees of a drive on one day: five SMART counts, how much each grew over the last 7 and
30 days, the drive's age and its model.

Every count is "more is worse" and growth weighs more than level: a drive that has had 40 reallocated sectors
for a year is not the drive that went from 0 to 40 this week. Growth is today's count minus the lowest count
of the window, so a count that was never read in the window is NaN, and a single reading shows no growth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Attribute:
    """A SMART count the model watches, and what an operator calls it."""

    number: int
    name: str

    @property
    def column(self) -> str:
        return f"smart_{self.number}_raw"


ATTRIBUTES = (
    Attribute(5, "reallocated sectors"),
    Attribute(187, "reported uncorrectable errors"),
    Attribute(188, "command timeouts"),
    Attribute(197, "pending sectors"),
    Attribute(198, "offline uncorrectable sectors"),
)
WINDOWS = (7, 30)  # days over which growth is measured; the longest one also explains it ("0 → 48 in 6 days")
AGE = "age_years"
MODEL = "model"
HOURS_PER_YEAR = 24 * 365.25
MAX_AGE_YEARS = 15.0  # a larger power-on count is a counter that wrapped or a vendor's encoding, not an age


def growth(attribute: Attribute, days: int) -> str:
    """The name of the feature: how much the attribute grew over the last `days` days."""
    return f"{attribute.column}_grew_{days}d"


def counts(attribute: Attribute) -> list[str]:
    """The attribute's monotone features: its level, then its growth over each window."""
    return [attribute.column, *(growth(attribute, days) for days in WINDOWS)]


COUNTS = [name for attribute in ATTRIBUTES for name in counts(attribute)]
FEATURES = [*COUNTS, AGE, MODEL]


def features(readings: pd.DataFrame) -> pd.DataFrame:
    """One row of FEATURES per reading, on the same index: `readings` as `backblaze.tidy` leaves them (sorted
    by drive, then date, one reading per drive and day)."""
    out = pd.DataFrame(index=readings.index)
    columns = [attribute.column for attribute in ATTRIBUTES]
    for attribute in ATTRIBUTES:
        out[attribute.column] = readings[attribute.column].to_numpy(dtype=float)
    by_drive = readings[["serial_number", "date", *columns]].groupby("serial_number", sort=False)
    for days in WINDOWS:
        # The window holds the readings of the last `days` days and today's. Rows come back grouped by drive in
        # the order of the first reading of each, which on sorted readings is the readings' own order.
        lowest = by_drive.rolling(f"{days + 1}D", on="date")[columns].min().to_numpy()
        for i, attribute in enumerate(ATTRIBUTES):
            out[growth(attribute, days)] = np.maximum(out[attribute.column].to_numpy() - lowest[:, i], 0.0)
    age = readings["smart_9_raw"].to_numpy(dtype=float) / HOURS_PER_YEAR
    out[AGE] = np.where((age >= 0) & (age <= MAX_AGE_YEARS), age, np.nan)
    out[MODEL] = readings["model"].astype(object).where(readings["model"].notna(), None)
    return out[FEATURES]


def since(drive: pd.DataFrame, attribute: Attribute, days: int = WINDOWS[-1]) -> tuple[float, int] | None:
    """Where a drive's count grew from: its lowest reading in the last `days` days and how many days before the
    latest reading it was last that low; None when the count did not grow (or was not read)."""
    last = drive["date"].iloc[-1]
    window = drive[drive["date"] >= last - pd.Timedelta(days=days)]
    values = window[attribute.column]
    now = values.iloc[-1]
    if np.isnan(now) or values.isna().all() or values.min() >= now:
        return None
    lowest = values.min()
    then = window.loc[values == lowest, "date"].iloc[-1]
    return float(lowest), int((last - then).days)
