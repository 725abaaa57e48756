"""The incident rules of the decision tests and a feed of samples that decides as the poller does."""

from __future__ import annotations

from bot import db
from bot.db.outbox import Route
from bot.pipeline.decide import Decider
from bot.pipeline.lifecycle import Rules
from tests.fakes.samples import series

T0 = 1764226800.0
CHATS = (11, 22)
RULES = Rules(threshold=0.7, hysteresis=0.15, recover_samples=3, repeat_s=1800, silent_after_s=None,
              route=Route(CHATS))
TYPICAL = {"cpu_percent": 20.0, "mem_percent": 50.0, "disk_percent": 50.0}


def drivers(metrics: dict[str, float]) -> list[str]:
    return ["disk_percent"] if metrics.get("disk_percent", 0) > 90 else []


def feed(decider: Decider, device: str, ps: list[float], start: float = T0, step: float = 5.0,
         **metrics: float) -> None:
    """Store one sample per P, `step` seconds apart, deciding in the batch's transaction as the poller does."""
    samples = series(device, start, [{**TYPICAL, **metrics} for _p in ps], step)
    now = start + len(ps) * step
    db.store_batch(samples, ps, 1, [], on_stored=lambda new: decider.decide(new, now=now))
    intake_alive(start, now)


def intake_alive(start: float, end: float) -> None:
    """The bot's intake received from `start` to `end` (its poller beats every few seconds)."""
    t = start
    while t < end:
        db.beat("kafka", t, 30)
        t += 10.0
    db.beat("kafka", end, 30)
