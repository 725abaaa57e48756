"""Ten thousand machines: a compressed week of a fleet's samples on one PostgreSQL, then the bot and two workers on it.

`python -m bench.fleet` starts a throwaway PostgreSQL cluster (as the tests do; `--url` uses a database of yours,
whose tables it replaces), a Kafka broker and a fake Bot API, and:

1. fills the store inside PostgreSQL (one INSERT … SELECT over generate_series per day, no Python per row, the
   indexes built after) with `--rows` samples (100 million by default) of `--machines` machines (10,000) over the
   last 7 days, each day in its own partition: every metric the agent sends, with a daily cycle; one machine in
   four is a node_exporter one (its filesystems kept as JSON, no temperature); one in 50 is filling its disk over
   the week; one in 100 went silent 6 hours ago; each machine's device row as the bot keeps it;
2. starts the real `python -m bot` on it twice (the first start after the fill rebuilds the trends, the next reads
   them back) and times launch → the first new sample stored (bench/restart.py's `measure_start`);
3. runs the bot and two workers (`--worker`) on that store, one consumer group on a 4-partition topic, and keeps
   the topic fed with the agents' samples and the node_exporter machines remote-written to the three in turn (a
   Prometheus behind a load balancer: 100 machines a write, about 100,000 series) for `--seconds`: the samples
   stored per second (new rows counted), and the CPU each process used per sample (the bot, each worker,
   PostgreSQL's processes together);
   meanwhile `/status` (the fleet) and `/status <machine>` are asked through the fake Bot API in turn, and their
   latency is timed; while they run, a thread samples what PostgreSQL's sessions are doing (`pg_stat_activity`),
   and a call over its target is printed with what was running then, there and in the bot's log. The backlog is
   agent samples (the rate a catching-up fleet is stored at); bench.pipeline measures the receiver's ceiling;
4. detaches and drops one day's partition as retention does, and deletes the same rows from an older version's
   plain table holding that day (a copy, with its indexes): both timed in the same run (`--delete-rows` bounds
   the copy);
5. the disk bytes per sample (the samples' partitions and their indexes over the rows), and the `EXPLAIN (ANALYZE,
   BUFFERS)` of `/status <machine>`'s read of the newest sample.

It prints a table (figure | measured | target) at the end. The cluster runs with fsync off, as the tests' does.

Run from the repository root (needs requirements-dev.txt and Debian's ``postgresql`` server package)::

    python -m bench.fleet                                  # 100 M samples: a fill of hours on a small machine
    python -m bench.fleet --rows 10000000 --seconds 60     # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import cramjam
import orjson
import peewee as pw
import psutil
from confluent_kafka import Producer

from bench import partitions as bench_partitions
from bench import remote_write, restart
from bench.pipeline import load
from bench.restart import measure_start, prepare_models
from bot import db
from bot.chat.status import USUAL_PENDING
from bot.intake.remote_write_http import PATH
from schema import partitions
from schema.partitions import DAY_S, day_of
from schema.tables import SAMPLES
from tests.fakes.bot_process import BotProcess
from tests.fakes.fleet_store import machine
from tests.fakes.node_exporter import machine as node_exporter_scrape
from tests.fakes.node_exporter import write_request
from tests.fakes.services import KafkaBroker, PostgresCluster, free_port
from tests.fakes.stores import empty_postgres
from tests.fakes.telegram_api import FakeTelegram

TOKEN = restart.TOKEN  # measure_start asks with it
CHAT = 4242
DAYS = 7
NEEDED_PER_S = 10_000 / 15  # 10,000 machines, a sample every 15 s
TARGET_FLEET_S = 0.3
TARGET_DEVICE_S = 0.1
TARGET_DROP_S = 1.0
TARGET_RESTART_S = 5.0
SILENT_S = 6 * 3600
MIB = 1 << 20

# Each metric of a filled sample, in SQL over d (the machine), k (its step) and t (the sample's time): a daily cycle
# (`c`, from -1 at 03:00 to 1 at 15:00 of the machine's own offset), machines that differ, disks that fill.
CYCLE = "sin(2 * pi() * ((t + (d %% 24) * 600) / 86400.0 - 0.375))"
METRICS = {
    "cpu_percent": f"greatest(0, 25 + 20 * {CYCLE} + (d %% 13) + (k %% 7))",
    "cpu_freq_mhz": "2400 + (d %% 5) * 200",
    "load_1m": f"greatest(0, 0.3 + 0.25 * {CYCLE})",
    "mem_percent": f"40 + (d %% 40) + 5 * {CYCLE} + (k %% 5) * 0.1",
    "swap_percent": "2 + (d %% 3)",
    # one machine in 50 fills its disk over the week, from 60 % to 97 %
    "disk_percent": f"CASE WHEN d %% 50 = 7 THEN 60 + 37 * (t - %(start)s) / {DAYS * DAY_S}.0 "
                    "ELSE 30 + (d %% 50) + (k %% 4) * 0.1 END",
    "disk_read_bps": f"greatest(0, 2e5 * (1.2 + {CYCLE}) + (k %% 11) * 1e3)",
    "disk_write_bps": f"greatest(0, 4e5 * (1.2 + {CYCLE}) + (k %% 13) * 1e3)",
    "net_sent_bps": f"greatest(0, 1e5 * (1.2 + {CYCLE}))",
    "net_recv_bps": f"greatest(0, 3e5 * (1.2 + {CYCLE}))",
    "cpu_temp_c": f"CASE WHEN d %% 4 = 0 THEN NULL ELSE 45 + 10 * {CYCLE} END",
    "process_count": "180 + (d %% 200)",
    "uptime_s": "1e6 + t - %(start)s",
}
# node_exporter machines (one in four) say their filesystems; the fullest is disk_percent.
FILESYSTEMS = ("CASE WHEN d %% 4 = 0 THEN '{\"/\":' || round((30 + (d %% 50))::numeric, 1) || ',\"/boot\":21.4}' "
               "END")


# ---------------------------------------------------------------------------------------------- the fill


def week(end: float) -> tuple[float, list[int]]:
    """The first sample time of a week ending at `end`, and the days it touches."""
    start = end - DAYS * DAY_S
    return start, list(range(day_of(start), day_of(end) + 1))


def fill(url: str, machines: int, rows: int, end: float, report: bool = True) -> float:
    """`rows` samples of `machines` machines over the DAYS days before `end`, each day in its partition, made
    inside PostgreSQL one day at a time; the indexes built after; each machine's device row. Seconds taken."""
    began = time.monotonic()
    database = db.open_database(url)
    start, days = week(end)
    partitions.ensure(database, SAMPLES, days)
    step = DAYS * DAY_S * machines / rows  # each machine's seconds between samples
    steps = int(DAYS * DAY_S / step)
    indexes = database.execute_sql(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'metric' AND indexname NOT IN "
        "(SELECT conname FROM pg_constraint WHERE conrelid = 'metric'::regclass)").fetchall()
    for index, _definition in indexes:
        database.execute_sql(f'DROP INDEX "{index}"')
    columns = ", ".join(METRICS)
    values = ", ".join(METRICS.values())
    params = {"start": start}
    for day in days:
        # steps of this day: start + k * step in [day, day + 1), and before `end`
        first = max(0, math.ceil((day * DAY_S - start) / step))
        last = min(steps - 1, math.ceil(((day + 1) * DAY_S - start) / step) - 1)
        if last < first:
            continue
        with database.atomic():
            database.execute_sql("SET LOCAL synchronous_commit = off")
            cursor = database.execute_sql((
                f"INSERT INTO metric (device, ts, received, p_stressed, model_version, filesystems, {columns}) "
                f"SELECT 'm' || lpad(d::text, 5, '0'), t, t + 0.2, 0.02 + (d %% 10) * 0.01, 1, {FILESYSTEMS}, "
                f"{values} FROM generate_series({first}, {last}) AS k, "
                f"LATERAL (SELECT %(start)s + k * {step} + (d %% 100) * {step / 100} AS t, d "
                f"FROM generate_series(0, {machines - 1}) AS d) AS m "
                f"WHERE NOT (d %% 100 = 1 AND t > {end - SILENT_S})"), params)
        if report:
            print(f"  day {day}: {cursor.rowcount:,} samples, {time.monotonic() - began:.0f} s", flush=True)
    database.execute_sql("SET maintenance_work_mem = '1GB'")
    for _index, definition in indexes:  # a partitioned table's reads "ON ONLY metric": made on no partition
        database.execute_sql(definition.replace(" ON ONLY ", " ON "))
    if report:
        print(f"  indexes built, {time.monotonic() - began:.0f} s", flush=True)
    with database.atomic():
        database.execute_sql("DELETE FROM device")
        database.execute_sql(
            'INSERT INTO device (name, last_ts, last_received, last_metric, last_p, "interval") '
            f"SELECT n, s.ts, s.received, s.id, s.p_stressed, {step} "
            f"FROM (SELECT 'm' || lpad(d::text, 5, '0') AS n FROM generate_series(0, {machines - 1}) AS d) AS names "
            "CROSS JOIN LATERAL (SELECT id, ts, received, p_stressed FROM metric WHERE device = n "
            "ORDER BY ts DESC LIMIT 1) AS s")
    database.execute_sql("VACUUM ANALYZE metric")
    database.close()
    return time.monotonic() - began


def catch_up(url: str) -> float:
    """A store filled a while ago, as if it had been written until now: each device's last receipt moved by the
    time since the fill ended, so no machine looks silent for the gap alone. The seconds moved."""
    database = db.open_database(url)
    try:
        newest = database.execute_sql("SELECT max(last_received) FROM device").fetchone()[0]
        gap = max(0.0, time.time() - 60 - newest)
        database.execute_sql("UPDATE device SET last_received = last_received + %s", (gap,))
        return gap
    finally:
        database.close()


# ---------------------------------------------------------------------------------------------- the load


def live(machines: int) -> list[tuple[int, str]]:
    """The agents that report, (number, name): all but the node_exporter machines (one in four, remote-written)
    and the silent ones (one in 100)."""
    return [(d, machine(d)) for d in range(machines) if d % 100 != 1 and not node_exporter(d)]


def node_exporter(d: int) -> bool:
    """Whether the d-th machine is a node_exporter one (as the fill made it: its filesystems, no temperature)."""
    return d % 4 == 0


def scraped(machines: int) -> list[str]:
    """The node_exporter machines that report (none of them is a silent one)."""
    return [machine(d) for d in range(machines) if node_exporter(d) and d % 100 != 1]


def boot_time(url: str) -> float:
    """When the fill's machines booted (each sample's uptime says it), so that their new samples go on counting
    from it: an uptime that went back would be a reboot, a condition of every machine."""
    database = db.open_database(url)
    try:
        return database.execute_sql(
            "SELECT ts - uptime_s FROM metric WHERE device = %s AND uptime_s IS NOT NULL ORDER BY ts DESC LIMIT 1",
            (machine(0),)).fetchone()[0]
    finally:
        database.close()


def agent_sample(name: str, d: int, ts: float, k: int, boot: float) -> bytes:
    """An agent's message with every metric, the daily cycle as in the fill, up since `boot`."""
    c = math.sin(2 * math.pi * ((ts + (d % 24) * 600) / 86400.0 - 0.375))
    metrics = {"cpu_percent": round(max(0.0, 25 + 20 * c + d % 13 + k % 7), 1), "cpu_freq_mhz": 2400.0 + d % 5 * 200,
               "load_1m": round(max(0.0, 0.3 + 0.25 * c), 2), "mem_percent": round(40 + d % 40 + 5 * c, 1),
               "swap_percent": 2.0 + d % 3, "disk_percent": 30.0 + d % 50 + (k % 4) * 0.1,
               "disk_read_bps": round(2e5 * (1.2 + c)), "disk_write_bps": round(4e5 * (1.2 + c)),
               "net_sent_bps": round(1e5 * (1.2 + c)), "net_recv_bps": round(3e5 * (1.2 + c)),
               "cpu_temp_c": round(45 + 10 * c, 1), "process_count": 180.0 + d % 200, "uptime_s": round(ts - boot)}
    return orjson.dumps({"v": 1, "device": name, "ts": round(ts, 3), "metrics": metrics})


def producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 2_000_000})


def backlog(bootstrap: str, topic: str, machines: int, count: int, start: float, boot: float) -> int:
    """`count` samples of the live machines, every machine's next sample 1 s later (a fleet catching up), as fast
    as the producer takes them."""
    names = live(machines)
    out = producer(bootstrap)
    for i in range(count):
        d, name = names[i % len(names)]
        k = i // len(names)
        while True:
            try:
                out.produce(topic, key=name.encode(), value=agent_sample(name, d, start + k, k, boot))
                break
            except BufferError:
                out.poll(0.05)
        if i % 10_000 == 0:
            out.poll(0)
    assert out.flush(60) == 0
    return count


class Fleet(threading.Thread):
    """The agents each sending a sample every 15 s over Kafka, spread evenly over the 15 s (493/s: 7,400 of
    10,000 machines)."""

    def __init__(self, bootstrap: str, topic: str, machines: int, boot: float, tick_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.boot = boot
        self.bootstrap, self.topic, self.names, self.tick_s = bootstrap, topic, live(machines), tick_s
        self.sent = 0
        self._done = threading.Event()

    def run(self) -> None:
        out = producer(self.bootstrap)
        ticks = round(15 / self.tick_s)
        began = time.monotonic()
        tick = 0
        while not self._done.is_set():
            now = time.time()
            for d, name in self.names[tick % ticks::ticks]:
                out.produce(self.topic, key=name.encode(), value=agent_sample(name, d, now, tick // ticks, self.boot))
                self.sent += 1
            out.poll(0)
            tick += 1
            self._done.wait(max(0.0, began + tick * self.tick_s - time.monotonic()))
        out.flush(30)

    def stop(self) -> None:
        self._done.set()
        self.join()


PER_WRITE = 100  # machines a remote write carries, as bench.remote_write sends them
# The fill's filesystems of a node_exporter machine (its / at 40 % here)
FILLED_FILESYSTEMS = {"/": ("ext4", 100e9, 60e9, 0), "/boot": ("ext4", 1e9, 7.86e8, 0)}
PLACEHOLDER = b"zzzzzz"  # a machine's name in a scrape's template: as long as machine(d)


class Scrapes(threading.Thread):
    """The node_exporter machines scraped every 15 s by a Prometheus that remote-writes them, PER_WRITE machines a
    write (about 1,000 series each, 100,000 a write), the writes spread over the 15 s and sent to the receivers in
    turn, as a load balancer would (each write whole: no scrape split between two receivers)."""

    def __init__(self, endpoints: list[str], names: list[str]) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.groups = [names[i:i + PER_WRITE] for i in range(0, len(names), PER_WRITE)]
        self.sent = 0  # machines' scrapes whose write was answered 204
        self.refused: list[int] = []  # other answers
        self._lock = threading.Lock()
        self._done = threading.Event()

    @staticmethod
    def body(names: list[str], ts: float, r: int) -> bytes:
        """One write: the same scrape for each machine, its counters `r` scrapes on (one template, names put in)."""
        scrape = node_exporter_scrape(idle_s=64800 + 9 * r, busy_s=21600 + 6 * r, net_bytes=1e9 + 3e6 * r,
                                      disk_bytes=5e9 + 1e7 * r, filesystems=FILLED_FILESYSTEMS, temps=())
        one = write_request({f"{PLACEHOLDER.decode()}:9100": [(ts, scrape)]}).SerializeToString()
        return bytes(cramjam.snappy.compress_raw(b"".join(one.replace(PLACEHOLDER, n.encode()) for n in names)))

    def _send(self, endpoint: str, body: bytes, machines: int) -> None:
        status = remote_write.post(endpoint, body)
        with self._lock:
            if status == 204:
                self.sent += machines
            else:
                self.refused.append(status)

    def run(self) -> None:
        period = 15 / len(self.groups)
        began = time.monotonic()
        n = 0
        with ThreadPoolExecutor(remote_write.SENDERS) as senders:
            while not self._done.wait(max(0.0, began + n * period - time.monotonic())):
                group = self.groups[n % len(self.groups)]
                body = self.body(group, time.time(), n // len(self.groups))
                senders.submit(self._send, self.endpoints[n % len(self.endpoints)], body, len(group))
                n += 1

    def stop(self) -> None:
        self._done.set()
        self.join()


def highest_id(database: pw.Database) -> int:
    """The samples' sequence: a cheap count of the rows stored since (counting 100 M rows is not)."""
    return database.execute_sql("SELECT last_value FROM metric_id_seq").fetchone()[0]


def postgres_processes(database: pw.Database) -> list[psutil.Process]:
    """The server's processes (the postmaster and its children, as they are now), when it runs on this machine."""
    pid = database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    with contextlib.suppress(psutil.Error):
        server = psutil.Process(pid).parent()
        if server is not None:
            return [server, *server.children()]
    return []


def cpu_s(processes: list[psutil.Process]) -> dict[int, float]:
    """Each process's CPU seconds, by pid."""
    spent = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            spent[process.pid] = times.user + times.system
    return spent


def used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between the two readings: a process started meanwhile counts whole (one that ended
    meanwhile is missed: PostgreSQL's backends live as long as the bot's connections)."""
    return sum(spent - before.get(pid, 0.0) for pid, spent in after.items())


class Activity(threading.Thread):
    """What PostgreSQL's sessions are doing, every 0.1 s: to say what ran while a command was slow."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seen: list[tuple[float, float, str]] = []  # when seen, seconds it had run, what
        self._done = threading.Event()

    def run(self) -> None:
        database = db.open_database(self.url)
        mine = database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        while not self._done.wait(0.1):
            rows = database.execute_sql(
                "SELECT pid, state, wait_event_type, wait_event, extract(epoch FROM now() - query_start), "
                "left(regexp_replace(query, '\\s+', ' ', 'g'), 110) FROM pg_stat_activity WHERE state <> 'idle' "
                "AND backend_type = 'client backend' AND pid <> %s", (mine,)).fetchall()
            now = time.time()
            for pid, state, wait_type, wait, running, query in rows:
                waiting = f", waiting for {wait_type}/{wait}" if wait else ""
                self.seen.append((now, float(running or 0.0), f"pid {pid} ({state}{waiting}): {query}"))
        database.close()

    def between(self, start: float, end: float) -> list[str]:
        """The distinct activities seen from `start` to `end`, the longest-running first."""
        found: dict[str, float] = {}
        for t, running, what in self.seen:
            if start <= t <= end:
                found[what] = max(found.get(what, 0.0), running)
        return [f"{running:.2f} s {what}" for what, running in sorted(found.items(), key=lambda x: -x[1])]

    def stop(self) -> None:
        self._done.set()
        self.join()


ASKERS = 8  # members of the chat asking in turn: one alone would be over the bot's budget of commands a minute


def ask(fake: FakeTelegram, text: str, expect: str, asker: int = 0) -> tuple[float, float, float]:
    """Send `text` to the bot as the `asker`-th member of the chat; (when it was sent, seconds until a reply
    containing `expect` reached the fake, seconds until it was whole: its usual ranges filled in by an edit when
    they were not worked out in time for the answer)."""
    mark = fake.call_count()
    sent = time.time()
    fake.send_text(CHAT, text, user_id=CHAT + asker % ASKERS)
    call = fake.wait_for_call("sendMessage", lambda c: expect in str(c.params.get("text", "")), timeout=60,
                              after=mark)
    whole = call
    if USUAL_PENDING in call.params["text"]:
        whole = fake.wait_for_call("editMessageText", lambda c: str(c.params.get("message_id")) == str(call.result[
            "message_id"]) and USUAL_PENDING not in c.params.get("text", ""), timeout=60, after=mark)
    return sent, call.time - sent, whole.time - sent


def logged(log: str, start: float, end: float, most: int = 6) -> list[str]:
    """The log's lines written from `start` to `end` (its times are local, as logging writes them)."""
    found = []
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            if start <= datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() <= end:
                found.append(line[24:200])
    return found[:most]


@dataclass
class Load:
    backlog: int = 0
    backlog_rate: float = 0.0  # samples/s stored while a backlog was waiting: what the three processes sustain
    backlog_s: float = 0.0
    live_rate: float = 0.0  # samples/s stored while the fleet sent at its own pace
    live_sent: float = 0.0  # samples/s sent: agents over Kafka, node_exporter machines' scrapes answered 204
    scraped: int = 0  # node_exporter machines remote-written
    refused: list[int] = field(default_factory=list)  # remote writes answered other than 204
    live_s: float = 0.0
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU ms per sample stored, at the fleet's pace
    fleet: list[float] = field(default_factory=list)
    device: list[float] = field(default_factory=list)
    device_whole: list[float] = field(default_factory=list)  # until its usual ranges were shown too
    device_again: list[float] = field(default_factory=list)  # a machine asked about before
    slow: list[str] = field(default_factory=list)
    load: str = ""


def env(fake: FakeTelegram, tmp: Path, url: str, bootstrap: str, topic: str, group: str) -> dict[str, str]:
    return {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": fake.url, "ALLOWED_CHAT_IDS": str(CHAT),
            "ADMIN_USER_IDS": str(CHAT), "DATABASE_URL": url, "MODEL_STORE": f"file:{tmp}/models",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC": topic, "KAFKA_GROUP_ID": group,
            "KAFKA_SESSION_TIMEOUT_MS": "6000"}


def run_load(url: str, broker: KafkaBroker, fake: FakeTelegram, tmp: Path, machines: int, backlog_n: int,
             seconds: float, asks: int) -> Load:
    """The bot and two workers on the store: a backlog first (the rate they sustain), then the fleet at its own
    pace for `seconds`, with `asks` /status of the fleet and `asks` of a machine in turn."""
    result = Load()
    topic = f"fleet.{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=4)
    print(f"  producing a backlog of {backlog_n:,} samples ...", flush=True)
    began = time.time() - backlog_n / len(live(machines))  # the backlog's newest samples are about now
    boot = boot_time(url)
    result.backlog = backlog(broker.bootstrap, topic, machines, backlog_n, began, boot)
    base = env(fake, tmp, url, broker.bootstrap, topic, f"fleet-{uuid.uuid4().hex[:8]}")
    database = db.open_database(url)
    database.execute_sql("DELETE FROM usual_range")  # each first question a first one, whatever a run before did
    first = highest_id(database)
    ports = [free_port() for _ in range(3)]
    processes = {name: BotProcess({**base, "REMOTE_WRITE_LISTEN": f"127.0.0.1:{port}",
                                   "REMOTE_WRITE_TOKEN": remote_write.RW_TOKEN}, tmp / f"fleet-{log}.log", argv)
                 for (name, log, argv), port in zip([("bot", "bot", []), ("worker 1", "worker1", ["--worker"]),
                                                     ("worker 2", "worker2", ["--worker"])], ports, strict=True)}
    with contextlib.ExitStack() as stack:
        for process in processes.values():
            stack.enter_context(process)
        ps = {name: [psutil.Process(p.proc.pid)] for name, p in processes.items() if p.proc is not None}
        # the backlog: timed from the first rows stored until it is nearly drained (its end is the slow part)
        while highest_id(database) < first + 1000:
            time.sleep(0.1)
        t0, n0 = time.monotonic(), highest_id(database)
        deadline = t0 + 1800
        while (n := highest_id(database)) < first + 0.95 * backlog_n and time.monotonic() < deadline:
            time.sleep(0.2)
        result.backlog_s = time.monotonic() - t0
        result.backlog_rate = (n - n0) / result.backlog_s
        print(f"  backlog: {n - n0:,} samples stored in {result.backlog_s:.1f} s = {result.backlog_rate:,.0f}/s",
              flush=True)
        while highest_id(database) < first + backlog_n and time.monotonic() < deadline:
            time.sleep(0.2)
        for process in processes.values():
            process.wait_log("remote write: listening", timeout=120)
        fleet = Fleet(broker.bootstrap, topic, machines, boot)
        fleet.start()
        scrapes = Scrapes([f"http://127.0.0.1:{port}{PATH}" for port in ports], scraped(machines))
        scrapes.start()
        time.sleep(20)  # the fleet's pace settles: each machine has sent once
        activity = Activity(url)
        activity.start()
        cpu0 = {name: cpu_s(p) for name, p in {**ps, "PostgreSQL": postgres_processes(database)}.items()}
        t0, n0, sent0 = time.monotonic(), highest_id(database), fleet.sent + scrapes.sent
        end = t0 + seconds
        k = 0
        while time.monotonic() < end or k < 2 * asks:
            if k < 2 * asks:
                if k % 2 == 0:
                    sent, took, _whole = ask(fake, "/status", "Fleet", k)
                    result.fleet.append(took)
                else:
                    j = k // 2  # one in four asks again about the machine asked two before: within the hour
                    name = machine(((j - 2 if j % 4 == 3 else j) * 37) % machines)
                    sent, took, whole = ask(fake, f"/status {name}", name, k)
                    if j % 4 == 3:
                        result.device_again.append(took)
                    else:
                        result.device.append(took)
                        result.device_whole.append(whole)
                if took > (TARGET_FLEET_S if k % 2 == 0 else TARGET_DEVICE_S):
                    result.slow.append(f"{'/status' if k % 2 == 0 else '/status ' + name} took {took:.2f} s; "
                                       "PostgreSQL meanwhile: " + ("; ".join(activity.between(sent, sent + took)[:4])
                                                                   or "nothing but idle sessions") + "; the bot's log "
                                       "meanwhile: " + (" | ".join(logged(processes["bot"].log, sent, sent + took))
                                                        or "nothing"))
                k += 1
                time.sleep(max(0.0, min(1.0, (end - time.monotonic()) / max(1, 2 * asks - k))))
            else:
                time.sleep(0.2)
        result.live_s = time.monotonic() - t0
        stored = highest_id(database) - n0
        result.live_rate = stored / result.live_s
        result.live_sent = (fleet.sent + scrapes.sent - sent0) / result.live_s
        result.scraped, result.refused = len(scraped(machines)), scrapes.refused
        for name, p in {**ps, "PostgreSQL": postgres_processes(database)}.items():
            result.cpu_ms[name] = used(cpu0[name], cpu_s(p)) * 1000 / max(1, stored)
        result.load = load()
        activity.stop()
        fleet.stop()
        scrapes.stop()
        for process in processes.values():
            process.stop(timeout=60)
    database.close()
    return result


# ---------------------------------------------------------------------------------------------- retention


@dataclass
class Retention:
    rows: int = 0
    drop: bench_partitions.Dropped | None = None
    copied: int = 0
    delete_s: float = 0.0


def drop_against_delete(url: str, end: float, delete_rows: int) -> Retention:
    """The oldest whole day of the week: the rows of its partition (up to `delete_rows`) copied into an older
    version's plain table with its indexes and deleted there in one statement; then its partition detached and
    dropped as retention does. Both committed, timed."""
    database = db.open_database(url)
    days = week(end)[1]
    day = days[1]
    name = SAMPLES.partition(day)
    result = Retention(rows=database.execute_sql(f'SELECT count(*) FROM "{name}"').fetchone()[0])
    database.execute_sql("DROP TABLE IF EXISTS metric_plain")
    database.execute_sql(f'CREATE TABLE metric_plain (LIKE "{name}" INCLUDING DEFAULTS)')
    database.execute_sql(f'INSERT INTO metric_plain SELECT * FROM "{name}" LIMIT {delete_rows}')
    database.execute_sql("SET maintenance_work_mem = '1GB'")
    database.execute_sql("ALTER TABLE metric_plain ADD PRIMARY KEY (id)")
    database.execute_sql("CREATE UNIQUE INDEX metric_plain_device_ts ON metric_plain (device, ts)")
    database.execute_sql("VACUUM ANALYZE metric_plain")
    result.copied = database.execute_sql("SELECT count(*) FROM metric_plain").fetchone()[0]
    began = time.perf_counter()
    with database.atomic():
        database.execute_sql("DELETE FROM metric_plain WHERE ts >= %s AND ts < %s", (day * DAY_S, (day + 1) * DAY_S))
    result.delete_s = time.perf_counter() - began
    database.execute_sql("DROP TABLE metric_plain")
    result.drop = bench_partitions.time_drop(database, day)
    database.close()
    return result


# ---------------------------------------------------------------------------------------------- size and plan


def bytes_per_sample(url: str) -> tuple[int, int]:
    """The samples' tables with their indexes, in bytes, and their rows (the planner's count, close enough)."""
    database = db.open_database(url)
    try:
        size = bench_partitions.size(database)
        rows = database.execute_sql(
            "SELECT sum(c.reltuples)::bigint FROM pg_class AS c JOIN pg_inherits AS i ON i.inhrelid = c.oid "
            "WHERE i.inhparent = 'metric'::regclass").fetchone()[0]
        return size, int(rows)
    finally:
        database.close()


def explain_device(url: str, name: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of /status <device>'s read of the machine's newest sample (db.latest_sample)."""
    from schema.tables import KeptSample, Metric
    database = db.open_database(url)
    try:
        row = db.Device.select(db.Device.last_metric, db.Device.last_ts).where(db.Device.name == name).first()
        query = (Metric.select().where((Metric.id == row.last_metric) & (Metric.ts == row.last_ts))
                 .union_all(KeptSample.select().where(KeptSample.id == row.last_metric)))
        sql, params = query.sql()
        plan = database.execute_sql(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", params).fetchall()
        return "\n".join(line for (line,) in plan)
    finally:
        database.close()



def quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return f"{statistics.median(ordered):.3f} / {p95:.3f} / {ordered[-1]:.3f} s"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=100_000_000, help="samples filled over the week (100,000,000)")
    parser.add_argument("--seconds", type=float, default=120.0, help="the fleet at its own pace (120 s)")
    parser.add_argument("--backlog", type=int, default=600_000, help="samples waiting when the processes start")
    parser.add_argument("--asks", type=int, default=40, help="/status of the fleet, and of a machine, each (40)")
    parser.add_argument("--delete-rows", type=int, default=20_000_000,
                        help="at most this many of the day's rows copied into a plain table and deleted")
    parser.add_argument("--skip-delete", action="store_true", help="no DELETE of the old way (the drop is timed)")
    parser.add_argument("--url", help="a PostgreSQL database of yours instead of a throwaway cluster")
    parser.add_argument("--filled", action="store_true",
                        help="the store at --url was filled by --fill-only: measure it, do not fill it again")
    parser.add_argument("--fill-only", action="store_true",
                        help="fill, print the store's URL and keep it until interrupted or terminated (then --filled)")
    parser.add_argument("--keep", action="store_true", help="keep the cluster and the bot logs (prints where)")
    args = parser.parse_args(argv)
    command = f"python -m bench.fleet {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip()
    load_before = load()
    fill_s = None
    with contextlib.ExitStack() as stack:
        cluster = None
        if args.url:
            url = args.url
        else:
            cluster = stack.enter_context(PostgresCluster())
            url = cluster.url
        if args.filled:
            print(f"the store was filled before; its devices' receipts moved {catch_up(url):.0f} s to now", flush=True)
        else:
            if args.url:
                empty_postgres(url)
            print(f"filling {args.rows:,} samples of {args.machines:,} machines over {DAYS} days ...", flush=True)
            fill_s = fill(url, args.machines, args.rows, time.time() - 60)
            print(f"  filled in {fill_s:.0f} s", flush=True)
        if args.fill_only:
            print(f"store: {url} (interrupt or terminate to remove it)", flush=True)
            # A background job starts with SIGINT ignored: both signals end the wait, and the cluster is removed.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
            return 0
        tmp = Path(tempfile.mkdtemp(prefix="rigwatch-fleet-"))
        size, rows = bytes_per_sample(url)
        explain = explain_device(url, machine(args.machines // 2))
        print(f"EXPLAIN (ANALYZE, BUFFERS) of /status {machine(args.machines // 2)}'s newest sample:\n{explain}",
              flush=True)
        prepare_models(f"file:{tmp}/models")
        broker = stack.enter_context(KafkaBroker())
        fake = stack.enter_context(FakeTelegram(token=TOKEN))
        print("starting the bot on the store ...", flush=True)
        starts = [measure_start(url, broker, fake, tmp, args.machines, time.time() - 30 + n, label)
                  for n, label in enumerate(["first start", "restart"])]
        for start in starts:
            print(f"  {start.label}: first new sample stored after {start.first_sample_s} s; {start.restored}",
                  flush=True)
        print(f"the bot and two workers, {args.seconds:.0f} s at the fleet's pace ...", flush=True)
        result = run_load(url, broker, fake, tmp, args.machines, args.backlog, args.seconds, args.asks)
        for line in result.slow:
            print(f"  slow: {line}", flush=True)
        retention = None
        if not args.skip_delete:
            print("a day dropped, and the same rows deleted from a plain table ...", flush=True)
            retention = drop_against_delete(url, time.time(), args.delete_rows)
        if args.keep and cluster is not None:
            stack.pop_all()
            print(f"kept: the cluster at {url} (its data in {cluster._data}), the logs in {tmp}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)

    fleet_max = max(result.fleet, default=math.inf)
    device_max = max(result.device + result.device_again, default=math.inf)
    ratio = result.backlog_rate / NEEDED_PER_S
    restart = starts[-1].first_sample_s
    print()
    print(f"Rigwatch fleet benchmark: {args.machines:,} machines, {rows:,} samples over {DAYS} days on one "
          f"PostgreSQL; {os.cpu_count()} CPUs; {load_before} before, {result.load} at the end of the load")
    print(f"command: {command}")
    print()
    print("| figure | measured | target |")
    print("|---|---|---|")
    if fill_s is not None:
        print(f"| the fill: {rows:,} samples, indexes, device rows | {fill_s:,.0f} s | - |")
    print(f"| samples/s the bot and two workers sustain (a backlog of {result.backlog:,}) | "
          f"{result.backlog_rate:,.0f}/s = {ratio:.1f} × the {NEEDED_PER_S:.0f}/s of 10,000 machines at 15 s | "
          f"≥ 1 × {verdict(ratio >= 1)} |")
    print(f"| the fleet at its pace ({len(live(args.machines)):,} agents over Kafka, {result.scraped:,} node_exporter "
          f"machines remote-written, {PER_WRITE} a write, to the three in turn): sent, stored | "
          f"{result.live_sent:,.0f}/s, {result.live_rate:,.0f}/s; {len(result.refused)} writes refused | "
          f"stored = sent {verdict(result.live_rate >= 0.95 * result.live_sent and not result.refused)} |")
    print(f"| `/status` (the fleet), {len(result.fleet)} asked: median / p95 / max | {quantiles(result.fleet)} | "
          f"≤ {TARGET_FLEET_S} s {verdict(fleet_max <= TARGET_FLEET_S)} |")
    first_max = max(result.device, default=math.inf)
    print(f"| `/status <machine>`, first question, {len(result.device)} asked: median / p95 / max | "
          f"{quantiles(result.device)} | ≤ {TARGET_DEVICE_S} s {verdict(first_max <= TARGET_DEVICE_S)} |")
    filled = sum(1 for took, whole in zip(result.device, result.device_whole, strict=True) if whole > took)
    print(f"| … until its usual ranges were shown ({filled} of {len(result.device)} filled in by an edit) | "
          f"{quantiles(result.device_whole)} | - |")
    again_max = max(result.device_again, default=math.inf)
    print(f"| `/status <machine>` asked again, {len(result.device_again)} asked: median / p95 / max | "
          f"{quantiles(result.device_again)} | ≤ {TARGET_DEVICE_S} s {verdict(again_max <= TARGET_DEVICE_S)} |")
    if retention is not None:
        drop = retention.drop
        print(f"| a day's partition ({retention.rows:,} samples) detached, the samples' table locked meanwhile | "
              f"{drop.detach_s:.2f} s | ≤ {TARGET_DROP_S:.0f} s {verdict(drop.detach_s <= TARGET_DROP_S)} |")
        print(f"| then its files dropped, nothing locked (in all) | {drop.files_s:.2f} s ({drop.total_s:.2f} s) | - |")
        print(f"| the old way: `DELETE` of {retention.copied:,} of that day's samples from one plain table | "
              f"{retention.delete_s:.2f} s | - |")
    for start in starts:
        first = start.first_sample_s
        print(f"| {start.label}: launch to the first new sample stored (CPU) | "
              f"{'-' if first is None else f'{first:.2f} s ({start.cpu_s:.2f} s)'} | ≤ {TARGET_RESTART_S:.0f} s "
              f"{verdict(first is not None and first <= TARGET_RESTART_S)} |")
    print(f"| disk per sample (partitions and indexes) | {size / max(1, rows):.0f} bytes ({size / MIB / 1024:.1f} GiB) "
          "| - |")
    total = sum(result.cpu_ms.values())
    parts = ", ".join(f"{name} {ms:.3f}" for name, ms in result.cpu_ms.items())
    print(f"| CPU per sample stored at the fleet's pace, ms | {parts}; {total:.3f} in all | - |")
    ok = (ratio >= 1 and fleet_max <= TARGET_FLEET_S and device_max <= TARGET_DEVICE_S
          and restart is not None and restart <= TARGET_RESTART_S
          and (retention is None or retention.drop.detach_s <= TARGET_DROP_S))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
