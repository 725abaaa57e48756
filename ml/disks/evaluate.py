"""Honest figures: every drive scored by a model that never saw it, beside the rules, as one table.

The drives are split into folds, stratified by whether they failed (a drive's readings are strongly correlated,
so a split by day would score a drive with a model that learnt it); each fold is scored by the model trained on
the others. The folds are fixed by the seed, so the same readings give the same table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from ml.disks.features import features
from ml.disks.labels import failed_on, target
from ml.disks.model import fit, predict
from ml.disks.scoring import AHEAD_DAYS, ALERT_RATE, RULES, Figures, Point, at_rate, curve, figures, first_warned

FOLDS = 5
SEED = 0


def folds(failed: pd.Series, count: int = FOLDS, seed: int = SEED) -> list[np.ndarray]:
    """The serial numbers held out in each fold, stratified by failure; each drive in exactly one fold."""
    failing = failed.notna().to_numpy()
    count = min(count, int(failing.sum()), int((~failing).sum()))
    if count < 2:
        raise ValueError("scoring held-out drives needs at least 2 drives that failed and 2 that did not")
    split = StratifiedKFold(n_splits=count, shuffle=True, random_state=seed)
    serials = failed.index.to_numpy()
    return [serials[held] for _, held in split.split(serials, failing)]


def held_out(readings: pd.DataFrame, table: pd.DataFrame, failed: pd.Series, split: list[np.ndarray]) -> np.ndarray:
    """P(fails within 30 days) of every reading, from the model trained on the folds of `split` its drive is not
    in."""
    p = np.full(len(readings), np.nan)
    y = target(readings, failed)
    for serials in split:
        scored = readings["serial_number"].isin(serials).to_numpy()
        p[scored] = predict(fit(table[~scored], y[~scored]), table[scored])
    return p


@dataclass(frozen=True)
class Evaluation:
    """The held-out scores of the model and the rules on a set of readings."""

    drives: pd.DataFrame  # by serial number: failed_on, first_warned (model at the threshold), one column per rule
    points: list[Point]  # the model's curve, highest threshold first
    threshold: float  # the alert threshold picked from the curve
    model: Figures  # the model at the alert threshold
    rules: dict[str, Figures]
    folds: int
    seed: int

    def as_dict(self) -> dict:
        """The figures as plain data, for an artifact's metadata."""
        return {
            "folds": self.folds, "seed": self.seed, "alert_rate": ALERT_RATE, "ahead_days": AHEAD_DAYS,
            "threshold": self.threshold, "model": self.model.as_dict(),
            "rules": {name: result.as_dict() for name, result in self.rules.items()},
            "model_at_rule_rates": {name: _best(self.points, result).as_dict() for name, result in self.rules.items()},
            "curve": [[point.threshold, point.figures.ahead, point.figures.flagged_share] for point in self.points],
        }


def _best(points: list[Point], rule: Figures) -> Figures:
    """The model's figures at the share of healthy drives a rule flags (nothing warned when it cannot)."""
    point = at_rate(points, rule.flagged_share)
    return point.figures if point else Figures(rule.failing, 0, 0, None, rule.healthy, 0)


def evaluate(readings: pd.DataFrame, labels: Mapping[str, int] | None = None, count: int = FOLDS,
             seed: int = SEED) -> Evaluation:
    """Score the model on held-out drives of `readings` (backblaze.tidy's form) beside the rules, and pick the
    alert threshold: the one warning the most failing drives ahead while flagging at most ALERT_RATE."""
    failed = failed_on(readings, labels)
    table = features(readings)
    split = folds(failed, count, seed)
    p = held_out(readings, table, failed, split)
    points = curve(readings, p, failed)
    chosen = at_rate(points, ALERT_RATE)
    threshold = chosen.threshold if chosen else float(np.nextafter(np.max(p), np.inf))
    drives = pd.DataFrame({"failed_on": failed, "first_warned": first_warned(readings, p >= threshold)})
    rules = {}
    for name, rule in RULES.items():
        drives[name] = first_warned(readings, rule(table))
        rules[name] = figures(drives[name], failed)
    return Evaluation(drives=drives, points=points, threshold=threshold,
                      model=figures(drives["first_warned"], failed), rules=rules,
                      folds=len(split), seed=seed)


def _row(name: str, result: Figures, versus: str = "") -> str:
    median = "-" if result.median_days is None else f"{result.median_days:g}"
    return (f"{name:<50} {result.ahead:>4}/{result.failing:<4} {100 * result.ahead_share:>5.1f} % {median:>7}  "
            f"{result.flagged:>5}/{result.healthy:<5} {100 * result.flagged_share:>5.2f} %  {versus}").rstrip()


def table(evaluation: Evaluation) -> str:
    """One table, by share of healthy drives flagged: the model's curve, the rules beside it with the model at
    their rate, and the alert threshold marked."""
    e = evaluation
    lines = [
        f"Held-out drives: {e.model.failing} failed, {e.model.healthy} did not; {e.folds} folds by drive, seed "
        f"{e.seed}.",
        "A drive is warned on the first day P reaches the threshold (or the rule fires); days of warning = failure "
        "day - that day;",
        f"warned ahead = {AHEAD_DAYS} days or more; a drive that did not fail is flagged if it fires on any day.",
        "",
        f"{'detector':<50} {'warned ahead':>14} {'median':>7}  {'healthy flagged':>17}  model at that rate",
        f"{'':<50} {'':>14} {'days':>7}",
    ]
    entries = [(point.figures.flagged_share, 0, _row(f"model P >= {point.threshold:.5f}", point.figures))
               for point in e.points if point.threshold != e.threshold]
    entries.append((e.model.flagged_share, 0, _row(f"model P >= {e.threshold:.5f}  <- alert threshold", e.model)))
    for name, result in e.rules.items():
        best = _best(e.points, result)
        gain = f"{best.ahead}/{best.failing} ({best.ahead - result.ahead:+d})"
        entries.append((result.flagged_share, 1, _row(f"rule: {name}", result, gain)))
    lines += [line for *_, line in sorted(entries, key=lambda entry: (entry[0], entry[1]))]
    return "\n".join(lines)


def rows(evaluation: Evaluation) -> list[dict[str, str]]:
    """One row per drive, for the --out CSV: serial_number, first_warned, failed_on (ISO dates or empty), then
    the first day each rule fired, so every figure of the table can be recomputed."""
    def day(value: pd.Timestamp) -> str:
        return "" if pd.isna(value) else value.date().isoformat()

    return [
        {"serial_number": serial, "first_warned": day(drive["first_warned"]), "failed_on": day(drive["failed_on"]),
         **{f"rule: {name}": day(drive[name]) for name in RULES}}
        for serial, drive in evaluation.drives.iterrows()
    ]
