"""The remote-write receiver's part of `python -m bench.pipeline`: realistic node_exporter writes (about 1,000
series per machine, many machines per write, as Prometheus batches them) posted over HTTP to the real
`python -m bot`, against a ceiling measured in the same run: decompressing and decoding the same bodies, nothing
else.

The receiver decodes a label set once, the first time it sees it: one scrape of every machine is sent first and
not timed, as a receiver that has been running a while has seen every series already.

    python -m bench.pipeline --only-remote-write                  # this part alone
    python -m bench.pipeline --only-remote-write --rw-machines 500 --rw-rounds 3   # quicker
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cramjam

from bot.intake.prompb import remote_pb2
from bot.intake.remote_write import Receiver
from bot.intake.remote_write_http import PATH
from schema import tables
from tests.fakes.bot_process import BotProcess
from tests.fakes.node_exporter import machine, write_request
from tests.fakes.services import free_port
from tests.fakes.telegram_api import FakeTelegram

TARGET_RATIO = 0.5
SCRAPE_INTERVAL_S = 15.0
TARGET_MACHINES = 1000  # node_exporter machines at SCRAPE_INTERVAL_S
RW_TOKEN = "bench-remote-write-token"
SENDERS = 4  # writes under way at once, as Prometheus' shards send them under load


@dataclass
class Figures:
    series: int = 0  # in all the writes
    samples: int = 0  # machines x rounds
    body_bytes: int = 0
    raw_bytes: int = 0
    ceiling_s: float = 0.0  # decompress + decode, every body
    in_process_s: float = 0.0  # the receiver in this process, storing nothing
    bot_s: float = 0.0  # the real bot over HTTP, from the first post to the last answer
    stored: int = 0
    distinct: int = 0
    refused: int = 0  # answers other than 204
    warm_up: int = 0  # samples of the untimed first scrape of every machine

    def rate(self, seconds: float) -> tuple[float, float]:
        """(series/s, samples/s)."""
        return (self.series / seconds, self.samples / seconds) if seconds > 0 else (0.0, 0.0)


def bodies(machines: int, per_write: int, rounds: int, start: float) -> list[bytes]:
    """The writes of `rounds` scrapes of `machines` machines, `per_write` machines a write, 15 s apart. One
    write per round is built; the others are the same with other machine names of the same length."""
    writes = []
    groups = (machines + per_write - 1) // per_write
    for r in range(rounds):
        scrape = machine(idle_s=64800 + 9 * r, busy_s=21600 + 6 * r, net_bytes=1e9 + 3e6 * r, disk_bytes=5e9 + 1e7 * r)
        template = write_request({f"host-0000-{i:03d}:9100": [(start + SCRAPE_INTERVAL_S * r, scrape)]
                                  for i in range(per_write)}).SerializeToString()
        for group in range(groups):
            raw = template.replace(b"host-0000-", f"host-{group:04d}-".encode())
            writes.append(bytes(cramjam.snappy.compress_raw(raw)))
    return writes


def best_of(times: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy", "Authorization": f"Bearer {RW_TOKEN}",
        "X-Prometheus-Remote-Write-Version": "0.1.0"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def measure(machines: int, per_write: int, rounds: int, fake: FakeTelegram, tmp: Path, token: str,
            timeout: float) -> Figures:
    start = time.time() - SCRAPE_INTERVAL_S * (rounds + 1) - 60
    every = bodies(machines, per_write, rounds + 1, start)
    warm_up, writes = every[:len(every) // (rounds + 1)], every[len(every) // (rounds + 1):]
    figures = Figures(samples=machines * rounds, body_bytes=sum(map(len, writes)))
    figures.warm_up = machines
    first = remote_pb2.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(writes[0])))
    figures.series = len(first.timeseries) * len(writes)

    def ceiling() -> None:
        for body in writes:
            remote_pb2.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))

    figures.ceiling_s = best_of(3, ceiling)
    figures.raw_bytes = sum(len(cramjam.snappy.decompress_raw(body)) for body in writes)

    receiver = Receiver(lambda samples, rejects: None)
    for body in warm_up:
        receiver.process(body)

    def in_process() -> None:
        for body in writes:
            receiver.process(body)

    figures.in_process_s = best_of(3, in_process)

    port = free_port()
    url = f"sqlite:///{tmp}/remote-write.sqlite3"
    env = {"TELEGRAM_BOT_TOKEN": token, "TELEGRAM_API_URL": fake.url, "ALLOWED_CHAT_IDS": "4242",
           "DATABASE_URL": url, "MODEL_STORE": f"file:{tmp}/models", "SAMPLE_INTERVAL_SECONDS": "3600",
           "REMOTE_WRITE_LISTEN": f"127.0.0.1:{port}", "REMOTE_WRITE_TOKEN": RW_TOKEN}
    with BotProcess(env, tmp / f"bot-rw-{uuid.uuid4().hex[:6]}.log") as bot:
        bot.wait_log("remote write: listening", timeout=120)
        endpoint = f"http://127.0.0.1:{port}{PATH}"
        lock = threading.Lock()
        refused = [0]

        def send(body: bytes) -> None:
            if post(endpoint, body) != 204:
                with lock:
                    refused[0] += 1

        with ThreadPoolExecutor(SENDERS) as senders:
            list(senders.map(send, warm_up, timeout=timeout))
            started = time.perf_counter()
            list(senders.map(send, writes, timeout=timeout))
        figures.bot_s = time.perf_counter() - started
        figures.refused = refused[0]
        bot.stop()
    database = tables.connect(url)
    try:
        q = database.execute_sql
        figures.stored = q("SELECT count(*) FROM metric WHERE device LIKE 'host-%'").fetchone()[0]
        figures.distinct = q("SELECT count(*) FROM (SELECT DISTINCT device, ts FROM metric WHERE device LIKE "
                             "'host-%') AS d").fetchone()[0]
    finally:
        database.close()
    return figures


def report(f: Figures, machines: int, per_write: int, rounds: int) -> bool:
    """Print the figures; whether the targets are met: the receiver (decoding and mapping, up to the samples it
    hands the store) at 0.5 x the ceiling, and the whole bot over HTTP, storing and predicting, keeping up with
    1,000 machines."""
    ceiling_series, ceiling_samples = f.rate(f.ceiling_s)
    local_series, local_samples = f.rate(f.in_process_s)
    bot_series, bot_samples = f.rate(f.bot_s)
    ratio = local_series / ceiling_series if ceiling_series else 0.0
    bot_ratio = bot_series / ceiling_series if ceiling_series else 0.0
    fleet = bot_samples * SCRAPE_INTERVAL_S
    exact = f.stored == f.samples + f.warm_up == f.distinct and f.refused == 0
    ratio_ok, fleet_ok = ratio >= TARGET_RATIO, exact and fleet >= TARGET_MACHINES
    print(f"  remote write: {machines:,} node_exporter machines x {rounds} scrapes, {per_write} machines a write, "
          f"{f.series // (machines * rounds):,} series a machine; {f.series:,} series, "
          f"{f.body_bytes / 2**20:.1f} MiB snappy ({f.raw_bytes / 2**20:.1f} MiB decoded)")
    print(f"    ceiling, decompress + decode only   {ceiling_series:>12,.0f} series/s "
          f"{ceiling_samples:>9,.0f} samples/s")
    print(f"    the receiver (decode and map)       {local_series:>12,.0f} series/s {local_samples:>9,.0f} samples/s = "
          f"{ratio:.2f} x ceiling   target >= {TARGET_RATIO}   {verdict(ratio_ok)}")
    print(f"    the bot over HTTP, predicted and stored {bot_series:>8,.0f} series/s {bot_samples:>9,.0f} samples/s = "
          f"{bot_ratio:.2f} x ceiling")
    print(f"      = {fleet:,.0f} node_exporter machines at a {SCRAPE_INTERVAL_S:.0f} s scrape interval   target >= "
          f"{TARGET_MACHINES:,}   {verdict(fleet_ok)}")
    print(f"      stored {f.stored:,} samples of {f.samples + f.warm_up:,} (with the untimed first scrape), "
          f"{f.distinct:,} distinct (device, ts), {f.refused} writes not answered 204: "
          f"{'exactly once' if exact else 'NOT exactly once'}")
    return ratio_ok and fleet_ok


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
