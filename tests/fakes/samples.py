"""Samples for the tests: one, a series of one device at a steady pace, the same as Kafka messages, and a
sample as the store gives it back."""

from __future__ import annotations

import time
from collections.abc import Iterable
from operator import attrgetter

from agent.wire import Sample
from bot.db import StoredSample
from bot.db.ingest import update_devices
from tests.fakes.scenario import message

TS = 1764226800.25  # 2025-11-27 07:00:00.25 UTC


def with_devices(new: list[StoredSample]) -> None:
    """What the bot's decider does first with a batch's new samples, inside its transaction: each device's row (its
    newest sample, its usual interval) brought up to date. Pass it as `store_batch`'s `on_stored` to read the
    samples back as /status and the start-up do, through those rows."""
    by_device: dict[str, list[StoredSample]] = {}
    for stored_sample in sorted(new, key=attrgetter("ts")):
        by_device.setdefault(stored_sample.device, []).append(stored_sample)
    update_devices(by_device, time.time())


def sample(device: str, ts: float = TS, **metrics: float) -> Sample:
    """One sample, its metrics as floats."""
    return Sample(device=device, ts=ts, metrics={name: float(value) for name, value in metrics.items()})


def series(device: str, start: float, metrics: Iterable[dict[str, float]], step: float = 5.0) -> list[Sample]:
    """One sample of `device` per metrics, `step` seconds apart from `start` (an agent's pace by default)."""
    return [Sample(device, start + i * step, m) for i, m in enumerate(metrics)]


def messages(device: str, start: float, metrics: Iterable[dict[str, float]],
             step: float = 5.0) -> list[tuple[bytes, bytes]]:
    """The same series as Kafka messages in the agent's format, keyed by the device."""
    return [(device.encode(), message(device, start + i * step, **m)) for i, m in enumerate(metrics)]


def stored(
    device: str = "pc1", ts: float = TS, p: float | None = 0.934, version: int | None = 3, metric_id: int = 7,
    **metrics: float,
) -> StoredSample:
    """A sample as the store returns it: its id, P(stressed) and the version of the model that gave it."""
    return StoredSample(metric_id, device, ts, {name: float(v) for name, v in metrics.items()}, p, version)
