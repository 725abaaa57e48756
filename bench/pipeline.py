"""Ingest at the hardware's pace: the ceilings of each stage, then the real bot on the same messages.

One run, one machine, in this order:

1. ceilings on N agent-shaped messages (default 300,000 of 1,000 devices) in a Tansu topic: consuming
   only; JSON parsing with the stdlib ``json`` and with ``orjson`` (the bot's parser), and the bot's
   validating ``agent.wire.parse``; prediction with the bot's model; raw inserts (``sqlite3.executemany``,
   PostgreSQL ``COPY``); and a minimal hand-written pipeline per database (consume a batch, parse with
   orjson, check the fields, predict, insert in one transaction, commit the offsets);
2. the real ``python -m bot`` on the same N messages, on SQLite and on PostgreSQL, timed from its first
   stored row to its last (the ``received`` time each batch records), with its RSS sampled meanwhile;
   the store must then hold every message exactly once;
3. alert latency: stressed samples of their own devices injected into a steady 2,000 msg/s background,
   from the moment they are produced until the fake Bot API receives the alert;
4. ``/status`` (the fleet) on a store of 10 million samples of 1,000 devices;
5. the bot's peak RSS on a backlog of 20,000 messages of 60 KiB each;
6. the remote-write receiver: realistic node_exporter writes posted to the real bot over HTTP, against
   decompressing and decoding the same bodies (bench/remote_write.py).

Run from the repository root (needs requirements-dev.txt and Debian's ``postgresql`` server package)::

    python -m bench.pipeline
    python -m bench.pipeline --messages 100000 --status-rows 1000000   # quicker
    python -m bench.pipeline --only-remote-write                         # the receiver alone

Exit code 0 only when every target is met.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import io
import json
import os
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pandas as pd
import peewee as pw
import psutil
from confluent_kafka import Consumer, Producer

from agent.vocabulary import KNOWN_METRICS
from agent.wire import encode, parse
from bench import remote_write
from bot import db
from ml import model
from ml.training import train
from schema import tables
from tests.fakes.bot_process import BotProcess
from tests.fakes.services import KafkaBroker, postgres_cluster
from tests.fakes.telegram_api import FakeTelegram

TOKEN = "123456789:" + "C" * 35
CHAT = 4242
BATCH = 5000  # messages per batch of the hand-written pipelines, as the bot's default BATCH_SIZE
TARGET_INGEST_RATIO = 0.6
TARGET_ALERT_P99_S = 1.0
TARGET_STATUS_S = 0.2
TARGET_RSS_BYTES = 400 * 1024 * 1024
MIB = 1024 * 1024
COLUMNS = db.COLUMNS
KAFKA_TEST_TIMEOUTS = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 500}  # Tansu joins in ~1 s


# ---------------------------------------------------------------------------------------------- messages


def normal_metrics(rng: random.Random) -> dict[str, float]:
    """Every metric the agent sends, from a healthy machine."""
    cpu = round(rng.uniform(2, 60), 1)
    return {
        "cpu_percent": cpu, "cpu_freq_mhz": round(rng.uniform(1200, 3600), 0), "load_1m": round(cpu / 100, 2),
        "mem_percent": round(rng.uniform(20, 75), 1), "swap_percent": round(rng.uniform(0, 10), 1),
        "disk_percent": round(rng.uniform(10, 80), 1), "disk_read_bps": round(rng.uniform(0, 5e6), 0),
        "disk_write_bps": round(rng.uniform(0, 5e6), 0), "net_sent_bps": round(rng.uniform(0, 1e6), 0),
        "net_recv_bps": round(rng.uniform(0, 1e6), 0), "cpu_temp_c": round(rng.uniform(35, 70), 1),
        "process_count": float(rng.randint(150, 400)), "uptime_s": float(rng.randint(1000, 10**7)),
    }


STRESSED = {"cpu_percent": 99.0, "load_1m": 4.0, "mem_percent": 99.0, "swap_percent": 95.0, "disk_percent": 99.5,
            "cpu_temp_c": 97.0}


def device(i: int) -> str:
    return f"dev{i:04d}"


def agent_messages(count: int, devices: int, start: float, seed: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of `count` samples: every device reports every 5 s, devices interleaved."""
    rng = random.Random(seed)
    for i in range(count):
        name = device(i % devices)
        yield name.encode(), encode(name, start + 5.0 * (i // devices), normal_metrics(rng))


def produce(bootstrap: str, topic: str, messages: Iterator[tuple[bytes, bytes]]) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "message.max.bytes": 2_000_000,
                         "queue.buffering.max.messages": 1_000_000})
    count = 0
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
        producer.poll(0)
        count += 1
    if producer.flush(120) != 0:
        raise RuntimeError("the producer could not deliver every message")
    return count


def consumer(bootstrap: str, topic: str) -> Consumer:
    """A consumer of its own group, from the start of the topic."""
    result = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                       "enable.auto.commit": False, "auto.offset.reset": "earliest", **KAFKA_TEST_TIMEOUTS})
    result.subscribe([topic])
    return result


# ---------------------------------------------------------------------------------------------- ceilings


@dataclass
class Ceilings:
    consume: float = 0.0
    parse_json: float = 0.0
    parse_orjson: float = 0.0
    parse_wire: float = 0.0
    predict: float = 0.0
    insert_sqlite: float = 0.0
    copy_postgres: float = 0.0
    pipeline_sqlite_json: float = 0.0
    pipeline_sqlite_orjson: float = 0.0
    pipeline_postgres_orjson: float = 0.0


def timed_rate(count: int, work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def consume_batches(bootstrap: str, topic: str, n: int, handle: Callable[[list], None]) -> float:
    """Consume `n` messages in batches, handing each batch to `handle`; msg/s from the first message on."""
    source = consumer(bootstrap, topic)
    try:
        seen = 0
        first: float | None = None
        while seen < n:
            # A short wait: a batch is what has arrived, as in the bot, not a full one waited for.
            messages = [m for m in source.consume(num_messages=BATCH, timeout=0.05) if not m.error()]
            if not messages:
                continue
            if first is None:
                first = time.perf_counter()
            handle(messages)
            source.commit(asynchronous=False)
            seen += len(messages)
        assert first is not None
        return seen / (time.perf_counter() - first)
    finally:
        source.close()


def checked(doc: object) -> tuple[str, float, dict[str, float]]:
    """The light check of a hand-written pipeline: the fields are there and of the right types."""
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise ValueError("not a v1 message")
    name, ts, metrics = doc["device"], doc["ts"], doc["metrics"]
    if not isinstance(name, str) or not isinstance(ts, int | float) or not isinstance(metrics, dict):
        raise ValueError("bad fields")
    return name, float(ts), metrics


def hand_pipeline(
    loads: Callable[[bytes], object], pipeline: object, insert: Callable[[list[tuple]], None]
) -> Callable[[list], None]:
    """consume → parse → check → predict → insert in one transaction (the caller commits the offsets)."""
    def handle(messages: list) -> None:
        docs = [checked(loads(m.value())) for m in messages]
        p = model.predict(pipeline, [d[2] for d in docs])  # type: ignore[arg-type]
        now = time.time()
        rows = [(name, ts, now, None, float(pi), 1, *map(metrics.get, KNOWN_METRICS))
                for (name, ts, metrics), pi in zip(docs, p, strict=True)]
        insert(rows)
    return handle


SQLITE_INSERT = (f"INSERT INTO metric ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                 "ON CONFLICT (device, ts) DO NOTHING")


def sqlite_inserter(database: pw.Database) -> Callable[[list[tuple]], None]:
    def insert(rows: list[tuple]) -> None:
        with database.atomic():
            database.connection().executemany(SQLITE_INSERT, rows)
    return insert


def csv_bytes(rows: list[tuple]) -> io.BytesIO:
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    return io.BytesIO(text.getvalue().encode())


def postgres_inserter(database: pw.Database) -> Callable[[list[tuple]], None]:
    """COPY into a staging table, then INSERT … ON CONFLICT DO NOTHING, in one transaction."""
    stage = "bench_stage"

    def insert(rows: list[tuple]) -> None:
        with database.atomic():
            cursor = database.cursor()
            cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                           f"SELECT {', '.join(COLUMNS)} FROM metric WITH NO DATA")
            cursor.copy_expert(f"COPY {stage} ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)", csv_bytes(rows))
            cursor.execute(f"INSERT INTO metric ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM {stage} "
                           "ON CONFLICT (device, ts) DO NOTHING")
    return insert


@contextlib.contextmanager
def fresh_store(url: str) -> Iterator[pw.Database]:
    """The bot's schema, empty: on PostgreSQL its samples partitioned by day, as the bot makes them."""
    database = db.open_database(url)
    database.drop_tables(db.TABLES)
    database.close()
    database = db.open_database(url)
    try:
        yield database
    finally:
        database.close()


def measure_ceilings(bootstrap: str, topic: str, n: int, sqlite_url: str, postgres_url: str) -> Ceilings:
    c = Ceilings()
    pipeline = train(pd.DataFrame()).pipeline
    # As the bot does after start-up: the collector leaves the heap made so far alone. The hand-written
    # pipelines run first, while this process holds no big lists, as a small program of their own would.
    gc.collect()
    gc.freeze()
    with fresh_store(sqlite_url) as database:
        c.pipeline_sqlite_json = consume_batches(bootstrap, topic, n,
                                                 hand_pipeline(json.loads, pipeline, sqlite_inserter(database)))
    with fresh_store(sqlite_url) as database:
        c.pipeline_sqlite_orjson = consume_batches(bootstrap, topic, n,
                                                   hand_pipeline(orjson.loads, pipeline, sqlite_inserter(database)))
    with fresh_store(postgres_url) as database:
        c.pipeline_postgres_orjson = consume_batches(bootstrap, topic, n,
                                                     hand_pipeline(orjson.loads, pipeline, postgres_inserter(database)))
    print(f"  hand-written pipeline    SQLite json {c.pipeline_sqlite_json:,.0f}, SQLite orjson "
          f"{c.pipeline_sqlite_orjson:,.0f}, PostgreSQL orjson {c.pipeline_postgres_orjson:,.0f} msg/s", flush=True)
    values: list[bytes] = []
    c.consume = consume_batches(bootstrap, topic, n, lambda ms: values.extend(m.value() for m in ms))
    print(f"  consume only             {c.consume:>9,.0f} msg/s", flush=True)
    gc.freeze()  # the stage figures below are of the stage, not of collecting the messages kept for them
    c.parse_json = timed_rate(len(values), lambda: [json.loads(v) for v in values])
    c.parse_orjson = timed_rate(len(values), lambda: [orjson.loads(v) for v in values])
    c.parse_wire = timed_rate(len(values), lambda: [parse(v) for v in values])
    print(f"  parse json / orjson / wire.parse {c.parse_json:,.0f} / {c.parse_orjson:,.0f} / {c.parse_wire:,.0f} msg/s",
          flush=True)
    metrics = [orjson.loads(v)["metrics"] for v in values]
    gc.freeze()
    c.predict = timed_rate(len(metrics), lambda: [model.predict(pipeline, metrics[i:i + BATCH])
                                                  for i in range(0, len(metrics), BATCH)])
    print(f"  predict                  {c.predict:>9,.0f} msg/s", flush=True)
    now = time.time()
    rows = []
    for doc in (orjson.loads(v) for v in values):
        rows.append((doc["device"], doc["ts"], now, None, 0.1, 1, *map(doc["metrics"].get, KNOWN_METRICS)))
    batches = [rows[i:i + BATCH] for i in range(0, len(rows), BATCH)]
    gc.freeze()
    with fresh_store(sqlite_url) as database:
        insert = sqlite_inserter(database)
        c.insert_sqlite = timed_rate(len(rows), lambda: [insert(b) for b in batches])
    with fresh_store(postgres_url) as database:
        def copy_all() -> None:
            for b in batches:
                with database.atomic():
                    database.cursor().copy_expert(
                        f"COPY metric ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)", csv_bytes(b))
        c.copy_postgres = timed_rate(len(rows), copy_all)
    print(f"  raw insert SQLite executemany {c.insert_sqlite:,.0f} msg/s; PostgreSQL COPY {c.copy_postgres:,.0f} msg/s",
          flush=True)
    gc.unfreeze()
    return c


# ---------------------------------------------------------------------------------------------- the bot


def bot_env(fake: FakeTelegram, tmp: Path, url: str, bootstrap: str, topic: str) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": fake.url, "ALLOWED_CHAT_IDS": str(CHAT),
        "ADMIN_USER_IDS": str(CHAT), "DATABASE_URL": url, "MODEL_STORE": f"file:{tmp}/models",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC": topic, "KAFKA_GROUP_ID": f"bot-{uuid.uuid4().hex[:8]}",
        "KAFKA_SESSION_TIMEOUT_MS": "2000",
    }


class RssSampler:
    """The largest RSS of a process, sampled every 0.1 s in a thread, and its VmHWM at the end."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(psutil.Error):
                self.max = max(self.max, self.process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def hwm(self) -> int:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0


@dataclass
class Ingest:
    rate: float = 0.0
    seconds: float = 0.0
    stored: int = 0
    distinct: int = 0
    rejected: int = 0
    rss_max: int = 0
    hwm: int = 0


def stored_count(url: str, exact: bool = True) -> int:
    """Rows in the metric table; not `exact`: the highest id, a cheap upper bound to watch progress with.
    Counting every row 5 times a second would load the machine under the bot, and no ceiling is watched so."""
    database = tables.connect(url)
    try:
        query = "SELECT count(*) FROM metric" if exact else "SELECT coalesce(max(id), 0) FROM metric"
        return database.execute_sql(query).fetchone()[0]
    except pw.DatabaseError:  # the bot has not created its tables yet
        return 0
    finally:
        database.close()


def run_bot_ingest(n: int, url: str, bootstrap: str, topic: str, fake: FakeTelegram, tmp: Path,
                   timeout: float) -> Ingest:
    """Start the bot on a topic holding `n` messages, wait until all are stored; figures from the store."""
    result = Ingest()
    bot = BotProcess(bot_env(fake, tmp, url, bootstrap, topic), tmp / f"bot-{uuid.uuid4().hex[:6]}.log")
    with bot:
        assert bot.proc is not None
        with RssSampler(bot.proc.pid) as rss:
            deadline = time.monotonic() + timeout
            while stored_count(url, exact=False) < n or stored_count(url) < n:
                if time.monotonic() > deadline or bot.proc.poll() is not None:
                    print(f"  the bot stored {stored_count(url):,} of {n:,} messages; log: {bot.log_path}")
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # anything stored twice would arrive now
        result.rss_max, result.hwm = rss.max, rss.hwm()
        bot.stop()
    database = tables.connect(url)
    try:
        q = database.execute_sql
        first, last = q("SELECT min(received), max(received) FROM metric").fetchone()
        in_first = q(f"SELECT count(*) FROM metric WHERE received = {database.param}", (first,)).fetchone()[0]
        result.stored = q("SELECT count(*) FROM metric").fetchone()[0]
        result.distinct = q("SELECT count(*) FROM (SELECT DISTINCT device, ts FROM metric) AS d").fetchone()[0]
        result.rejected = q("SELECT count(*) FROM rejected_message").fetchone()[0]
    finally:
        database.close()
    # `received` is when a batch started to be stored: the first batch's rows mark the start, so they are
    # not counted in the rate.
    result.seconds = last - first
    result.rate = (result.stored - in_first) / result.seconds if result.seconds > 0 else 0.0
    return result


# ---------------------------------------------------------------------------------------------- alerts


@dataclass
class Latency:
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    background: float = 0.0  # msg/s actually produced

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("inf")


def alert_latency(url: str, bootstrap: str, broker: KafkaBroker, fake: FakeTelegram, tmp: Path, rate: int,
                  seconds: float, hot: int) -> Latency:
    """Stressed samples of `hot` devices of their own, one at a time, in a steady background of normal ones."""
    topic = f"bench.latency.{uuid.uuid4().hex[:6]}"
    broker.create_topic(topic)
    result = Latency()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    rng = random.Random(1)
    produced_at: dict[str, float] = {}
    # Each machine's own alert, timed through the pipeline: by default machines stressed within 30 s of each
    # other share one group message after the first two (ALERT_GROUP_MIN), which names 20 of them.
    env = {**bot_env(fake, tmp, url, bootstrap, topic), "ALERT_GROUP_MIN": "1000"}
    bot = BotProcess(env, tmp / "bot-latency.log")
    with bot:
        # The bot is ready once it stored a first sample (model trained, consumer group joined).
        producer.produce(topic, key=b"warmup", value=encode("warmup", time.time(), normal_metrics(rng)))
        producer.flush(10)
        deadline = time.monotonic() + 120
        while stored_count(url) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bot stored nothing; log: {bot.log_path}")
            time.sleep(0.1)
        started = time.monotonic()
        tick = 0.01
        every = max(1, int(rate * seconds / hot))  # one stressed sample every `every` background messages
        count = 0
        next_at = started
        while time.monotonic() - started < seconds:
            for _ in range(int(rate * tick)):
                name = device(count % 1000)
                producer.produce(topic, key=name.encode(), value=encode(name, time.time(), normal_metrics(rng)))
                count += 1
                if count % every == 0 and len(produced_at) < hot:
                    hot_name = f"hot{len(produced_at):04d}"
                    produced_at[hot_name] = time.time()
                    producer.produce(topic, key=hot_name.encode(), value=encode(hot_name, time.time(), STRESSED))
            producer.poll(0)
            next_at += tick
            time.sleep(max(0.0, next_at - time.monotonic()))
        producer.flush(10)
        result.background = count / (time.monotonic() - started)
        time.sleep(5)  # the last alerts
        bot.stop()
    result.sent = len(produced_at)
    alerted: dict[str, float] = {}
    for call in fake.calls("sendMessage"):
        if call.status != 200 or call.params.get("chat_id") != CHAT:
            continue
        text = str(call.params.get("text", ""))
        for name in produced_at:
            if name in text.splitlines()[0] and name not in alerted:
                alerted[name] = call.time
    result.latencies = [alerted[name] - at for name, at in produced_at.items() if name in alerted]
    return result


# ---------------------------------------------------------------------------------------------- /status


def fill_sqlite(url: str, rows: int, devices: int) -> None:
    """`rows` samples of `devices` devices, generated inside SQLite (one statement, no Python per row), device
    by device so that the (device, ts) index grows at its end instead of everywhere."""
    database = db.open_database(url)
    metrics = ", ".join(KNOWN_METRICS)
    values = ", ".join("abs(random() % 5000) / 100.0" for _ in KNOWN_METRICS)
    per = rows // devices
    start = time.time() - per * 5.0
    sql = (f"WITH RECURSIVE d(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM d WHERE i < {devices - 1}), "
           f"k(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM k WHERE j < {per - 1}) "
           f"INSERT INTO metric (device, ts, received, p_stressed, model_version, {metrics}) "
           f"SELECT printf('dev%04d', i), {start} + 5.0 * j, {start}, 0.05, 1, {values} FROM d, k ORDER BY i, j")
    with database.atomic():
        database.execute_sql(sql)
        # Each device's row, as the bot writes it with every batch: /status finds the newest samples through them.
        database.execute_sql("INSERT INTO device (name, last_ts, last_received, last_metric, last_p, interval) "
                             "SELECT m.device, m.ts, m.received, m.id, m.p_stressed, 5.0 FROM metric AS m JOIN "
                             "(SELECT device, MAX(ts) AS ts FROM metric GROUP BY device) AS n "
                             "ON m.device = n.device AND m.ts = n.ts")
    database.close()


@dataclass
class Status:
    startup_s: float = 0.0  # from starting the process until the application started (forecasts rebuilt)
    startup_hwm: int = 0  # the bot's peak RSS until then
    first: float = 0.0  # the first /status after start-up
    asked: list[float] = field(default_factory=list)  # the next ones


def status_latency(url: str, bootstrap: str, broker: KafkaBroker, fake: FakeTelegram, tmp: Path,
                   asks: int = 7) -> Status:
    """Start-up on the store, then the first /status and `asks` more, in seconds."""
    topic = f"bench.status.{uuid.uuid4().hex[:6]}"
    broker.create_topic(topic)
    result = Status()
    # A log of its own: one shared with an earlier start would say "Application started" before this one has.
    bot = BotProcess(bot_env(fake, tmp, url, bootstrap, topic), tmp / f"bot-status-{topic}.log")
    started = time.monotonic()
    with bot:
        assert bot.proc is not None
        with RssSampler(bot.proc.pid) as rss:
            bot.wait_log("Application started", timeout=300)
            result.startup_s, result.startup_hwm = time.monotonic() - started, rss.hwm()
        result.first = ask_status(fake)
        for _ in range(asks):
            result.asked.append(ask_status(fake))
        bot.stop()
    return result


def ask_status(fake: FakeTelegram) -> float:
    """Seconds from sending /status until the fleet overview reaches the fake Bot API."""
    mark = fake.call_count()
    sent = time.time()
    fake.send_text(CHAT, "/status", user_id=CHAT)
    call = fake.wait_for_call("sendMessage", lambda c: "Fleet" in str(c.params.get("text", "")), timeout=300,
                              after=mark)
    return call.time - sent


# ---------------------------------------------------------------------------------------------- backlog


def big_messages(count: int, devices: int, size: int) -> Iterator[tuple[bytes, bytes]]:
    """Valid samples padded to `size` bytes with a field the wire format ignores."""
    rng = random.Random(2)
    start = time.time() - count * 5.0
    for i in range(count):
        name = device(i % devices)
        doc = json.loads(encode(name, start + 5.0 * i, normal_metrics(rng)))
        doc["pad"] = ""
        pad = size - len(json.dumps(doc, separators=(",", ":")))
        doc["pad"] = "x" * pad
        yield name.encode(), json.dumps(doc, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def ingest_line(name: str, i: Ingest, n: int, ceiling: float, ceiling_name: str) -> bool:
    exact = i.stored == n and i.distinct == n and i.rejected == 0
    ratio = i.rate / ceiling if ceiling else 0.0
    ok = exact and ratio >= TARGET_INGEST_RATIO
    print(f"  bot ingest, {name:<10} {i.rate:>9,.0f} msg/s ({i.seconds:.1f} s first to last stored row) = "
          f"{ratio:.2f} × {ceiling_name} ({ceiling:,.0f})   target ≥ {TARGET_INGEST_RATIO}   {verdict(ok)}")
    print(f"      stored {i.stored:,} rows of {n:,}, {i.distinct:,} distinct (device, ts), {i.rejected} rejected: "
          f"{'exactly once' if exact else 'NOT exactly once'}; RSS max {i.rss_max / MIB:.0f} MiB, "
          f"VmHWM {i.hwm / MIB:.0f} MiB")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300_000, help="messages to ingest (default 300,000)")
    parser.add_argument("--devices", type=int, default=1000, help="devices they come from (default 1,000)")
    parser.add_argument("--latency-rate", type=int, default=2000, help="background msg/s of the alert test")
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="length of the alert test")
    parser.add_argument("--latency-alerts", type=int, default=200, help="stressed samples injected")
    parser.add_argument("--status-rows", type=int, default=10_000_000, help="stored samples for /status")
    parser.add_argument("--backlog", type=int, default=20_000, help="messages of the big-message backlog")
    parser.add_argument("--backlog-bytes", type=int, default=60 * 1024, help="size of each of those messages")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on an ingest after this many s")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (databases, bot logs)")
    parser.add_argument("--only-remote-write", action="store_true", help="run the remote-write receiver part alone")
    parser.add_argument("--rw-machines", type=int, default=2000, help="node_exporter machines (default 2,000)")
    parser.add_argument("--rw-per-write", type=int, default=100, help="machines a write (default 100)")
    parser.add_argument("--rw-rounds", type=int, default=5, help="scrapes of each machine (default 5)")
    args = parser.parse_args(argv)
    command = "python -m bench.pipeline " + shlex.join(argv if argv is not None else sys.argv[1:])
    tmp = Path(tempfile.mkdtemp(prefix="rigwatch-pipeline-"))
    load_before = load()
    print(f"{command}\n  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {load_before}; python {sys.version.split()[0]}",
          flush=True)
    passed = False
    try:
        passed = (run_remote_write(args, tmp, command, load_before) if args.only_remote_write
                  else run(args, tmp, command, load_before))
    finally:
        if passed and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"  kept {tmp}")
    return 0 if passed else 1


def remote_write_part(args: argparse.Namespace, tmp: Path, fake: FakeTelegram) -> remote_write.Figures:
    print(f"remote write: {args.rw_machines:,} machines x {args.rw_rounds} scrapes ...", flush=True)
    return remote_write.measure(args.rw_machines, args.rw_per_write, args.rw_rounds, fake, tmp, TOKEN, args.timeout)


def run_remote_write(args: argparse.Namespace, tmp: Path, command: str, load_before: str) -> bool:
    with FakeTelegram(token=TOKEN) as fake:
        figures = remote_write_part(args, tmp, fake)
    print()
    print(f"Rigwatch remote-write benchmark, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"  command: {command}")
    print(f"  machine load before: {load_before}; after: {load()}")
    passed = remote_write.report(figures, args.rw_machines, args.rw_per_write, args.rw_rounds)
    print(f"  RESULT: {verdict(passed)}")
    return passed


def run(args: argparse.Namespace, tmp: Path, command: str, load_before: str) -> bool:
    n = args.messages
    with KafkaBroker() as broker, postgres_cluster() as pg_url, FakeTelegram(token=TOKEN) as fake:
        topic = f"bench.metrics.{uuid.uuid4().hex[:6]}"
        broker.create_topic(topic)
        started = time.monotonic()
        produce(broker.bootstrap, topic, agent_messages(n, args.devices, time.time() - 5.0 * n / args.devices))
        print(f"produced {n:,} messages of {args.devices:,} devices in {time.monotonic() - started:.1f} s; ceilings:",
              flush=True)
        sqlite_url = f"sqlite:///{tmp}/ceiling.sqlite3"
        c = measure_ceilings(broker.bootstrap, topic, n, sqlite_url, pg_url)

        print("the bot on the same messages:", flush=True)
        lite = run_bot_ingest(n, f"sqlite:///{tmp}/bot.sqlite3", broker.bootstrap, topic, fake, tmp, args.timeout)
        print(f"  SQLite {lite.rate:,.0f} msg/s", flush=True)
        with fresh_store(pg_url):
            pass
        pg = run_bot_ingest(n, pg_url, broker.bootstrap, topic, fake, tmp, args.timeout)
        print(f"  PostgreSQL {pg.rate:,.0f} msg/s", flush=True)

        print("alert latency ...", flush=True)
        latency = alert_latency(f"sqlite:///{tmp}/latency.sqlite3", broker.bootstrap, broker, fake, tmp,
                                args.latency_rate, args.latency_seconds, args.latency_alerts)

        print(f"/status on {args.status_rows:,} samples ...", flush=True)
        status_url = f"sqlite:///{tmp}/status.sqlite3"
        fill_started = time.monotonic()
        fill_sqlite(status_url, args.status_rows, args.devices)
        fill_s = time.monotonic() - fill_started
        status = status_latency(status_url, broker.bootstrap, broker, fake, tmp)

        print(f"backlog of {args.backlog:,} messages of {args.backlog_bytes // 1024} KiB ...", flush=True)
        big_topic = f"bench.big.{uuid.uuid4().hex[:6]}"
        broker.create_topic(big_topic)
        produce(broker.bootstrap, big_topic, big_messages(args.backlog, args.devices, args.backlog_bytes))
        big = run_bot_ingest(args.backlog, f"sqlite:///{tmp}/big.sqlite3", broker.bootstrap, big_topic, fake, tmp,
                             args.timeout)
        rw = remote_write_part(args, tmp, fake)

    print()
    print(f"Rigwatch ingest benchmark: {n:,} agent-shaped messages of {args.devices:,} devices, Tansu, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"  command: {command}")
    print(f"  machine load before: {load_before}; after: {load()}")
    print("  ceilings (msg/s):")
    print(f"    consume only                          {c.consume:>9,.0f}")
    print(f"    parse: json / orjson (the bot's) / the bot's validating wire.parse   "
          f"{c.parse_json:,.0f} / {c.parse_orjson:,.0f} / {c.parse_wire:,.0f}")
    print(f"    predict (the bot's model, {BATCH:,} a batch)  {c.predict:>9,.0f}")
    print(f"    raw insert: sqlite3.executemany       {c.insert_sqlite:>9,.0f}")
    print(f"    raw insert: PostgreSQL COPY           {c.copy_postgres:>9,.0f}")
    print(f"    hand-written pipeline, SQLite, json   {c.pipeline_sqlite_json:>9,.0f}")
    print(f"    hand-written pipeline, SQLite, orjson {c.pipeline_sqlite_orjson:>9,.0f}")
    print(f"    hand-written pipeline, PostgreSQL, orjson (COPY + INSERT … ON CONFLICT)  "
          f"{c.pipeline_postgres_orjson:,.0f}")
    ok = [
        ingest_line("SQLite", lite, n, c.pipeline_sqlite_orjson, "SQLite pipeline ceiling with orjson"),
        ingest_line("PostgreSQL", pg, n, c.pipeline_postgres_orjson, "PostgreSQL COPY pipeline ceiling"),
    ]
    print(f"      (PostgreSQL bot / raw COPY: {pg.rate / c.copy_postgres:.2f}; SQLite bot / raw executemany: "
          f"{lite.rate / c.insert_sqlite:.2f})")
    lat_ok = len(latency.latencies) == latency.sent > 0 and latency.p(0.99) <= TARGET_ALERT_P99_S
    if latency.latencies:
        print(f"  alert latency, produce → Bot API, at {latency.background:,.0f} msg/s: {len(latency.latencies)} of "
              f"{latency.sent} alerted; p50 {latency.p(0.5):.3f} s, p99 {latency.p(0.99):.3f} s, max "
              f"{max(latency.latencies):.3f} s   target p99 ≤ {TARGET_ALERT_P99_S:.0f} s   {verdict(lat_ok)}")
    else:
        print(f"  alert latency: none of {latency.sent} stressed samples was alerted   FAIL")
    ok.append(lat_ok)
    asked = status.asked
    status_ok = max(asked) <= TARGET_STATUS_S
    print(f"  /status (fleet) at {args.status_rows:,} samples, {args.devices:,} devices: median "
          f"{statistics.median(asked):.3f} s, max {max(asked):.3f} s of {len(asked)} "
          f"({', '.join(f'{x:.3f}' for x in asked)})   target ≤ "
          f"{TARGET_STATUS_S:.1f} s   {verdict(status_ok)}")
    print(f"      (store filled in {fill_s:.0f} s; first /status after start-up, not counted: {status.first:.3f} s; "
          f"start-up on that store {status.startup_s:.1f} s, VmHWM {status.startup_hwm / MIB:.0f} MiB)")
    ok.append(status_ok)
    peak = max(lite.hwm, pg.hwm)
    rss_ok = 0 < peak <= TARGET_RSS_BYTES
    print(f"  bot RSS during ingest: VmHWM {lite.hwm / MIB:.0f} MiB (SQLite), {pg.hwm / MIB:.0f} MiB (PostgreSQL)   "
          f"target ≤ {TARGET_RSS_BYTES // MIB} MiB   {verdict(rss_ok)}")
    exact = big.stored == args.backlog and big.distinct == args.backlog
    big_ok = 0 < big.hwm <= TARGET_RSS_BYTES and exact
    print(f"  bot RSS on a backlog of {args.backlog:,} × {args.backlog_bytes // 1024} KiB: VmHWM "
          f"{big.hwm / MIB:.0f} MiB ({big.stored:,} stored, {big.rate:,.0f} msg/s)   "
          f"target ≤ {TARGET_RSS_BYTES // MIB} MiB   {verdict(big_ok)}")
    ok += [rss_ok, big_ok]
    ok.append(remote_write.report(rw, args.rw_machines, args.rw_per_write, args.rw_rounds))
    passed = all(ok)
    print(f"  RESULT: {verdict(passed)}")
    return passed


if __name__ == "__main__":
    sys.exit(main())
