"""Prometheus remote write 1.0 in: `POST /api/v1/write`, a snappy-compressed protobuf WriteRequest, as Prometheus,
Grafana Alloy, Telegraf and the OpenTelemetry Collector send it.

node_exporter's series become samples (bot/intake/node_exporter.py), one per machine and scrape, stored through
the same path as the agent's: in single-host mode predicted, stored and decided here (Poller.store); in fleet
mode produced to the Kafka topic as wire messages, so the workers share them. The answer says what happened:
2xx only once the samples are stored (or delivered to Kafka); 400 for a body that can never be read (the sender
drops it, so the log says why); 413 for a body over 16 MiB decompressed; 503 while the store or the broker is out,
or the receiver is busy, so the sender retries. A retried write stores nothing twice: (device, ts) is unique in
the store, and rates are computed against the scrape before it, kept by its time. A scrape split over several
writes waits for its rest (bot/intake/node_exporter.py); its parts are kept in the database meanwhile (before
their writes are answered), so a restart loses none of them.

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
from bot.db.held_parts import Part
from bot.intake.node_exporter import READERS, Key, NodeExporter, Scrape, device_name, key, ts_problem
from bot.intake.prompb import frames_pb2, types_pb2
from bot.intake.series_pattern import MAYBE_READ, NAMED

log = logging.getLogger(__name__)
MAX_BODY = 16 * 1024 * 1024  # decompressed
GRACE_S = 10.0  # a scrape split over several writes waits this long for its rest (Prometheus flushes every 5 s)
PRUNE_EVERY_S, PRUNE_AFTER_S = 600.0, 3600.0  # held parts of no scrape waiting (a race left them) are forgotten
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
    """Where the parts of scrapes waiting for their rest are kept durably (bot/db/held_parts.py)."""

    def keep(self, parts: Iterable[Part], now: float) -> None: ...
    def release(self, scrapes: Iterable[tuple[str, int]]) -> None: ...
    def load(self) -> list[tuple[str, int, list[tuple[Key, float]], float]]: ...
    def older(self, than: float) -> list[tuple[str, int]]: ...


@dataclass
class _Turn:
    """What one write brought, waiting to be stored with what others brought."""

    samples: list[Sample]
    rejects: list[Rejection]
    parts: list[Part]  # to keep: of scrapes that wait for their rest
    released: list[tuple[str, int]]  # scrapes stored now whose parts were kept
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
    Without `held`, the parts of scrapes waiting for their rest are kept in memory alone."""

    def __init__(self, store: Store, device_label: str = "instance", grace_s: float = GRACE_S,
                 held: Holding | None = None) -> None:
        self.store = store
        self.held = held
        self._pruned = time.time()
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
        with self._on_the_way():
            with self._reading:
                with decompress(body, self._raw) as raw:
                    series = frames(raw)
                outcome = Outcome(series=len(series))
                rejects: list[Rejection] = []
                scrapes = self._read(series, now, outcome, rejects)
            with self._lock:
                for (device, ts_ms), values in scrapes.items():
                    self.mapper.add(device, ts_ms, values, now)
                ready = self.mapper.take(now)
                parts = self._waiting_parts(scrapes) if self.held is not None else []
        outcome.samples = self._store(ready, rejects, parts)
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

    def _waiting_parts(self, scrapes: dict[tuple[str, int], list[tuple[Key, float]]]) -> list[Part]:
        """What this write brought to scrapes that still wait for their rest: to be kept before it is answered."""
        parts = []
        for (device, ts_ms), values in scrapes.items():
            waiting = self.mapper.waiting(device, ts_ms)
            if waiting is not None:
                waiting.held = True
                parts.append((device, ts_ms, values))
        return parts

    def recover(self) -> int:
        """Take back the parts kept before a restart: their scrapes wait for the rest until their grace is out
        (counted from when they came). How many scrapes."""
        if self.held is None:
            return 0
        held = self.held.load()
        with self._lock:
            for device, ts_ms, values, at in held:
                self.mapper.add(device, ts_ms, values, at)
                scrape = self.mapper.waiting(device, ts_ms)
                if scrape is not None:
                    scrape.held = scrape.recovered = True
        return len({(device, ts_ms) for device, ts_ms, _values, _at in held})

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
        """Store the scrapes that waited out their grace (or, at shutdown, all); how many samples."""
        now = time.time() if now is None else now
        with self._lock:
            ready = self.mapper.take(now, everything=everything)
        stored = self._store(ready, []) if ready else 0
        if self.held is not None and now - self._pruned >= PRUNE_EVERY_S:
            self._pruned = now
            self._prune(now)
        return stored

    def _prune(self, now: float) -> None:
        """Forget held parts of scrapes stored long ago: two writes racing can keep a part after its scrape was
        stored. A scrape still waiting (its store is out) keeps its parts."""
        assert self.held is not None
        try:
            old = self.held.older(now - PRUNE_AFTER_S)
            with self._lock:
                gone = [scrape for scrape in old if self.mapper.waiting(*scrape) is None]
            if gone:
                self.held.release(gone)
        except Exception as exc:  # the database is out: the next prune tries again
            log.warning("remote write: held parts not pruned: %s", exc)

    def _store(self, ready: list[tuple[Scrape, Sample | None]], rejects: list[Rejection],
               parts: list[Part] | None = None) -> int:
        samples = [sample for _scrape, sample in ready if sample is not None]
        released = [(scrape.device, scrape.ts_ms) for scrape, _sample in ready if scrape.held]
        if not samples and not rejects and not parts and not released:
            return 0
        try:
            self._store_together(_Turn(samples, rejects, parts or [], released))
        except Exception as exc:
            with self._lock:
                self.mapper.restore(scrape for scrape, _sample in ready)
            raise Unavailable(str(exc) or type(exc).__name__) from exc
        return len(samples)

    def _store_together(self, mine: _Turn) -> None:
        """Store together with what other writes bring meanwhile: one prediction and one transaction for all the
        writes waiting (a store costs about as much whatever its size: most of it is the prediction's fixed part).
        The parts of scrapes that wait for their rest are kept first; those of scrapes stored, released after.

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
            parts = [part for turn in batch for part in turn.parts]
            if parts and self.held is not None:
                self.held.keep(parts, time.time())
            self.store([s for turn in batch for s in turn.samples], [r for turn in batch for r in turn.rejects])
            error = None
            self._release([scrape for turn in batch for scrape in turn.released])
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

    def _release(self, scrapes: list[tuple[str, int]]) -> None:
        """Forget the held parts of scrapes now stored. Failing is no reason to answer 5xx: what they held is
        stored, and parts kept too long are pruned (or, after a restart, stored again: nothing twice)."""
        if not scrapes or self.held is None:
            return
        try:
            self.held.release(scrapes)
        except Exception as exc:
            log.warning("remote write: held parts of %d stored scrapes not released: %s", len(scrapes), exc)

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
