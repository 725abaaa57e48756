"""Replays: a machine's history sent through the bot's own decisions, to measure what an operator lives with.

Each story is a history of one machine, one sample a minute, stored in a throwaway SQLite store with the
model's P(stressed) and decided batch by batch as the poller does (bot/pipeline/decide.py with a Forecaster and
the incident rules of the bot's defaults), on the samples' own times. Two kinds:

- a developing problem (a disk filling, memory leaking, …) after a steady day: how many minutes before the
  metric reached its hard ceiling (`ceiling` in ml/features.py) the first alert, a forecast or a stressed
  incident, was opened; the target is LEAD_TARGET_MIN, or the story's own;
- a healthy pattern that repeats (a nightly backup, a daily batch, …) for two weeks: how many alerts each week
  opened; the target is none, in the second week at least (the first is the machine's history the bot learns
  its daily cycle from).

A story may restart the bot on its way: from then on a new forecaster decides, with what the bot kept in the store
taken back as a start takes it (bot/pipeline/learnt.py).

``python -m bot.replay`` prints the table and exits non-zero when a replay fails; tests/test_replay.py holds it
to its targets.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sklearn.pipeline import Pipeline

from agent.vocabulary import KNOWN_METRICS
from agent.wire import Sample
from bot import db
from bot.config import load_settings
from bot.db.outbox import Route
from bot.pipeline import learnt
from bot.pipeline.baselines import Baselines
from bot.pipeline.decide import Decider
from bot.pipeline.forecast import CYCLE_DAYS, Forecaster
from bot.pipeline.lifecycle import Incidents, Rules
from ml import model
from ml.evaluate import chosen_model
from ml.features import ZONES, table
from schema.domain import Kind

START = 1763942400.0  # Monday 2025-11-24 00:00 UTC
STEP_S = 60.0  # one sample a minute: coarse, so two weeks replay in seconds
BATCH_S = 3600.0  # the samples of an hour are stored and decided together (each walked in its own time)
DAY_S = 86400.0
WEEK_S = 7 * DAY_S
LEAD_TARGET_MIN = 120.0
PROBLEM_START_S = DAY_S + 10 * 3600.0  # a developing problem starts at 10:00 on the second day
STEADY = {"cpu_percent": 20.0, "load_1m": 0.3, "mem_percent": 50.0, "swap_percent": 5.0, "disk_percent": 50.0,
          "cpu_temp_c": 50.0}
NOISE = {"cpu_percent": 3.0, "load_1m": 0.05, "mem_percent": 0.5, "swap_percent": 0.2, "disk_percent": 0.05,
         "cpu_temp_c": 1.0}

Shape = Callable[[float], Mapping[str, float]]  # seconds since START -> the metrics that differ from STEADY


@dataclass(frozen=True)
class Story:
    name: str
    shape: Shape
    metric: str = ""  # a developing problem: the metric heading for its ceiling; "" for a healthy pattern
    lead_target_min: float = LEAD_TARGET_MIN
    start_s: float = PROBLEM_START_S  # a developing problem starts this long after START
    learning_s: float = 0.0  # alerts before this are the bot learning the machine, not false alarms
    restart_s: float | None = None  # the bot restarts this long after START: it goes on from what it kept

    @property
    def developing(self) -> bool:
        return bool(self.metric)


def _hours(t: float, start: float = PROBLEM_START_S) -> float:
    """Hours since the developing problem started (0 before)."""
    return max(0.0, t - start) / 3600.0


def _of_day(t: float) -> float:
    """Hours since midnight."""
    return (t % DAY_S) / 3600.0


def filling(metric: str, per_hour: float, start: float) -> Shape:
    return lambda t: {metric: start + per_hour * _hours(t)}


def _run_queue(t: float) -> dict[str, float]:
    load = 0.3 + 0.5 * _hours(t)
    return {"load_1m": load, "cpu_percent": min(100.0, 20.0 + 40.0 * load)}


def _backup(t: float) -> dict[str, float]:
    """Writes from 01:00 to 03:00 until the disk is at 88 %, then the copy is shipped off and deleted."""
    h = _of_day(t)
    return {"disk_percent": 60.0 + 14.0 * (h - 1.0) if 1.0 <= h < 3.0 else 60.0}


def _batch(t: float) -> dict[str, float]:
    h = _of_day(t)
    return {"cpu_percent": 90.0, "load_1m": 0.95, "cpu_temp_c": 72.0} if 2.0 <= h < 4.0 else {}


def _heap(t: float) -> dict[str, float]:
    return {"mem_percent": 55.0 + 37.0 * (t % 900.0) / 900.0}


def _logs(t: float) -> dict[str, float]:
    return {"disk_percent": 20.0 + 3.0 * _of_day(t)}


def _logs_not_rotated(t: float) -> dict[str, float]:
    """Rotated at midnight for a week, then the rotation fails and the logs keep growing."""
    return {"disk_percent": 92.0 + 3.0 * _hours(t, WEEK_S)} if t >= WEEK_S else _logs(t)


STORIES = [
    Story("disk filling at 1 %/h", filling("disk_percent", 1.0, 50.0), "disk_percent"),
    Story("disk filling at 5 %/h", filling("disk_percent", 5.0, 50.0), "disk_percent"),
    Story("disk filling at 20 %/h", filling("disk_percent", 20.0, 50.0), "disk_percent", lead_target_min=60.0),
    Story("memory leaking at 3 %/h", filling("mem_percent", 3.0, 50.0), "mem_percent"),
    Story("swap creeping at 2 %/h", filling("swap_percent", 2.0, 5.0), "swap_percent"),
    Story("temperature rising 3 °C/h", filling("cpu_temp_c", 3.0, 50.0), "cpu_temp_c"),
    Story("run queue growing 0.5 per CPU an hour", _run_queue, "load_1m"),
    # The daily cycle learnt from the logs must not hide the night their rotation fails: 150 minutes from
    # 92 % to the ceiling, and the first 30 of them cannot tell a late rotation from a missed one.
    Story("logs rotated nightly for a week, then not", _logs_not_rotated, "disk_percent", lead_target_min=90.0,
          start_s=WEEK_S, learning_s=(CYCLE_DAYS + 1) * DAY_S),
    Story("nightly backup fills a disk to 88 % and frees it", _backup),
    Story("daily batch job at 90 % CPU", _batch),
    Story("database memory sits at 88 %", lambda _t: {"mem_percent": 88.0}),
    Story("JVM heap sawtooth 55 → 92 % every 15 min", _heap),
    Story("logs grow 3 %/h to 92 %, rotated at midnight", _logs),
    # What the bot learnt of the rotation (bot/pipeline/learnt.py) survives a restart on Wednesday of week 2: a bot
    # that forgot it would alert on the next three nights, until it had learnt the cycle again.
    Story("the same logs, the bot restarted midweek", _logs, restart_s=WEEK_S + 2.5 * DAY_S),
]


@dataclass(frozen=True)
class Outcome:
    story: Story
    alerts: list[tuple[float, str]]  # (sample time, what) of every incident opened, oldest first
    ceiling_ts: float | None = None  # a developing problem: when the metric reached its ceiling

    @property
    def lead_min(self) -> float | None:
        """Minutes from the first alert since the problem started to the ceiling; None: no alert before it."""
        if self.ceiling_ts is None:
            return None
        first = next((ts for ts, _ in self.alerts if ts >= START + self.story.start_s), None)
        return None if first is None or first > self.ceiling_ts else (self.ceiling_ts - first) / 60.0

    def week(self, n: int) -> int:
        """Alerts opened in week `n` (0: the first) of a healthy pattern."""
        return sum(START + n * WEEK_S <= ts < START + (n + 1) * WEEK_S for ts, _ in self.alerts)

    @property
    def early(self) -> int:
        """A developing problem: alerts before it started, once the bot had learnt the machine (false alarms)."""
        return sum(START + self.story.learning_s <= ts < START + self.story.start_s for ts, _ in self.alerts)

    @property
    def holds(self) -> bool:
        if self.story.developing:
            lead = self.lead_min
            return lead is not None and lead >= self.story.lead_target_min and not self.early
        return self.week(1) == 0


def history(story: Story, device: str, seed: int = 0) -> tuple[list[Sample], float | None]:
    """The story's samples with a little noise, and when its metric reached the ceiling; a developing problem
    ends there, a healthy pattern after two weeks."""
    rng = random.Random(seed)
    ceiling = ZONES[story.metric].ceiling if story.developing else None
    samples, t = [], 0.0
    while t < 2 * WEEK_S:
        shaped = {**STEADY, **story.shape(t)}
        metrics = {name: max(0.0, value + rng.gauss(0.0, NOISE[name])) for name, value in shaped.items()}
        metrics["cpu_percent"] = min(100.0, metrics["cpu_percent"])
        samples.append(Sample(device, START + t, metrics))
        if ceiling is not None and shaped[story.metric] >= ceiling:
            return samples, START + t
        t += STEP_S
    return samples, None


def play(story: Story, pipeline: Pipeline, device: str) -> Outcome:
    """Send the story through the bot's decisions in the store `open_database` points at."""
    settings = load_settings({}, require_token=False)  # the bot's defaults
    rules = Rules(settings.alert_threshold, settings.alert_hysteresis, settings.recover_samples,
                  settings.alert_repeat_s, settings.silent_after_s, Route((1,)))
    incidents = Incidents(rules, lambda reply, incident, _now: f"{incident.device}: {reply}")

    def start() -> Decider:
        """The bot's decisions as a start makes them: the trends it kept taken back first."""
        forecaster = Forecaster(settings.forecast_hours * 3600.0)
        forecaster.begin_restoring()
        learnt.restore(forecaster)
        # Usual ranges are cached for an hour of the bot's clock; here the clock is the samples': read them afresh.
        return Decider(incidents, lambda metrics: model.drivers(pipeline, metrics), forecaster, Baselines(0.0))

    decider = start()
    samples, ceiling_ts = history(story, device)
    values = db.known_values(samples)
    ps = model.predict(pipeline, table(values, KNOWN_METRICS)).tolist()
    per_batch = int(BATCH_S / STEP_S)
    restart = None if story.restart_s is None else START + story.restart_s
    for i in range(0, len(samples), per_batch):
        batch = samples[i:i + per_batch]
        if restart is not None and batch[0].ts >= restart:
            decider, restart = start(), None
        now = batch[-1].ts
        db.store_batch(batch, ps[i:i + per_batch], 1, [],
                       on_stored=lambda new, now=now, decider=decider: decider.decide(new, now=now),
                       values=values[i:i + per_batch])
    opened = db.Incident.select().where(db.Incident.device == device).order_by(db.Incident.opened_ts)
    alerts = [(i.opened_ts, i.metric if i.kind == Kind.FORECAST else f"P {i.peak_p:.2f}") for i in opened]
    return Outcome(story, alerts, ceiling_ts)


def replay(pipeline: Pipeline, stories: list[Story] | None = None) -> list[Outcome]:
    """Every story through the bot's decisions, each as its own device of one throwaway SQLite store."""
    stories = STORIES if stories is None else stories
    with tempfile.TemporaryDirectory(prefix="rigwatch-replay-") as folder:
        database = db.open_database(f"sqlite:///{Path(folder) / 'replay.sqlite3'}")
        try:
            return [play(story, pipeline, f"replay{n}") for n, story in enumerate(stories)]
        finally:
            database.close()


def report(outcomes: list[Outcome]) -> str:
    """The table as text: per developing problem its lead time, per healthy pattern its alerts per week."""
    width = max(len(o.story.name) for o in outcomes)
    lines = [f"{'developing problem':<{width}}  first alert before the ceiling  target    result"]
    for o in (o for o in outcomes if o.story.developing):
        lead = o.lead_min
        said = "no alert before it" if lead is None else f"{lead:.0f} min"
        if o.early:
            said += f" ({o.early} false before it)"
        lines.append(f"{o.story.name:<{width}}  {said:<30}  ≥ {o.story.lead_target_min:.0f} min  "
                     f"{'pass' if o.holds else 'FAIL'}")
    lines.append(f"{'healthy pattern':<{width}}  alerts in week 1 · week 2        target    result")
    for o in (o for o in outcomes if not o.story.developing):
        lines.append(f"{o.story.name:<{width}}  {o.week(0):>7} · {o.week(1):<20}  0 in week 2  "
                     f"{'pass' if o.holds else 'FAIL'}")
    failed = sum(not o.holds for o in outcomes)
    lines.append(f"{failed} of {len(outcomes)} replays FAIL" if failed else f"all {len(outcomes)} replays hold")
    return "\n".join(lines)



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bot.replay",
        description="Send histories of developing problems and healthy patterns through the bot's own decisions "
                    "and print each one's lead time or alerts per week; exit 1 if one misses its target.")
    parser.add_argument("--version", type=int, help="replay with this model version instead of the active one")
    args = parser.parse_args(argv)
    outcomes = replay(chosen_model(args.version))
    print(report(outcomes))
    if not all(o.holds for o in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
