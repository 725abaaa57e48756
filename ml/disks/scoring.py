"""How a detector of failing drives is scored, the model at a threshold and the rules alike.

A detector fires on some readings. A drive is warned on the first day its detector fires; its days of warning
are its failure day minus that day. A failing drive counts as warned ahead when it got 7 days or more; a drive
that did not fail is flagged when its detector fired on any day it was read. `figures` takes nothing but those
two dates per drive, so whoever has them (the --out CSV of `python -m ml.disks evaluate`) can recompute them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ml.disks.features import ATTRIBUTES, growth

AHEAD_DAYS = 7  # a warning this many days before the failure leaves time to copy the data and swap the drive
ALERT_RATE = 0.02  # the share of healthy drives the alert threshold may flag over the data's days


@dataclass(frozen=True)
class Figures:
    """How a detector did on a set of drives."""

    failing: int  # drives that failed
    warned: int  # failing drives warned at all
    ahead: int  # failing drives warned AHEAD_DAYS or more before they failed
    median_days: float | None  # median days of warning of the warned failing drives
    healthy: int  # drives that did not fail
    flagged: int  # of them, the ones the detector fired on

    @property
    def ahead_share(self) -> float:
        return self.ahead / self.failing if self.failing else 0.0

    @property
    def flagged_share(self) -> float:
        return self.flagged / self.healthy if self.healthy else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "ahead_share": self.ahead_share, "flagged_share": self.flagged_share}


def first_warned(readings: pd.DataFrame, fired: np.ndarray) -> pd.Series:
    """The first day each drive of `readings` fired (NaT when it never did), by serial number."""
    drives = readings["serial_number"].unique()
    return readings["date"][fired].groupby(readings["serial_number"][fired]).min().reindex(drives)


def figures(warned_on: pd.Series, failed: pd.Series) -> Figures:
    """The figures of one detector from two dates per drive (by serial number): when it first fired, if ever,
    and when the drive failed, if it did."""
    failed = failed.reindex(warned_on.index)
    failing = failed.notna()
    days = (failed[failing] - warned_on[failing]).dt.days.dropna()
    return Figures(
        failing=int(failing.sum()), warned=len(days), ahead=int((days >= AHEAD_DAYS).sum()),
        median_days=float(days.median()) if len(days) else None,
        healthy=int((~failing).sum()), flagged=int(warned_on[~failing].notna().sum()),
    )


def _any_above_zero(features: pd.DataFrame) -> np.ndarray:
    return (features[[attribute.column for attribute in ATTRIBUTES]] > 0).any(axis=1).to_numpy()


def _grew(by: float) -> Callable[[pd.DataFrame], np.ndarray]:
    columns = [growth(attribute, AHEAD_DAYS) for attribute in ATTRIBUTES if attribute.number in (5, 197)]
    return lambda features: (features[columns] >= by).any(axis=1).to_numpy()


# The rules an operator would write without a model, as the model is measured against them. Growth is today's
# count minus the lowest of the last 7 days (ml/disks/features.py), the same growth the model sees.
RULES: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    "any of 5/187/188/197/198 above zero": _any_above_zero,
    "reallocated or pending grew in 7 days": _grew(1),
    "reallocated or pending grew by 5+ in 7 days": _grew(5),
}


@dataclass(frozen=True)
class Point:
    """The model at one threshold: it fires on the readings whose P(fails within 30 days) reaches it."""

    threshold: float
    figures: Figures


def curve(readings: pd.DataFrame, p: np.ndarray, failed: pd.Series) -> list[Point]:
    """Every point where lowering the threshold warns one more failing drive ahead, highest threshold first:
    the whole trade of warned-ahead drives against flagged healthy ones."""
    early = (readings["serial_number"].map(failed) - readings["date"]).dt.days >= AHEAD_DAYS
    best = pd.Series(p[early.to_numpy()]).groupby(readings["serial_number"][early].to_numpy()).max()
    return [Point(float(t), figures(first_warned(readings, p >= t), failed))
            for t in np.unique(best.to_numpy())[::-1]]


def at_rate(points: list[Point], rate: float) -> Point | None:
    """The point warning the most failing drives ahead while flagging at most `rate` of the healthy ones (the
    highest threshold among equals); None when even the highest threshold flags more."""
    allowed = [point for point in points if point.figures.flagged_share <= rate + 1e-12]
    return max(allowed, key=lambda point: (point.figures.ahead, point.threshold), default=None)
