"""Parts of remote-write scrapes waiting for the rest of their series, kept durably and shared by every bot process
on the database: a write is answered 2xx only once what it brought is stored, and a part held in one process's
memory alone would be lost with it, or never meet the rest another process received.

Each scrape a receiver handles has a row (RemoteScrape) that every process locks before it keeps, merges or stores
the scrape's parts: two processes that received parts of one scrape at the same moment take turns, and whichever
comes second finds the other's part (then it stores the scrape, with both) or finds the scrape stored (then its own
part was in it, or came late). The lock is the row's, taken by an upsert in the order of the scrapes, so it is held
until the transaction ends, a crash included, and two processes never wait for each other in a circle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import orjson
import peewee as pw

from schema.tables import HeldPart, RemoteScrape, db

CHUNK = 400  # keys per statement: well under SQLite's limit of bound variables

Key = tuple[str, ...]
ScrapeKey = tuple[str, int]  # (device, ts in ms)
# (device, ts in ms, the part's values by key)
Part = tuple[str, int, Sequence[tuple[Key, float]]]


@dataclass
class Held:
    """What the database holds of one scrape: the values of its parts, and when the first of them came."""

    values: list[tuple[Key, float]] = field(default_factory=list)
    since: float = float("inf")


@dataclass
class Fleet:
    """What every bot process knows of some scrapes, locked for one transaction (`HeldParts.session`)."""

    taken: dict[ScrapeKey, int] = field(default_factory=dict)  # stored already: how many series they had
    expected: dict[str, int] = field(default_factory=dict)  # a device's series in its newest scrape stored
    held: dict[ScrapeKey, Held] = field(default_factory=dict)  # their parts kept

    def keep(self, parts: Iterable[Part], now: float) -> None:
        rows = [{"device": device, "ts_ms": ts_ms, "part": orjson.dumps(list(values)).decode(), "at": now}
                for device, ts_ms, values in parts]
        for chunk in pw.chunked(rows, CHUNK):
            HeldPart.insert_many(chunk).execute()

    def take(self, series: Mapping[ScrapeKey, int], now: float) -> None:
        """These scrapes are stored in this transaction, with as many series as a whole one of them has (their
        rows exist: the session made them)."""
        rows = [(device, ts_ms, now, count) for (device, ts_ms), count in sorted(series.items())]
        fields = [RemoteScrape.device, RemoteScrape.ts_ms, RemoteScrape.at, RemoteScrape.series]
        for chunk in pw.chunked(rows, CHUNK):
            (RemoteScrape.insert_many(chunk, fields=fields)
             .on_conflict(conflict_target=[RemoteScrape.device, RemoteScrape.ts_ms],
                          update={RemoteScrape.series: pw.EXCLUDED.series}).execute())

    def release(self, scrapes: Iterable[ScrapeKey]) -> None:
        """Forget the parts kept of these scrapes: they are stored (or came after their scrape was)."""
        kept = [scrape for scrape in scrapes if scrape in self.held]
        for chunk in pw.chunked(kept, CHUNK):
            HeldPart.delete().where(pw.Tuple(HeldPart.device, HeldPart.ts_ms).in_(chunk)).execute()


class HeldParts:
    """The held parts of scrapes, and the scrapes stored lately, in the database."""

    @staticmethod
    @contextlib.contextmanager
    def session(scrapes: Iterable[ScrapeKey], now: float) -> Iterator[Fleet]:
        """A transaction in which these scrapes are locked: what the database knows of them. What is stored inside
        it (the samples of the scrapes taken) commits with it, or nothing does."""
        ordered = sorted(set(scrapes))
        with db.atomic():
            fleet = Fleet()
            for chunk in pw.chunked(ordered, CHUNK):
                locked = (RemoteScrape.insert_many([(device, ts_ms, now) for device, ts_ms in chunk],
                                                   fields=[RemoteScrape.device, RemoteScrape.ts_ms, RemoteScrape.at])
                          # The no-op update locks a row that exists: the one who came second waits here.
                          .on_conflict(conflict_target=[RemoteScrape.device, RemoteScrape.ts_ms],
                                       update={RemoteScrape.at: RemoteScrape.at})
                          .returning(RemoteScrape.device, RemoteScrape.ts_ms, RemoteScrape.series).tuples())
                fleet.taken.update({(device, ts_ms): series for device, ts_ms, series in locked.execute()
                                    if series is not None})
                rows = HeldPart.select(HeldPart.device, HeldPart.ts_ms, HeldPart.part, HeldPart.at).where(
                    pw.Tuple(HeldPart.device, HeldPart.ts_ms).in_(chunk)).tuples()
                for device, ts_ms, part, at in rows:
                    held = fleet.held.setdefault((device, ts_ms), Held())
                    held.values.extend((tuple(key), value) for key, value in orjson.loads(part))
                    held.since = min(held.since, at)
            for devices in pw.chunked(sorted({device for device, _ts_ms in ordered}), CHUNK):
                fleet.expected.update(_newest_series(devices))
            yield fleet

    @staticmethod
    def load(before: float | None = None) -> list[tuple[str, int, list[tuple[Key, float]], float]]:
        """Every part held (or those kept before `before`), oldest first, with when it came."""
        query = HeldPart.select().order_by(HeldPart.id)
        if before is not None:
            query = query.where(HeldPart.at < before)
        return [(row.device, row.ts_ms, [(tuple(key), value) for key, value in orjson.loads(row.part)], row.at)
                for row in query]

    @staticmethod
    def forget(before: float) -> int:
        """Forget the scrapes stored before `before`; how many."""
        return RemoteScrape.delete().where(RemoteScrape.series.is_null(False) & (RemoteScrape.at < before)).execute()


def _newest_series(devices: Sequence[str]) -> dict[str, int]:
    """The series of each device's newest scrape stored (of node_exporter's: smartctl_exporter's own are 0)."""
    newer = RemoteScrape.alias()
    newest = newer.select(pw.fn.MAX(newer.ts_ms)).where((newer.device == RemoteScrape.device)
                                                        & (newer.series > 0))
    query = RemoteScrape.select(RemoteScrape.device, RemoteScrape.series).where(
        RemoteScrape.device.in_(list(devices)) & (RemoteScrape.ts_ms == newest)).tuples()
    return dict(query)
