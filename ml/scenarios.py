"""Scenarios an operator recognises, each with the verdict a model must give: the yardstick of every model.

A model's own holdout is made of the same synthetic rows it learned from, so a high F1 there says little.
These rows say what an operator expects: any single metric at its edge alerts, on an idle machine, a
typical one and a small board alike; busy but healthy machines do not, whatever sensors they lack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from ml import features, model
from ml.features import FEATURES

STRESSED_AT_LEAST = 0.9
HEALTHY_AT_MOST = 0.3

BACKGROUNDS: dict[str, dict[str, float]] = {
    "idle": {"cpu_percent": 3, "load_1m": 0.02, "mem_percent": 20, "swap_percent": 0, "disk_percent": 20,
             "cpu_temp_c": 35},
    "typical": {"cpu_percent": 20, "load_1m": 0.3, "mem_percent": 50, "swap_percent": 5, "disk_percent": 50,
                "cpu_temp_c": 50},
    # A small board: a Raspberry Pi without swap, warm even when idle.
    "small board": {"cpu_percent": 12, "load_1m": 0.2, "mem_percent": 45, "disk_percent": 35, "cpu_temp_c": 58},
}
EDGES: dict[str, dict[str, float]] = {
    "disk 99 %": {"disk_percent": 99},
    "disk 100 %": {"disk_percent": 100},
    "memory 98 %": {"mem_percent": 98},
    "memory 99.5 %": {"mem_percent": 99.5},
    "swap 90 %": {"swap_percent": 90},
    "temperature 95 °C": {"cpu_temp_c": 95},
    "CPU 100 %, load 2.5 per CPU": {"cpu_percent": 100, "load_1m": 2.5},
    "CPU 100 %, load 4 per CPU": {"cpu_percent": 100, "load_1m": 4.0},
    "memory pressure 40 % (every task stalled)": {"psi_memory_full_percent": 40},
    "I/O pressure 60 % (every task stalled)": {"psi_io_full_percent": 60},
    "CPU stolen by the hypervisor 50 %": {"cpu_steal_percent": 50},
    "CPU waiting for I/O 70 %": {"cpu_iowait_percent": 70},
}
BUSY_HEALTHY = {"cpu_percent": 75, "load_1m": 0.9, "mem_percent": 88, "swap_percent": 25, "disk_percent": 85,
                "cpu_temp_c": 78}
BUSY_UNDER_PRESSURE = {**BUSY_HEALTHY, "psi_memory_full_percent": 3, "psi_io_full_percent": 8, "cpu_steal_percent": 6,
                       "cpu_iowait_percent": 15}
SHORT_NAMES = {"cpu_percent": "CPU", "load_1m": "load", "mem_percent": "memory", "swap_percent": "swap",
               "disk_percent": "disk", "cpu_temp_c": "temperature", "psi_memory_full_percent": "memory pressure",
               "psi_io_full_percent": "I/O pressure", "cpu_steal_percent": "CPU steal",
               "cpu_iowait_percent": "iowait"}
SENSORS = list(BUSY_HEALTHY)  # the sensors of the busy healthy machine, each missing in turn: it has no pressures


@dataclass(frozen=True)
class Scenario:
    name: str
    sample: dict[str, float]
    stressed: bool  # what an operator expects

    def holds(self, p: float) -> bool:
        return p >= STRESSED_AT_LEAST if self.stressed else p <= HEALTHY_AT_MOST


def _without(sample: dict[str, float], missing: Sequence[str]) -> dict[str, float]:
    return {k: v for k, v in sample.items() if k not in missing}


def scenarios(every_sensor_subset: bool = False) -> list[Scenario]:
    """The table. With `every_sensor_subset`, the busy healthy machine with each of the 64 subsets of its
    sensors (the tests); without, with each sensor missing alone and with only one present (the report)."""
    rows = [Scenario(f"{edge} on {bg} machine", {**BACKGROUNDS[bg], **values}, True)
            for edge, values in EDGES.items() for bg in BACKGROUNDS]
    rows += [Scenario(f"{bg} machine", values, False) for bg, values in BACKGROUNDS.items()]
    rows += [
        Scenario("busy but healthy (CPU 75 %, load 0.9, memory 88 %, swap 25 %, disk 85 %, 78 °C)", BUSY_HEALTHY,
                 False),
        Scenario("busy (CPU 70 %, load 0.8, memory 80 %, swap 20 %, disk 85 %, 75 °C)",
                 {"cpu_percent": 70, "load_1m": 0.8, "mem_percent": 80, "swap_percent": 20, "disk_percent": 85,
                  "cpu_temp_c": 75}, False),
        Scenario("short spike: CPU 96 %, load 1.0 per CPU",
                 {**BACKGROUNDS["typical"], "cpu_percent": 96, "load_1m": 1.0}, False),
        Scenario("two burners on two cores: CPU 100 %, load 1.0 per CPU",
                 {**BACKGROUNDS["typical"], "cpu_percent": 100, "load_1m": 1.0}, False),
        Scenario("busy but healthy with some pressure (memory 3 %, I/O 8 %, steal 6 %, iowait 15 %)",
                 BUSY_UNDER_PRESSURE, False),
        Scenario("no metrics at all", {}, False),
    ]
    sensors = SENSORS
    if every_sensor_subset:
        missing_sets = [c for k in range(1, len(sensors) + 1) for c in combinations(sensors, k)]
    else:
        missing_sets = [(name,) for name in sensors] + [tuple(n for n in sensors if n != name) for name in sensors]
    for missing in missing_sets:
        present = [SHORT_NAMES[n] for n in sensors if n not in missing]
        what = f"without {', '.join(SHORT_NAMES[n] for n in missing)}" if len(present) > 1 else f"only {present[0]}" \
            if present else "no sensors"
        rows.append(Scenario(f"busy but healthy, {what}", _without(BUSY_HEALTHY, missing), False))
    return rows


def guards() -> list[model.Guard]:
    """The table, every sensor subset included, as the bounds labels may not push the model past: what
    holds for every machine is not for a few presses to undo."""
    return [model.Guard(s.sample, STRESSED_AT_LEAST if s.stressed else 0.0, 1.0 if s.stressed else HEALTHY_AT_MOST)
            for s in scenarios(every_sensor_subset=True)]


def conflicts(pipeline: Pipeline, labels: pd.DataFrame) -> list[dict]:
    """Labels the model could not learn because a scenario row held it back: each label (FEATURES, `label`,
    indexed by sample id) the model puts on the other side of 0.5, with the row of the opposite verdict that
    sits at its bound and shares most with it in the shapes above typical, where labels act. A label no row
    holds back (outvoted by the data, say) is not one."""
    if labels.empty:
        return []
    p = model.predict(pipeline, labels[FEATURES])
    unlearnt = labels[(labels["label"] == 1) & (p < 0.5) | (labels["label"] == 0) & (p > 0.5)]
    table = scenarios(every_sensor_subset=True)
    ps = model.predict(pipeline, [s.sample for s in table])
    near = [s for s, q in zip(table, ps, strict=True)
            if (q < STRESSED_AT_LEAST * 1.02 if s.stressed else q > HEALTHY_AT_MOST * 0.9)]
    if unlearnt.empty or not near:
        return []
    lift = model.lift(pipeline, unlearnt[FEATURES])
    found = []
    for (sample_id, row), label_lift in zip(unlearnt.iterrows(), lift, strict=True):
        rows = [s for s in near if s.stressed != bool(row["label"])]
        if not rows:
            continue
        shared = model.lift(pipeline, features.frame([s.sample for s in rows])) @ label_lift
        if shared.max() <= 0:
            continue
        found.append({"sample": int(sample_id), "label": int(row["label"]),
                      "metrics": {n: float(row[n]) for n in FEATURES if not np.isnan(row[n])},
                      "scenario": rows[int(shared.argmax())].name})
    return found


def describe_conflict(conflict: dict) -> str:
    """One held-back label in words: which label, which scenario row."""
    said = "✅ stressed" if conflict["label"] else "❌ normal"
    metrics = ", ".join(f"{SHORT_NAMES[n]} {v:g}" for n, v in conflict["metrics"].items())
    return f"the {said} label on sample {conflict['sample']} ({metrics}) conflicts with “{conflict['scenario']}”"


@dataclass(frozen=True)
class Verdict:
    scenario: Scenario
    p: float

    @property
    def holds(self) -> bool:
        return self.scenario.holds(self.p)


def evaluate(pipeline: Pipeline, table: list[Scenario] | None = None) -> list[Verdict]:
    """The model's P(stressed) for every scenario, with whether it is what an operator expects."""
    table = scenarios() if table is None else table
    ps = model.predict(pipeline, [s.sample for s in table])
    return [Verdict(s, float(p)) for s, p in zip(table, ps, strict=True)]


def report(verdicts: list[Verdict]) -> str:
    """The table as text: one scenario per line, with the expected verdict, P and pass or FAIL."""
    width = max(len(v.scenario.name) for v in verdicts)
    lines = [f"{'scenario':<{width}}  expected          P(stressed)  result"]
    for v in verdicts:
        expected = f"P ≥ {STRESSED_AT_LEAST}" if v.scenario.stressed else f"P ≤ {HEALTHY_AT_MOST}"
        label = f"stressed {expected}" if v.scenario.stressed else f"healthy  {expected}"
        lines.append(f"{v.scenario.name:<{width}}  {label:<16}  {v.p:>11.3f}  {'pass' if v.holds else 'FAIL'}")
    failed = sum(not v.holds for v in verdicts)
    lines.append(f"{failed} of {len(verdicts)} scenarios FAIL" if failed else f"all {len(verdicts)} scenarios hold")
    return "\n".join(lines)
