"""Prometheus remote write 1.0 in: `POST /api/v1/write`, a snappy-compressed protobuf WriteRequest, as Prometheus,
Grafana Alloy, Telegraf and the OpenTelemetry Collector send it.

node_exporter's series become samples (bot/pipeline/node_exporter.py), one per machine and scrape, stored through
the same path as the agent's: in single-host mode predicted, stored and decided here (Poller.store); in fleet
mode produced to the Kafka topic as wire messages, so the workers share them. The answer says what happened:
2xx only once the samples are stored (or delivered to Kafka); 400 for a body that can never be read (the sender
drops it, so the log says why); 413 for a body over 16 MiB decompressed; 503 while the store or the broker is out,
or the receiver is busy, so the sender retries. A retried write stores nothing twice: (device, ts) is unique in
the store, and rates are computed against the scrape before it, kept by its time. A scrape split over several
writes waits for its rest (bot/pipeline/node_exporter.py); its parts are kept in the database meanwhile (before
their writes are answered), so a restart loses none of them.

Only the series Rigwatch reads are decoded: protobuf hands out the request's series still encoded (frames.proto),
and the others (nine in ten of node_exporter's) are dropped once their name is read in place. A label set seen
before is not decoded again either: its bytes are looked up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from math import isfinite
from struct import unpack_from
from typing import NamedTuple, Protocol

import cramjam
from aiohttp import web
from confluent_kafka import KafkaError, Message, Producer
from google.protobuf.message import DecodeError

from agent.wire import Sample, encode
from bot.db import Rejection, beat
from bot.logs import Outage
from bot.pipeline.node_exporter import READERS, Key, NodeExporter, Scrape, device_name, key, ts_problem
from bot.pipeline.prompb import frames_pb2, types_pb2

log = logging.getLogger(__name__)
PATH = "/api/v1/write"
MAX_BODY = 16 * 1024 * 1024  # decompressed
MAX_COMPRESSED = 32 + MAX_BODY + MAX_BODY // 6  # snappy's bound on what MAX_BODY compresses to
CONCURRENT = 4  # writes decoded and stored at once; the others wait their turn
MAX_WAITING = 32  # beyond this many waiting writes, a write is answered 503 at once
GRACE_S = 10.0  # a scrape split over several writes waits this long for its rest (Prometheus flushes every 5 s)
FLUSH_EVERY_S = 1.0
PRUNE_EVERY_S, PRUNE_AFTER_S = 600.0, 3600.0  # held parts of no scrape waiting (a race left them) are forgotten
REFUSE_AGAIN_S = 600.0  # a device label refused is recorded in /rejected again after this long
SAY_AGAIN_S = 60.0  # a 400's reason is logged again after this long (with how many came meanwhile)
PROTOBUF = "application/x-protobuf"
V1_PROTO = "prometheus.WriteRequest"
NAMED = b"\n\x08__name__\x12"  # a series' first label, `__name__`, as Prometheus encodes it (labels sorted)
# A series to look at: Prometheus sorts labels, so `__name__` comes first and names it; one of the names Rigwatch
# reads (its length byte before it makes the match exact), or a series laid out otherwise, which protobuf reads.
MAYBE_READ = re.compile(
    rb"\n.(?:\n\x08__name__\x12(?:" + b"|".join(re.escape(bytes([len(name)]) + name.encode()) for name in READERS)
    + rb")|(?!\n\x08__name__\x12))|(?!\n)", re.DOTALL)


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


Part = tuple[str, int, Sequence[tuple[Key, float]]]  # (device, ts in ms, values) of a scrape waiting for its rest


class Holding(Protocol):
    """Where the parts of scrapes waiting for their rest are kept durably (bot/db/held.py)."""

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
        self._refused: dict[str, float] = {}  # source -> when it was last recorded as rejected

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
        for encoded in filter(MAYBE_READ.match, series):
            try:
                if encoded[2:13] != NAMED:
                    self._slow(encoded, now, scrapes, outcome, rejects)
                    continue
                size = len(encoded)
                if encoded[size - VALUE_TAIL:size - 15] == VALUE_HEAD and encoded[size - 7] == 0x10:
                    labels = encoded[:size - VALUE_TAIL]
                    value = unpack_from("<d", encoded, size - 15)[0]
                elif encoded[size - ZERO_TAIL:size - 6] == ZERO_HEAD:
                    labels, value = encoded[:size - ZERO_TAIL], 0.0
                else:
                    labels = b""
                meaning = seen.get(labels)
                ts_ms = times.get(encoded[size - 6:])
            except IndexError:  # shorter than a series of Prometheus: protobuf says what it is
                meaning = ts_ms = None
            if meaning is None or ts_ms is None or meaning.refused is not None:
                self._slow(encoded, now, scrapes, outcome, rejects)
                continue
            if meaning.key is not None and isfinite(value):
                scrapes.setdefault((meaning.device, ts_ms), []).append((meaning.key, value))  # type: ignore[arg-type]
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
            self._refuse(*meaning.refused, now, outcome, rejects)
            return
        if len(series.samples) == 1:
            self._remember(encoded, meaning, series.samples[0].timestamp, now)
        if meaning.key is None:
            return
        for sample in series.samples:
            problem = ts_problem(sample.timestamp, now)
            if problem is not None:
                self._refuse(f"remote write: {meaning.device}", problem, f"{name}{_shown(labels)}", now, outcome,
                             rejects)
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
        lets CONCURRENT writes in at a time, and a write waiting here keeps its place."""
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

    def _refuse(self, source: str, reason: str, payload: str, now: float, outcome: Outcome,
                rejects: list[Rejection]) -> None:
        """Say why series were left out; recorded for /rejected once per source every REFUSE_AGAIN_S."""
        if reason not in outcome.refused:
            outcome.refused.append(reason)
        if now - self._refused.get(source, -REFUSE_AGAIN_S) >= REFUSE_AGAIN_S:
            if len(self._refused) >= 10_000:
                self._refused.clear()
            self._refused[source] = now
            rejects.append(Rejection(source, reason, payload.encode("utf-8", "backslashreplace")))


def _shown(labels: Mapping[str, str]) -> str:
    """A series' labels as Prometheus writes them, short."""
    text = ",".join(f'{name}="{value[:100]}"' for name, value in list(labels.items())[:20] if name != "__name__")
    return "{" + text[:400] + "}"


class KafkaSink:
    """Fleet mode: samples produced to the metrics topic as wire messages (key: the device), returning only once
    the broker has every one of them; rejections go to the store directly."""

    def __init__(self, bootstrap: str, topic: str, store_rejects: Callable[[list[Rejection]], object],
                 timeout_s: float = 10.0) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self.store_rejects = store_rejects
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            # A broker that does not answer fails the write within the sender's patience (Prometheus: 30 s).
            "message.timeout.ms": int(timeout_s * 1000),
            "queue.buffering.max.messages": 1_000_000,
            "logger": logging.getLogger("librdkafka"),
            "log_level": 2,
        })

    def __call__(self, samples: list[Sample], rejects: list[Rejection]) -> None:
        failed: list[KafkaError] = []
        delivered = [0]

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                delivered[0] += 1
            else:
                failed.append(error)

        for sample in samples:
            value = encode(sample.device, sample.ts, sample.metrics, filesystems=sample.filesystems)
            while True:
                try:
                    self.producer.produce(self.topic, key=sample.device.encode(), value=value, on_delivery=on_delivery)
                    break
                except BufferError:  # the local queue is full: let it drain
                    self.producer.poll(0.05)
        self.producer.flush(self.timeout_s)
        if failed or delivered[0] < len(samples):
            reason = failed[0].str() if failed else "no answer from the broker in time"
            raise Unavailable(f"Kafka did not take {len(samples) - delivered[0]} of {len(samples)} samples: {reason}")
        if rejects:
            self.store_rejects(rejects)

    def close(self) -> None:
        self.producer.flush(self.timeout_s)


INTAKE = "remote write"  # its heartbeat's name
IDLE_S = 60.0  # no write for this long: the senders are down (Prometheus writes every few seconds)
BEAT_S = 2.0


class RemoteWriteServer:
    """The HTTP side, in the bot's event loop: authorisation, the answers, back-pressure, and the flush of scrapes
    that waited for their rest. `after_store` runs on the loop after samples were stored (to send alerts)."""

    def __init__(self, receiver: Receiver, host: str | None, port: int, token: str | None = None,
                 after_store: Callable[[], None] | None = None) -> None:
        self.receiver = receiver
        self.host, self.port = host, port
        self._token = token.encode() if token else None
        self.after_store = after_store
        self._busy = asyncio.Semaphore(CONCURRENT)
        self._waiting = 0
        self._runner: web.AppRunner | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.storing = Outage(log, "remote write: storing failed (%s); answering 503 so the senders retry",
                              "remote write: storing works again", level=logging.ERROR)
        self._said: dict[str, tuple[float, int]] = {}  # 400 reason -> (when logged, how many since)
        self.last_write = time.time()  # of a write that was read; from the start, so a fresh bot is not "idle"
        self._beaten = 0.0

    @property
    def receiving(self) -> bool:
        """Whether writes arrive: Prometheus (or another sender) wrote within IDLE_S."""
        return time.time() - self.last_write < IDLE_S

    async def _beat(self) -> None:
        """The intake's heartbeat (bot/db/ingest.beat): while no write comes, no machine is declared silent."""
        self.last_write = now = time.time()
        if now - self._beaten >= BEAT_S:
            self._beaten = now
            try:
                await asyncio.to_thread(beat, INTAKE, now, IDLE_S)
            except Exception as exc:  # the database is out: storing says so; the next write beats again
                log.debug("remote write: heartbeat not stored: %s", exc)

    async def start(self) -> None:
        try:
            recovered = await asyncio.to_thread(self.receiver.recover)
        except Exception as exc:  # they stay kept: the next start takes them back
            log.error("remote write: parts of scrapes kept before the restart could not be read: %s", exc)
        else:
            if recovered:
                log.info("remote write: %d scrapes kept before the restart wait for the rest of their series",
                         recovered)
        app = web.Application(client_max_size=MAX_COMPRESSED)
        app.router.add_post(PATH, self.write)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self._flusher = asyncio.create_task(self._flush_regularly(), name="remote-write-flush")
        log.info("remote write: listening on http://%s:%d%s%s", self.host or "*", self.port, PATH,
                 "" if self._token else " without a token (REMOTE_WRITE_TOKEN)")

    async def stop(self) -> None:
        """Stop taking writes, then store every scrape still waiting for its rest."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        try:
            await asyncio.to_thread(self.receiver.flush, True)
        except Unavailable as exc:
            log.error("remote write: scrapes waiting for their rest could not be stored at shutdown: %s", exc)

    def _authorised(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        given = request.headers.get("Authorization", "")
        scheme, _, credentials = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._token)

    async def write(self, request: web.Request) -> web.Response:
        """POST /api/v1/write."""
        if not self._authorised(request):
            return web.Response(status=401, text="a bearer token is required (REMOTE_WRITE_TOKEN)\n",
                                headers={"WWW-Authenticate": 'Bearer realm="rigwatch"'})
        media, _, parameters = request.headers.get("Content-Type", PROTOBUF).partition(";")
        proto = dict(p.strip().partition("=")[::2] for p in parameters.split(";") if "=" in p).get("proto", V1_PROTO)
        if media.strip().lower() != PROTOBUF or proto != V1_PROTO:
            return web.Response(status=415, text=f"only remote write 1.0 ({PROTOBUF}, {V1_PROTO}) is served\n")
        if request.headers.get("Content-Encoding", "snappy").lower() != "snappy":
            return self._bad("the body must be snappy-compressed (Content-Encoding: snappy)")
        if self._waiting >= MAX_WAITING:
            return web.Response(status=503, text="busy: try again\n", headers={"Retry-After": "1"})
        self._waiting += 1
        try:
            body = await request.read()
            async with self._busy:
                outcome = await asyncio.to_thread(self.receiver.process, body)
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text=f"the body is more than {MAX_COMPRESSED:,} bytes\n")
        except TooLarge as exc:
            return web.Response(status=413, text=f"{exc}\n")
        except Malformed as exc:
            return self._bad(str(exc))
        except Unavailable as exc:
            self.storing.down(exc)
            return web.Response(status=503, text="the store is out for now: try again\n", headers={"Retry-After": "5"})
        finally:
            self._waiting -= 1
        self.storing.up()
        if outcome.read:
            await self._beat()
        if outcome.samples and self.after_store is not None:
            self.after_store()
        if outcome.refused and not outcome.read:
            return self._bad("; ".join(outcome.refused[:3]))
        return web.Response(status=204)

    def _bad(self, reason: str) -> web.Response:
        """400, said in the log once a minute per reason with how many came meanwhile."""
        now = time.monotonic()
        logged, since = self._said.get(reason, (-SAY_AGAIN_S, 0))
        if now - logged >= SAY_AGAIN_S:
            more = f" ({since} more since)" if since else ""
            log.warning("remote write refused (400): %s%s", reason, more)
            if len(self._said) >= 1000:
                self._said.clear()
            self._said[reason] = (now, 0)
        else:
            self._said[reason] = (logged, since + 1)
        return web.Response(status=400, text=f"{reason}\n")

    async def _flush_regularly(self) -> None:
        """Store the scrapes that waited out their grace, even when no write comes."""
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            try:
                if await asyncio.to_thread(self.receiver.flush) and self.after_store is not None:
                    self.after_store()
            except Unavailable as exc:
                self.storing.down(exc)
            except Exception:  # a bug must not end the flushing for good
                log.exception("remote write: flushing failed")
