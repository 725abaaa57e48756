"""Parts of remote-write scrapes waiting for the rest of their series, kept durably: a write is answered 2xx only
once what it brought is stored, and a part held in memory alone would be lost with the process."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson
import peewee as pw

from schema.tables import HeldPart, db

CHUNK = 400  # keys per DELETE: well under SQLite's limit of bound variables

Key = tuple[str, ...]
# (device, ts in ms, the part's values by key)
Part = tuple[str, int, Sequence[tuple[Key, float]]]


class HeldParts:
    """The held parts of scrapes in the database."""

    @staticmethod
    def keep(parts: Iterable[Part], now: float) -> None:
        rows = [{"device": device, "ts_ms": ts_ms, "part": orjson.dumps(list(values)).decode(), "at": now}
                for device, ts_ms, values in parts]
        with db.atomic():
            for chunk in pw.chunked(rows, CHUNK):
                HeldPart.insert_many(chunk).execute()

    @staticmethod
    def release(scrapes: Iterable[tuple[str, int]]) -> None:
        """Forget the parts of these scrapes (device, ts in ms): they are stored."""
        with db.atomic():
            for chunk in pw.chunked(list(scrapes), CHUNK):
                HeldPart.delete().where(pw.Tuple(HeldPart.device, HeldPart.ts_ms).in_(chunk)).execute()

    @staticmethod
    def load() -> list[tuple[str, int, list[tuple[Key, float]], float]]:
        """Every part held, oldest first, with when it came."""
        return [(row.device, row.ts_ms, [(tuple(key), value) for key, value in orjson.loads(row.part)], row.at)
                for row in HeldPart.select().order_by(HeldPart.id)]

    @staticmethod
    def older(than: float) -> list[tuple[str, int]]:
        """The scrapes (device, ts in ms) with a part held since before `than`."""
        query = HeldPart.select(HeldPart.device, HeldPart.ts_ms).where(HeldPart.at < than).distinct()
        return [(row.device, row.ts_ms) for row in query]
