"""What the bot asks of the disk model: each disk's risk on its latest reading, and what drove it.

A driver is a count (its level and growth together), the disk's age or its model, when it adds at least MIN_PUSH
to the log-odds of failing and a quarter of the strongest one's push; a count that grew says from what and how
fast: "reallocated sectors 0 → 48 in 6 days, pending sectors 8".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pandas as pd
from sklearn.pipeline import Pipeline

from ml.disks.backblaze import tidy
from ml.disks.features import AGE, ATTRIBUTES, MODEL, counts, features, since
from ml.disks.model import contributions, predict

MIN_PUSH = 0.5  # log-odds a feature must add to count as a driver (odds times 1.6); less is noise
TOP = 3  # drivers named at most
AGE_DRIVER = "age"
MODEL_DRIVER = "model"


def _count(value: float) -> str:
    return f"{value:,.0f}"


@dataclass(frozen=True)
class Driver:
    """One thing that raised a disk's P, with its reading now and, for a count that grew, where it grew from."""

    name: str  # an attribute's name ("reallocated sectors"), AGE_DRIVER or MODEL_DRIVER
    now: float | str  # the count or the age in years as read last, or the model
    push: float  # what it adds to the log-odds of failing
    then: float | None = None  # the lowest count of the last 30 days, when the count grew since
    days: int | None = None  # how many days before the latest reading the count was that low

    def __str__(self) -> str:
        if self.name == AGE_DRIVER:
            return f"powered on for {self.now:.1f} years"
        if self.name == MODEL_DRIVER:
            return f"model {self.now}"
        if self.then is None:
            return f"{self.name} {_count(self.now)}"
        return f"{self.name} {_count(self.then)} → {_count(self.now)} in {self.days} day{'' if self.days == 1 else 's'}"


@dataclass(frozen=True)
class DiskRisk:
    """One disk on its latest reading: P(it fails within 30 days), whether that reaches the alert threshold,
    and the drivers of P, strongest first."""

    serial: str
    model: str | None
    date: date  # of the latest reading
    p: float
    alert: bool
    drivers: tuple[Driver, ...] = field(default=())

    @property
    def explanation(self) -> str:
        return ", ".join(map(str, self.drivers))


def _drivers(drive: pd.DataFrame, latest: pd.Series, push: pd.Series) -> tuple[Driver, ...]:
    """The drivers of one disk: `drive` its readings, `latest` the features of its latest one and `push` what
    each of them adds (ml.disks.model.contributions)."""
    found = []
    for attribute in ATTRIBUTES:
        value = float(push[counts(attribute)].sum())
        if value >= MIN_PUSH:
            grew = since(drive, attribute)
            found.append(Driver(attribute.name, float(latest[attribute.column]), value, *(grew or (None, None))))
    if push[AGE] >= MIN_PUSH:
        found.append(Driver(AGE_DRIVER, float(latest[AGE]), float(push[AGE])))
    if push[MODEL] >= MIN_PUSH:
        found.append(Driver(MODEL_DRIVER, latest[MODEL] or "not reported", float(push[MODEL])))
    if not found:
        return ()
    strongest = max(driver.push for driver in found)
    ranked = sorted(found, key=lambda driver: driver.push, reverse=True)
    return tuple(driver for driver in ranked[:TOP] if driver.push >= strongest / 4)


class DiskModel:
    """A fitted disk model and its alert threshold (with the metadata it was saved with)."""

    def __init__(self, pipeline: Pipeline, threshold: float, meta: dict | None = None) -> None:
        self.pipeline = pipeline
        self.threshold = threshold
        self.meta = meta or {}

    def predict(self, history: pd.DataFrame) -> list[DiskRisk]:
        """The risk of every disk in `history`, riskiest first.

        `history` holds daily readings of one or more disks in Backblaze's column names (serial_number, date,
        model, smart_5_raw, ...; any subset): 30 days of them show how the counts grew, a single day only their
        level. Each disk is judged on its latest reading."""
        readings = tidy(history)
        if readings.empty:
            return []
        latest = ~readings["serial_number"].duplicated(keep="last").to_numpy()
        rows = features(readings)[latest]
        p = predict(self.pipeline, rows)
        pushes = contributions(self.pipeline, rows)
        drives = dict(tuple(readings.groupby("serial_number", sort=False)))
        risks = []
        for (index, row), chance in zip(rows.iterrows(), p, strict=True):
            serial = readings.at[index, "serial_number"]
            risks.append(DiskRisk(
                serial=serial, model=row[MODEL], date=readings.at[index, "date"].date(), p=float(chance),
                alert=bool(chance >= self.threshold), drivers=_drivers(drives[serial], row, pushes.loc[index]),
            ))
        return sorted(risks, key=lambda risk: risk.p, reverse=True)
