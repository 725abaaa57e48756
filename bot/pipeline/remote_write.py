"""Prometheus remote write 1.0 in: `POST /api/v1/write`, a snappy-compressed protobuf WriteRequest, as Prometheus,
Grafana Alloy, Telegraf and the OpenTelemetry Collector send it.

node_exporter's series become samples (bot/pipeline/node_exporter.py), one per machine and scrape, stored through
the same path as the agent's: in single-host mode predicted, stored and decided here (Poller.store); in fleet
mode produced to the Kafka topic as wire messages, so the workers share them. The answer says what happened:
2xx only once the samples are stored (or delivered to Kafka); 400 for a body that can never be read (the sender
drops it, so the log says why); 413 for a body over 16 MiB decompressed; 503 while the store or the broker is out,
or the receiver is busy, so the sender retries. A retried write stores nothing twice: (device, ts) is unique in
the store, and rates are computed against the scrape before it, kept by its time.

Only the series Rigwatch reads are decoded: the others (nine in ten of node_exporter's) are stepped over by
their length, their name read in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import cramjam
from aiohttp import web
from confluent_kafka import KafkaError, Message, Producer
from google.protobuf.message import DecodeError

from agent.wire import Sample, encode
from bot.db import Rejection
from bot.logs import Outage
from bot.pipeline.node_exporter import READERS, NodeExporter, device_name
from bot.pipeline.prompb import remote_pb2, types_pb2

log = logging.getLogger(__name__)
PATH = "/api/v1/write"
MAX_BODY = 16 * 1024 * 1024  # decompressed
MAX_COMPRESSED = 32 + MAX_BODY + MAX_BODY // 6  # snappy's bound on what MAX_BODY compresses to
CONCURRENT = 2  # writes decoded and stored at once; the others wait their turn
MAX_WAITING = 32  # beyond this many waiting writes, a write is answered 503 at once
GRACE_S = 10.0  # a scrape split over several writes waits this long for its rest (Prometheus flushes every 5 s)
FLUSH_EVERY_S = 1.0
REFUSE_AGAIN_S = 600.0  # a device label refused is recorded in /rejected again after this long
SAY_AGAIN_S = 60.0  # a 400's reason is logged again after this long (with how many came meanwhile)
PROTOBUF = "application/x-protobuf"
V1_PROTO = "prometheus.WriteRequest"
NAMED = b"\n\x08__name__\x12"  # a series' first label, `__name__`, as Prometheus encodes it (labels sorted)
WANTED = {name.encode(): name for name in READERS}


class Malformed(ValueError):
    """A body that is not a remote write 1.0 request; the text says why (400)."""


class TooLarge(ValueError):
    """A body over MAX_BODY decompressed (413)."""


class Unavailable(RuntimeError):
    """The store or the broker failed: the sender should retry (503)."""


def decompress(body: bytes) -> bytes:
    """The WriteRequest bytes of a body in snappy's block format."""
    try:
        size = cramjam.snappy.decompress_raw_len(body)
    except cramjam.DecompressionError as exc:
        raise Malformed(f"not snappy-compressed (block format): {exc}") from None
    if size > MAX_BODY:
        raise TooLarge(f"the body is {size:,} bytes decompressed, more than {MAX_BODY:,}")
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as exc:
        raise Malformed(f"not snappy-compressed (block format): {exc}") from None


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and where it ends."""
    value = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise Malformed("not a WriteRequest: a length is longer than ten bytes")


def relevant_series(raw: bytes) -> tuple[int, list[tuple[str, types_pb2.TimeSeries]]]:
    """(how many series the WriteRequest holds, its series whose name Rigwatch reads, each with that name).

    The request's top level is walked by hand: each series' name is read where Prometheus puts it (its first
    label, labels being sorted), and only the series wanted are decoded by protobuf. A series named otherwise, or
    a request with other fields, is decoded by protobuf whole, so any valid encoding is read alike.
    """
    parse = types_pb2.TimeSeries.FromString
    wanted: list[tuple[str, types_pb2.TimeSeries]] = []
    count = pos = 0
    end = len(raw)
    try:
        while pos < end:
            tag = raw[pos]
            length = raw[pos + 1]
            start = pos + 2
            if length >= 0x80:
                length, start = _varint(raw, pos + 1)
            stop = start + length
            if stop > end:
                raise Malformed("not a WriteRequest: it is cut short (a field runs past the end of the body)")
            pos = stop
            if tag != 0x0A:  # not a series
                if tag == 0x1A:  # metadata (type, help, unit): nothing Rigwatch reads
                    continue
                return _every_series(raw)
            count += 1
            if raw[start + 2:start + 13] == NAMED and raw[start] == 0x0A:
                size = raw[start + 13]
                name = WANTED.get(raw[start + 14:start + 14 + size])
                if name is None:
                    continue
                if raw[start + 1] == 12 + size:  # a label of exactly that name, as it looked
                    wanted.append((name, parse(raw[start:stop])))
                    continue
            series = parse(raw[start:stop])
            name = next((label.value for label in series.labels if label.name == "__name__"), "")
            if name in READERS:
                wanted.append((name, series))
    except IndexError:
        raise Malformed("not a WriteRequest: it is cut short") from None
    except DecodeError as exc:
        raise Malformed(f"not a WriteRequest: a series cannot be decoded ({exc})") from None
    return count, wanted


def _every_series(raw: bytes) -> tuple[int, list[tuple[str, types_pb2.TimeSeries]]]:
    """The same as relevant_series, with protobuf decoding the whole request."""
    try:
        request = remote_pb2.WriteRequest.FromString(raw)
    except DecodeError as exc:
        raise Malformed(f"not a WriteRequest: {exc}") from None
    wanted = []
    for series in request.timeseries:
        name = next((label.value for label in series.labels if label.name == "__name__"), "")
        if name in READERS:
            wanted.append((name, series))
    return len(request.timeseries), wanted


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
    """Decodes writes, maps node_exporter's series to samples and stores them; blocks (run it in a thread)."""

    def __init__(self, store: Store, device_label: str = "instance", grace_s: float = GRACE_S) -> None:
        self.store = store
        self.device_label = device_label
        self.mapper = NodeExporter(grace_s)
        self._lock = threading.Lock()  # around the mapper
        self._devices: dict[str, str] = {}  # label value -> device
        self._refused: dict[str, float] = {}  # source -> when it was last recorded as rejected

    def process(self, body: bytes, now: float | None = None) -> Outcome:
        """Read one write and store what is ready. Raises Malformed, TooLarge or Unavailable; changes nothing
        unless the whole body could be read."""
        now = time.time() if now is None else now
        count, wanted = relevant_series(decompress(body))
        outcome = Outcome(series=count)
        rejects: list[Rejection] = []
        label, devices, mapper = self.device_label, self._devices, self.mapper
        with self._lock:
            for name, series in wanted:
                labels = {item.name: item.value for item in series.labels}
                value = labels.get(label)
                device = devices.get(value) if value is not None else None
                if device is None:
                    device = self._device(value, labels, now, outcome, rejects)
                    if device is None:
                        continue
                problem = mapper.add(device, name, labels, [(s.timestamp, s.value) for s in series.samples], now)
                if problem is not None:
                    self._refuse(f"remote write: {device}", problem, f"{name}{_shown(labels)}", now, outcome,
                                 rejects)
                outcome.read += 1
            ready = mapper.take(now)
        outcome.samples = self._store(ready, rejects)
        return outcome

    def flush(self, everything: bool = False, now: float | None = None) -> int:
        """Store the scrapes that waited out their grace (or, at shutdown, all); how many samples."""
        now = time.time() if now is None else now
        with self._lock:
            ready = self.mapper.take(now, everything=everything)
        return self._store(ready, []) if ready else 0

    def _store(self, ready: list, rejects: list[Rejection]) -> int:
        samples = [sample for _scrape, sample in ready if sample is not None]
        if not samples and not rejects:
            return 0
        try:
            self.store(samples, rejects)
        except Exception as exc:
            with self._lock:
                self.mapper.restore(scrape for scrape, _sample in ready)
            raise Unavailable(str(exc) or type(exc).__name__) from exc
        return len(samples)

    def _device(self, value: str | None, labels: Mapping[str, str], now: float, outcome: Outcome,
                rejects: list[Rejection]) -> str | None:
        """The device a label value names, remembered when it names one; refused with a reason when not."""
        if value is None:
            self._refuse(f"remote write: no {self.device_label} label", f"a series has no {self.device_label} "
                         "label to name its machine", _shown(labels), now, outcome, rejects)
            return None
        device = device_name(value)
        if device is not None:
            if len(self._devices) >= 100_000:
                self._devices.clear()
            self._devices[value] = device
        else:
            self._refuse(f"remote write: {self.device_label}={value[:200]}",
                         f"the {self.device_label} label {value[:80]!r} does not name a device: 1 to 64 characters "
                         "of A-Z a-z 0-9 . _ - once its port is dropped", _shown(labels), now, outcome, rejects)
        return device

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

    async def start(self) -> None:
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
