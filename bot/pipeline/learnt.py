"""What the pipeline learns of each machine, kept in the database as it is learnt and taken back at start.

The forecasts' trends (and the daily cycles they learnt) and the usual ranges live in memory; a batch writes,
in its own transaction, the trends of at most SAVE_MOST machines that learnt something, each at most every
SAVE_EVERY_S (bot/pipeline/forecast.py), and the usual ranges worked out since the last batch: a bounded write,
whatever the size of the fleet. A start reads one row per machine back, beside ingestion (`restore`), with the
samples each machine sent after its row was written; only machines with no row (all of them after an upgrade from
a version that kept none) are rebuilt from their last hours of samples, beside ingestion too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterable
from contextlib import closing
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter

from bot import db
from bot.db import incidents, learnt
from bot.pipeline.baselines import Baselines
from bot.pipeline.forecast import REBUILD_S, TRENDED, Forecaster, inodes

SAVE_MOST = 500  # machines' trends one batch writes at most
RESTORE_CHUNK = 1000  # machines' trends read back at a time


def save(forecaster: Forecaster, baselines: Baselines, now: float, most: int | None = SAVE_MOST,
         everything: bool = False) -> int:
    """Write what was learnt and is due to be written (all of it, `everything`, when the bot stops); inside a
    batch's transaction, so it is kept with the samples it was learnt from. Blocks; how many machines' trends it
    wrote."""
    states = forecaster.unsaved(now, None if everything else most, early=everything)
    learnt.save_trends(states, now)
    learnt.save_usual(baselines.unsaved())
    return len(states)


@dataclass
class Restored:
    """What a start read to take back the trends."""

    states: int = 0  # machines whose kept trends were read
    after: int = 0  # samples they sent after their trends were written
    rebuilt: int = 0  # machines without kept trends, rebuilt from their last hours
    recent: int = 0  # samples read for those
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return self.states + self.after + self.recent


def _observed(samples: Iterable[learnt.Recent]) -> list:
    return [(*sample, inodes(readings)) for *sample, readings in samples]


def restore(forecaster: Forecaster, stop: threading.Event | None = None) -> Restored:
    """Take back every machine's trends into a forecaster that `begin_restoring` was called on, while ingestion
    runs (the samples of a machine not back yet wait in the forecaster); the episodes alerted before the restart
    (open forecast incidents) stay alerted where they still hold. Raises what the database raised, and may be
    called again then: the machines back stay back. Stops early when `stop` is set, leaving out whatever is not
    back. Blocks."""
    started = time.monotonic()
    done = Restored()
    stopped = False
    forecaster.expect_alerted(incidents.open_forecasts())
    with closing(_kept_then_rebuilt(done)) as machines:
        for device, state, saved, samples in machines:
            if stop is not None and stop.is_set():
                stopped = True
                break
            forecaster.restore(device, state, _observed(samples), saved)
    forecaster.finish_restoring(complete=not stopped)
    done.seconds = time.monotonic() - started
    return done


def _kept_then_rebuilt(done: Restored) -> Generator[tuple[str, str | None, float | None, list[learnt.Recent]]]:
    """(device, kept state or None, when it was kept, the samples to take after it) of every machine, counted in
    `done`: first those with kept trends, a chunk at a time, then those without, from their last hours."""
    columns = list(TRENDED)
    for chunk in learnt.trend_states(RESTORE_CHUNK):
        after = learnt.samples_after(chunk[0][0], chunk[-1][0], REBUILD_S, columns)
        done.states += len(chunk)
        for device, _ts, saved, state in chunk:
            samples = after.get(device, [])
            done.after += len(samples)
            yield device, state, saved, samples
    if not done.states:  # an upgrade from a version that kept none: every machine's last hours, in one pass
        rebuilt: Iterable[tuple[str, Iterable[learnt.Recent]]] = groupby(
            db.recent_per_device(REBUILD_S, columns), key=itemgetter(1))
    else:  # the few whose trends were never written (a crash before their first write)
        rebuilt = ((device, learnt.recent_of(device, REBUILD_S, columns)) for device in learnt.devices_without_state())
    for device, samples in rebuilt:
        taken = list(samples)
        done.rebuilt += 1
        done.recent += len(taken)
        yield device, None, None, taken
