"""The remote-write receiver's outside: `POST /api/v1/write` over HTTP in the bot's event loop (authorisation,
the answers, back-pressure, the flush of scrapes that waited for their rest), and in fleet mode the Kafka sink
its samples go to. What a write means is bot/intake/remote_write.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable

from aiohttp import web
from confluent_kafka import KafkaError, Message, Producer

from agent.log_once import Once, Outage
from agent.vocabulary import producer_settings
from agent.wire import Sample, encode
from bot.db import Rejection, beat
from bot.intake.remote_write import MAX_BODY, Malformed, Receiver, TooLarge, Unavailable

log = logging.getLogger(__name__)
PATH = "/api/v1/write"
MAX_COMPRESSED = 32 + MAX_BODY + MAX_BODY // 6  # snappy's bound on what MAX_BODY compresses to
CONCURRENT = 4  # writes decoded and stored at once; the others wait their turn
MAX_WAITING = 32  # beyond this many waiting writes, a write is answered 503 at once
FLUSH_EVERY_S = 1.0
SAY_AGAIN_S = 60.0  # a 400's reason is logged again after this long (with how many came meanwhile)
PROTOBUF = "application/x-protobuf"
V1_PROTO = "prometheus.WriteRequest"


class KafkaSink:
    """Fleet mode: samples produced to the metrics topic as wire messages (key: the device), returning only once
    the broker has every one of them; rejections go to the store directly."""

    def __init__(self, bootstrap: str, topic: str, store_rejects: Callable[[list[Rejection]], object],
                 timeout_s: float = 10.0) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self.store_rejects = store_rejects
        # A broker that does not answer fails the write within the sender's patience (Prometheus: 30 s).
        self.producer = Producer(producer_settings(bootstrap, "rigwatch-remote-write", timeout_s, 1_000_000,
                                                   linger_ms=5, logger=logging.getLogger("librdkafka")))

    def __call__(self, samples: list[Sample], rejects: list[Rejection]) -> None:
        failed: list[KafkaError] = []
        delivered = [0]

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                delivered[0] += 1
            else:
                failed.append(error)

        for sample in samples:
            value = encode(sample.device, sample.ts, sample.metrics, filesystems=sample.filesystems,
                           readings=sample.readings, notes=sample.notes, unreadable=sample.unreadable)
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
        self.refusals = Once(log, again_s=SAY_AGAIN_S)  # by the reason of a 400
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
        """Stop taking writes, then store the scrapes still waiting for their rest in memory alone (those kept in
        the database wait there for the next start, or another bot process)."""
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
        self.refusals.say(reason, "remote write refused (400): %s", reason)
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
