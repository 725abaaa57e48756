"""Prometheus remote write 1.0 in: `POST /api/v1/write`, a snappy-compressed protobuf WriteRequest, as Prometheus,
Grafana Alloy, Telegraf and the OpenTelemetry Collector send it.

node_exporter's series become samples (bot/intake/node_exporter.py), one per machine and scrape, stored through
the same path as the agent's: in single-host mode predicted, stored and decided here (Poller.store); in fleet
mode produced to the Kafka topic as wire messages, so the workers share them. The answer says what happened:
2xx only once the samples are stored (or delivered to Kafka); 400 for a body that can never be read (the sender
drops it, so the log says why); 413 for a body over 16 MiB decompressed; 503 while the store or the broker is out,
or the receiver is busy, so the sender retries. A retried write stores nothing twice: (device, ts) is unique in
the store, and rates are computed against the scrape before it, kept by its time.

A scrape split over several writes waits for its rest (bot/intake/node_exporter.py); its parts are kept in the
database meanwhile (before their writes are answered), so a restart loses none of them, and several bot processes
behind a load balancer share them (bot/db/held_parts.py): each write's scrapes are settled in one transaction with
what the database holds of them, under a lock per scrape, so whichever process completes a scrape stores it once
with every part, whichever got which part. A process that stops leaves its parts to the next start, or to another
process once they are ADOPT_AFTER_S old.

Only the series Rigwatch reads are decoded: protobuf hands out the request's series still encoded (frames.proto),
and the others (nine in ten of node_exporter's) are dropped once their name is read in place
(bot/intake/series_pattern.py). A label set seen before is not decoded again either: its bytes are looked up.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from math import isfinite
from struct import unpack_from
from typing import NamedTuple, Protocol

import cramjam
from google.protobuf.message import DecodeError

from agent.log_once import Once
from agent.wire import Sample
from bot.db import Rejection
from bot.db.held_parts import Fleet, Part, ScrapeKey
from bot.intake.node_exporter import READERS, Key, NodeExporter, Scrape, Verdict, device_name, key, ts_problem
from bot.intake.prompb import frames_pb2, types_pb2
from bot.intake.series_pattern import MAYBE_READ, NAMED

log = logging.getLogger(__name__)
MAX_BODY = 16 * 1024 * 1024  # decompressed
GRACE_S = 10.0  # a scrape split over several writes waits this long for its rest (Prometheus flushes every 5 s)
# Parts kept this long, of a scrape no process stored, were kept by a process that stopped: another one stores them.
ADOPT_EVERY_S, ADOPT_AFTER_S = 10.0, 3 * GRACE_S
# The scrapes stored are remembered this long: a part coming later is known as late, and a whole scrape's size.
FORGET_EVERY_S, REMEMBER_S = 60.0, 600.0
REFUSE_AGAIN_S = 600.0  # a device label refused is recorded in /rejected again after this long
class Malformed(ValueError):
    """A body that is not a remote write 1.0 request; the text says why (400)."""


class TooLarge(ValueError):
    """A body over MAX_BODY decompressed (413)."""


class Unavailable(RuntimeError):
    """The store or the broker failed: the sender should retry (503)."""


def decompress(body: bytes, into: bytearray) -> memoryview:
    """The WriteRequest bytes of a body in snappy's block format, written into `into` (grown as needed): a view of
    them, to be released before `into` is used again."""
    try:
        size = cramjam.snappy.decompress_raw_len(body)
    except cramjam.DecompressionError as exc:
        raise Malformed(f"not snappy-compressed (block format): {exc}") from None
    if size > MAX_BODY:
        raise TooLarge(f"the body is {size:,} bytes decompressed, more than {MAX_BODY:,}")
    if len(into) < size:
        into.extend(bytes(size - len(into)))
    try:
        return memoryview(into)[:cramjam.snappy.decompress_raw_into(body, into)]
    except cramjam.DecompressionError as exc:
        raise Malformed(f"not snappy-compressed (block format): {exc}") from None


# A series' one sample as Prometheus encodes it, at the end of the series: field 2 of 16 bytes, the value (field 1,
# a double) and the time in ms (field 2, a varint of 6 bytes for any time from 1971 to 2109). A value of 0 is left
# out, as proto3 leaves out defaults.
VALUE_TAIL, VALUE_HEAD = 18, b"\x12\x10\x09"
ZERO_TAIL, ZERO_HEAD = 9, b"\x12\x07\x10"
MAX_REMEMBERED = 500_000  # label sets (and times) remembered; about 100 a machine


def frames(raw: bytes | memoryview) -> list[bytes]:
    """The request's series, each still encoded (copies: `raw` may be reused): protobuf checks the framing of the
    whole request at once."""
    try:
        return list(frames_pb2.WriteRequestFrames.FromString(raw).timeseries)
    except DecodeError:  # protobuf's text names our view of the message, which would only confuse a reader
        raise Malformed("not a remote write 1.0 WriteRequest: its protobuf encoding is corrupt or cut short") from None


def decode_series(encoded: bytes) -> types_pb2.TimeSeries:
    try:
        return types_pb2.TimeSeries.FromString(encoded)
    except DecodeError:
        raise Malformed("not a remote write 1.0 WriteRequest: the protobuf encoding of a series is corrupt") from None


def _millis(varint: bytes) -> int | None:
    """The 6-byte varint of a time in ms, or None when it is not one."""
    if varint[5] >= 0x80 or min(varint[:5]) < 0x80:
        return None
    return sum((byte & 0x7F) << (7 * i) for i, byte in enumerate(varint))


class Holding(Protocol):
    """Where the parts of scrapes waiting for their rest are kept durably, shared by every bot process on the
    database (bot/db/held_parts.py)."""

    def session(self, scrapes: Iterable[ScrapeKey], now: float) -> contextlib.AbstractContextManager[Fleet]: ...
    def load(self, before: float | None = None) -> list[tuple[str, int, list[tuple[Key, float]], float]]: ...
    def forget(self, before: float) -> int: ...


class _Alone(Fleet):
    """Without a holding: no other process is known of, and the parts waiting are kept in memory alone."""

    def keep(self, parts: Iterable[Part], now: float) -> None:
        """Nowhere to keep them but the mapper."""

    def take(self, series: Mapping[ScrapeKey, int], now: float) -> None:
        """The mapper remembers the scrapes it handed out."""

    def release(self, scrapes: Iterable[ScrapeKey]) -> None:
        """Nothing kept."""


@dataclass
class _Turn:
    """What one write brought (or what a flush found due), waiting to be settled and stored with what others
    brought."""

    brought: dict[ScrapeKey, list[tuple[Key, float]]]
    rejects: list[Rejection]
    now: float
    due: list[ScrapeKey] = field(default_factory=list)  # scrapes that waited out their grace
    everything: bool = False  # every scrape due, whatever its grace (at shutdown)
    stored: int = 0  # samples stored of its scrapes
    done: bool = False
    error: Exception | None = None


class _Seen(NamedTuple):
    """What a label set, seen before, means: its device and the key of its value (None: not read), or why its
    device is refused."""

    device: str | None
    key: Key | None
    refused: tuple[str, str, str] | None = None  # (source, reason, labels as shown)


@dataclass
class Outcome:
    """What one write brought."""

    series: int = 0  # in the write
    read: int = 0  # of those, series Rigwatch reads, from a valid device at a valid time
    samples: int = 0  # stored (or delivered) by this call, from this write and earlier ones
    refused: list[str] = field(default_factory=list)  # why some series were left out


# Stores samples and rejections durably, or raises; blocks.
Store = Callable[[list[Sample], list[Rejection]], object]


class Receiver:
    """Decodes writes, maps node_exporter's series to samples and stores them; blocks (run it in a thread).
    Without `held`, the parts of scrapes waiting for their rest are kept in memory alone. `store_lock`, when the
    store takes one, is taken before the database's transaction: the store runs inside it, and a store that held
    its lock while waiting for the database (SQLite's one writer) would wait for us in a circle."""

    def __init__(self, store: Store, device_label: str = "instance", grace_s: float = GRACE_S,
                 held: Holding | None = None,
                 store_lock: contextlib.AbstractContextManager[object] | None = None) -> None:
        self.store = store
        self.held = held
        self._store_lock = store_lock or contextlib.nullcontext()
        self._adopted = self._forgotten = 0.0
        self.device_label = device_label
        self.mapper = NodeExporter(grace_s)
        self._lock = threading.Lock()  # around the mapper
        self._reading = threading.Lock()  # around decoding, and the caches of label sets and times
        # The decompressed write, reused (writes decode one at a time; it keeps the size of the largest): a fresh
        # buffer of megabytes for each write cost more in page faults than decompressing it.
        self._raw = bytearray()
        self._turn = threading.Condition()  # around the stores waiting their turn
        self._queue: list[_Turn] = []
        self._leading = False  # a write is storing the queue's samples
        self._coming = 0  # writes being read: their samples are about to join the queue
        self._seen: dict[bytes, _Seen] = {}  # an encoded label set -> what it means
        self._times: dict[bytes, int] = {}  # the varint of a valid time -> the time in ms
        self._refused = Once(log, again_s=REFUSE_AGAIN_S, most=10_000)  # by source, for /rejected

    def process(self, body: bytes, now: float | None = None) -> Outcome:
        """Read one write and store what is ready. Raises Malformed, TooLarge or Unavailable; changes nothing
        unless the whole body could be read."""
        now = time.time() if now is None else now
        # One write decoded at a time: decoding holds the interpreter anyway. A store waits for the writes being
        # decoded, and stores them with its own (_store_together).
        with self._on_the_way(), self._reading:
            with decompress(body, self._raw) as raw:
                series = frames(raw)
            outcome = Outcome(series=len(series))
            rejects: list[Rejection] = []
            scrapes = self._read(series, now, outcome, rejects)
        outcome.samples = self._store(_Turn(scrapes, rejects, now))
        return outcome

    @contextlib.contextmanager
    def _on_the_way(self) -> Iterator[None]:
        """A write counted as coming while it is read: the stores wait for it (_store_together)."""
        with self._turn:
            self._coming += 1
        try:
            yield
        finally:
            with self._turn:
                self._coming -= 1
                self._turn.notify_all()

    def recover(self) -> int:
        """Take back the parts kept before a restart (by this process, or by another one): their scrapes wait for
        the rest until their grace is out, counted from when they came. How many scrapes."""
        if self.held is None:
            return 0
        return self._adopt(self.held.load())

    def _adopt(self, parts: list[tuple[str, int, list[tuple[Key, float]], float]]) -> int:
        """Parts kept in the database of scrapes not waiting here: they wait here too (settled with the database's
        lock, so whichever process comes first stores them, and the other finds them stored). How many scrapes."""
        adopted: set[ScrapeKey] = set()
        with self._lock:
            for device, ts_ms, values, at in parts:
                if (device, ts_ms) not in adopted and self.mapper.waiting(device, ts_ms) is not None:
                    continue  # waiting here already: settled with every part the database holds
                self.mapper.add(device, ts_ms, values, at)
                scrape = self.mapper.waiting(device, ts_ms)
                if scrape is not None:
                    scrape.recovered = True
                    adopted.add((device, ts_ms))
        return len(adopted)

    def _read(self, series: list[bytes], now: float, outcome: Outcome,
              rejects: list[Rejection]) -> dict[tuple[str, int], list[tuple[Key, float]]]:
        """The values read, by (device, ts in ms). Only the series Rigwatch reads are decoded; the label set of
        one seen before is not decoded again, nor the time of a scrape (the hot path: nine series in ten are
        dropped by a regular expression, and each one read costs a few dictionary look-ups)."""
        scrapes: dict[tuple[str, int], list[tuple[Key, float]]] = {}
        seen, times = self._seen, self._times
        read = 0
        # The series of a scrape come one after the other: the values of the last one's scrape are at hand.
        device: str | None = None
        at: int | None = None
        values: list[tuple[Key, float]] = []
        for encoded in filter(MAYBE_READ.match, series):
            size = len(encoded)
            if not encoded.startswith(NAMED, 2):
                self._slow(encoded, now, scrapes, outcome, rejects)
                continue
            # Shorter than a series of Prometheus: protobuf says what it is.
            if size > VALUE_TAIL and encoded.startswith(VALUE_HEAD, size - VALUE_TAIL) and encoded[size - 7] == 0x10:
                labels = encoded[:size - VALUE_TAIL]
                value = unpack_from("<d", encoded, size - 15)[0]
            elif size > ZERO_TAIL and encoded.startswith(ZERO_HEAD, size - ZERO_TAIL):
                labels, value = encoded[:size - ZERO_TAIL], 0.0
            else:
                labels = b""
            meaning = seen.get(labels)
            ts_ms = times.get(encoded[size - 6:])
            if meaning is None or ts_ms is None or meaning.refused is not None:
                self._slow(encoded, now, scrapes, outcome, rejects)
                continue
            name, where, _refused = meaning
            if where is not None and isfinite(value):
                if ts_ms != at or name != device:
                    device, at = name, ts_ms
                    values = scrapes.setdefault((device, at), [])  # type: ignore[arg-type]
                values.append((where, value))
                read += 1
        outcome.read += read
        return scrapes

    def _slow(self, encoded: bytes, now: float, scrapes: dict[tuple[str, int], list], outcome: Outcome,
              rejects: list[Rejection]) -> None:
        """A series decoded by protobuf; its label set and time remembered when it is laid out as Prometheus
        lays out one sample, so the next ones like it take the fast path."""
        series = decode_series(encoded)
        labels = {label.name: label.value for label in series.labels}
        name = labels.get("__name__", "")
        if name not in READERS:
            return
        meaning = self._meaning(name, labels)
        if meaning.refused is not None:
            self._refuse(*meaning.refused, outcome, rejects)
            return
        if len(series.samples) == 1:
            self._remember(encoded, meaning, series.samples[0].timestamp, now)
        if meaning.key is None:
            return
        for sample in series.samples:
            problem = ts_problem(sample.timestamp, now)
            if problem is not None:
                self._refuse(f"remote write: {meaning.device}", problem, f"{name}{_shown(labels)}", outcome, rejects)
            elif isfinite(sample.value):
                scrapes.setdefault((meaning.device, sample.timestamp), []).append((meaning.key, sample.value))
        outcome.read += 1

    def _meaning(self, name: str, labels: dict[str, str]) -> _Seen:
        value = labels.get(self.device_label)
        if value is None:
            return _Seen(None, None, (f"remote write: no {self.device_label} label",
                                      f"a series has no {self.device_label} label to name its machine", _shown(labels)))
        device = device_name(value)
        if device is None:
            return _Seen(None, None, (f"remote write: {self.device_label}={value[:200]}",
                                      f"the {self.device_label} label {value[:80]!r} does not name a device: 1 to 64 "
                                      "characters of A-Z a-z 0-9 . _ - once its port is dropped", _shown(labels)))
        return _Seen(device, key(name, labels))

    def _remember(self, encoded: bytes, meaning: _Seen, ts_ms: int, now: float) -> None:
        """Remember the label set and the time of a one-sample series laid out as Prometheus lays it out."""
        size = len(encoded)
        for tail, head in ((VALUE_TAIL, VALUE_HEAD), (ZERO_TAIL, ZERO_HEAD)):
            if size > tail and encoded[size - tail:size - tail + 3] == head:
                labels, varint = encoded[:size - tail], encoded[size - 6:]
                break
        else:
            return
        # The label set alone must decode to the same labels and no sample, and the time be the sample's.
        if _millis(varint) != ts_ms or decode_series(labels).samples:
            return
        if len(self._seen) >= MAX_REMEMBERED:
            self._seen.clear()
        self._seen[labels] = meaning
        if ts_problem(ts_ms, now) is None:
            if len(self._times) >= MAX_REMEMBERED:
                self._times.clear()
            self._times[varint] = ts_ms

    def flush(self, everything: bool = False, now: float | None = None) -> int:
        """Store the scrapes that waited out their grace; how many samples. `everything` (at shutdown) stores every
        scrape waiting as well, unless they are kept in the database: then they wait there for the rest, for the
        next start or another bot process. With a holding, it also takes over the parts another process kept and
        never stored (it stopped), and forgets the scrapes stored long ago."""
        now = time.time() if now is None else now
        if self.held is not None:
            self._look_after(now)
        everything = everything and self.held is None
        with self._lock:
            due = self.mapper.due(now, everything)
        return self._store(_Turn({}, [], now, due, everything)) if due else 0

    def _look_after(self, now: float) -> None:
        """What other processes left in the database: parts kept long ago are taken over, and the scrapes stored
        long ago forgotten."""
        assert self.held is not None
        try:
            if now - self._adopted >= ADOPT_EVERY_S:
                self._adopted = now
                if adopted := self._adopt(self.held.load(before=now - ADOPT_AFTER_S)):
                    log.info("remote write: %d scrapes kept by a bot process that stopped are stored here", adopted)
            if now - self._forgotten >= FORGET_EVERY_S:
                self._forgotten = now
                self.held.forget(now - REMEMBER_S)
        except Exception as exc:  # the database is out: storing says so, and the next look tries again
            log.debug("remote write: the parts kept in the database not looked after: %s", exc)

    def _store(self, turn: _Turn) -> int:
        if not turn.brought and not turn.due and not turn.rejects:
            return 0
        try:
            self._store_together(turn)
        except Exception as exc:
            raise Unavailable(str(exc) or type(exc).__name__) from exc
        return turn.stored

    def _store_together(self, mine: _Turn) -> None:
        """Store together with what other writes bring meanwhile: one transaction and one prediction for all the
        writes waiting (a store costs about as much whatever its size: most of it is the prediction's fixed part).

        Reading goes first: a store waits while another write is read, or stored, so that under load the writes
        under way are stored at once instead of one by one between their readings. The wait is bounded: the server
        lets a few writes in at a time (remote_write_server.CONCURRENT), and a write waiting here keeps its place."""
        with self._turn:
            self._queue.append(mine)
            while not mine.done and (self._leading or self._coming):
                self._turn.wait()
            if mine.done:  # stored by the write that led
                if mine.error is not None:
                    raise mine.error
                return
            self._leading = True
            batch, self._queue = self._queue, []
        error: Exception | None = Unavailable("storing was interrupted")
        try:
            self._settle(batch)
            error = None
        except Exception as exc:
            error = exc
        finally:  # whatever happened, the writes waiting are answered and another may lead
            with self._turn:
                for turn in batch:
                    turn.done, turn.error = True, error
                self._leading = False
                self._turn.notify_all()
        if error is not None:
            raise error

    def _settle(self, batch: list[_Turn]) -> None:
        """The scrapes the writes brought (and those due), settled with what the database holds of them, in one
        transaction with the store of the samples ready: the parts of scrapes that wait are kept, those of scrapes
        stored released, or nothing happens (and the writes are answered 503)."""
        brought: dict[ScrapeKey, dict[Key, float]] = {}
        for turn in batch:
            for scrape, values in turn.brought.items():
                brought.setdefault(scrape, {}).update(values)
        scrapes = sorted(set(brought).union(*(turn.due for turn in batch)))
        now = max(turn.now for turn in batch)
        alone = self.held is None or not scrapes
        session = contextlib.nullcontext(_Alone()) if alone else self.held.session(scrapes, now)  # type: ignore[union-attr]
        taken: list[Scrape] = []
        try:
            with self._store_lock, session as fleet:
                samples = self._decide(fleet, batch, scrapes, brought, now, taken)
                rejects = [r for turn in batch for r in turn.rejects]
                if samples or rejects:
                    self.store(samples, rejects)
        except BaseException:
            with self._lock:
                self.mapper.restore(taken)
            raise

    def _decide(self, fleet: Fleet, batch: list[_Turn], scrapes: list[ScrapeKey],
                brought: dict[ScrapeKey, dict[Key, float]], now: float, taken: list[Scrape]) -> list[Sample]:
        """What becomes of each scrape, with what the database holds of it: waits (what came now is kept), is
        stored (its parts are released), or came after it was stored (left out). The samples to store; the scrapes
        taken out of the mapper go to `taken`, to be restored if storing fails."""
        everything = any(turn.everything for turn in batch)
        keep: list[Part] = []
        series: dict[ScrapeKey, int] = {}
        released: list[ScrapeKey] = []
        samples: list[Sample] = []
        stored: set[ScrapeKey] = set()
        with self._lock:
            for turn in batch:
                for (device, ts_ms), values in turn.brought.items():
                    self.mapper.add(device, ts_ms, values, turn.now)
            for scrape in scrapes:
                device, ts_ms = scrape
                fresh = brought.get(scrape, {})
                held = fleet.held.get(scrape)
                settled = self.mapper.settle(
                    device, ts_ms, now, fresh=len(fresh), more=held.values if held else (),
                    since=held.since if held else None, expected=fleet.expected.get(device),
                    taken=fleet.taken.get(scrape), everything=everything)
                if settled.verdict is Verdict.WAITING:
                    if fresh:
                        keep.append((device, ts_ms, list(fresh.items())))
                    continue
                if settled.verdict is Verdict.GONE:  # settled meanwhile
                    continue
                released.append(scrape)
                if settled.series is not None:
                    series[scrape] = settled.series
                if settled.verdict is Verdict.READY and settled.scrape is not None:
                    taken.append(settled.scrape)
                    if settled.sample is not None:
                        samples.append(settled.sample)
                        stored.add(scrape)
        for turn in batch:
            turn.stored = len(stored & {*turn.brought, *turn.due})
        fleet.keep(keep, now)
        fleet.take(series, now)
        fleet.release(released)
        return samples

    def _refuse(self, source: str, reason: str, payload: str, outcome: Outcome, rejects: list[Rejection]) -> None:
        """Say why series were left out; recorded for /rejected once per source every REFUSE_AGAIN_S."""
        if reason not in outcome.refused:
            outcome.refused.append(reason)
        if self._refused.due(source) is not None:
            rejects.append(Rejection(source, reason, payload.encode("utf-8", "backslashreplace")))


def _shown(labels: Mapping[str, str]) -> str:
    """A series' labels as Prometheus writes them, short."""
    text = ",".join(f'{name}="{value[:100]}"' for name, value in list(labels.items())[:20] if name != "__name__")
    return "{" + text[:400] + "}"
