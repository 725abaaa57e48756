"""Restart on a big store: how soon the real bot takes samples in and answers again, and whether that grows with
the samples stored.

For each store size (N machines, M samples; default 10,000 machines and 1 and 10 million samples), a fresh store
is filled inside the database itself (PostgreSQL: one INSERT … SELECT over generate_series, its indexes built
after; SQLite: a recursive CTE), one sample per machine every 15 s up to a minute ago. Then the real
``python -m bot`` is started three times on it, each time with a new Kafka topic holding one new sample of every
machine and a ``/status <machine>`` waiting in the fake Bot API:

1. the first start after an upgrade from a version that kept no trends: they are rebuilt from the history, beside
   ingestion; it stops gracefully, keeping every machine's trends;
2. and 3. restarts: the kept trends are read back, one row per machine.

Each start is timed from launching the process (imports included) to the first new sample stored (seen by this
script, which polls the store every 20 ms; with the CPU time the bot had used by then, which other work on the
machine does not change), to the reply to ``/status`` reaching the fake Bot API, and to the bot's log saying its
forecasts are restored (with how many rows it read for them). The target: samples taken in again within 5 s, the
same at 1 and 10 million samples. ``--code DIR`` runs the bot of another checkout (an older commit, say) on the
same stores, to compare.

Run from the repository root (needs requirements-dev.txt; PostgreSQL needs Debian's ``postgresql`` server
package, as the tests do)::

    python -m bench.restart                                  # PostgreSQL, 10,000 machines, 1 M and 10 M samples
    python -m bench.restart --db sqlite
    python -m bench.restart --machines 2000 --samples 200000 1000000   # quicker

It also measures what keeping the trends costs a batch at most (`write_cost`: SAVE_MOST machines' trends written
in one transaction, on the same store). The functions are importable (`measure_start`, `restarts`, `write_cost`;
the store is filled by tests/fakes/fleet_store.py) to be driven from another benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import peewee as pw
import psutil
from confluent_kafka import Producer

from bot import db
from bot.pipeline import learnt
from bot.pipeline.active_model import ActiveModel
from bot.pipeline.baselines import Baselines
from bot.pipeline.disks import ActiveDiskModel
from bot.pipeline.forecast import Forecaster
from ml.store import open_disk_store, open_store
from schema import tables
from schema.tables import TrendState
from tests.fakes.bot_process import BotProcess
from tests.fakes.fleet_store import fill, machine, new_samples
from tests.fakes.services import KafkaBroker, PostgresCluster
from tests.fakes.telegram_api import FakeTelegram

TOKEN = "123456789:" + "R" * 35
CHAT = 4242
TARGET_S = 5.0  # start -> the first new sample stored
POLL_S = 0.02
MIB = 1024 * 1024


def prepare_models(store: str) -> None:
    """The model store of a bot that ran before: a first model and the disk model, saved once."""
    ActiveModel(open_store(store, None)).ensure()
    ActiveDiskModel(open_disk_store(store, None)).ensure()


def write_cost(url: str, machines: int = learnt.SAVE_MOST, hours: float = 3.0, rounds: int = 7) -> tuple[float, int]:
    """What keeping the trends costs a batch at most: the median seconds of writing `machines` machines' trends
    (SAVE_MOST, a batch's most), each with `hours` of disk, memory and swap every 20 s behind it, in one
    transaction; and the mean size of a machine's kept state, in bytes. Their rows are removed after."""
    database = db.open_database(url)
    forecaster = Forecaster(4 * 3600.0, save_every_s=0.0)
    names = [f"w{d:05}" for d in range(machines)]
    start = time.time() - hours * 3600
    steps = int(hours * 3600 / 20)
    spent = []
    try:
        for k in range(steps + rounds):
            forecaster.observe([(k, name, start + 20.0 * k, {"disk_percent": 30.0 + d % 50 + k * 0.001,
                                                           "mem_percent": 40.0 + k % 5, "swap_percent": 5.0}, None,
                                 None) for d, name in enumerate(names)])
            if k < steps:
                forecaster.unsaved(start + 20.0 * k)  # learning the history is not what is measured
                continue
            began = time.perf_counter()
            with db.transaction():
                learnt.save(forecaster, Baselines(), time.time(), most=machines)
            spent.append(time.perf_counter() - began)
        size = TrendState.select(pw.fn.AVG(pw.fn.LENGTH(TrendState.state))).where(TrendState.device.in_(names)).scalar()
        TrendState.delete().where(TrendState.device.in_(names)).execute()
    finally:
        database.close()
    return statistics.median(spent), int(size)


# ---------------------------------------------------------------------------------------------- one start


@dataclass
class Start:
    """One start of the bot, in seconds from launching its process."""

    label: str
    opened_s: float | None = None  # the bot's first log line: its code imported, the store opened
    first_sample_s: float | None = None
    cpu_s: float | None = None  # CPU the bot had used by then: what the start costs, whatever else the machine runs
    first_answer_s: float | None = None
    restored_s: float | None = None
    restored: str = ""  # what the bot said of the trends it restored
    hwm: int = 0  # the bot's peak RSS


def _highest_id(database: pw.Database) -> int:
    return database.execute_sql("SELECT coalesce(max(id), 0) FROM metric").fetchone()[0]


def _vm_hwm(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def produce(bootstrap: str, topic: str, messages: Iterator[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    assert producer.flush(30) == 0


class _BotIn(BotProcess):
    """The bot of another checkout (`code`), to compare with; this one's when None."""

    def __init__(self, env: dict[str, str], log_path: Path, code: Path | None) -> None:
        super().__init__(env, log_path)
        self.code = code

    def start(self) -> _BotIn:
        if self.code is None:
            return super().start()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "bot"], cwd=self.code, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        return self


RESTORED = re.compile(r"forecasts (?:restored|rebuilt) for .*")
FIRST_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) ")  # the log's local time, as logging writes it


def measure_start(url: str, broker: KafkaBroker, fake: FakeTelegram, tmp: Path, machines: int, ts: float,
                  label: str, timeout: float = 600.0, code: Path | None = None) -> Start:
    """Start the bot on the store with one new sample of every machine in a new topic and /status of one machine
    waiting; time the first new sample stored, the reply, and the forecasts restored; stop it gracefully."""
    topic = f"restart.{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    produce(broker.bootstrap, topic, new_samples(machines, ts))
    database = tables.connect(url)
    before = _highest_id(database)
    mark = fake.call_count()
    fake.send_text(CHAT, f"/status {machine(machines // 2)}", user_id=CHAT)
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": fake.url, "ALLOWED_CHAT_IDS": str(CHAT),
           "ADMIN_USER_IDS": str(CHAT), "DATABASE_URL": url, "MODEL_STORE": f"file:{tmp}/models",
           "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic,
           "KAFKA_GROUP_ID": f"restart-{uuid.uuid4().hex[:8]}", "KAFKA_SESSION_TIMEOUT_MS": "2000"}
    result = Start(label)
    bot = _BotIn(env, tmp / f"bot-{uuid.uuid4().hex[:6]}-{label.replace(' ', '-')}.log", code)
    started, launched = time.monotonic(), time.time()
    with bot:
        assert bot.proc is not None
        process = psutil.Process(bot.proc.pid)
        try:
            while None in (result.first_sample_s, result.first_answer_s, result.restored_s):
                now = time.monotonic() - started
                if now > timeout or bot.proc.poll() is not None:
                    print(f"  {label}: gave up after {now:.0f} s; log: {bot.log_path}", flush=True)
                    break
                if result.first_sample_s is None and _highest_id(database) > before:
                    result.first_sample_s = now
                    times = process.cpu_times()
                    result.cpu_s = times.user + times.system
                if result.first_answer_s is None and any(
                        c.method == "sendMessage" and c.status == 200 for c in fake.calls()[mark:]):
                    result.first_answer_s = now
                if result.restored_s is None and (found := RESTORED.search(bot.log)):
                    result.restored_s, result.restored = now, found[0]
                time.sleep(POLL_S)
            result.hwm = _vm_hwm(bot.proc.pid)
            if first := FIRST_LINE.match(bot.log):
                result.opened_s = datetime.strptime(first[1], "%Y-%m-%d %H:%M:%S,%f").timestamp() - launched
        finally:
            database.close()
            bot.stop(timeout=120)
    return result


def restarts(url: str, machines: int, broker: KafkaBroker, fake: FakeTelegram, tmp: Path, starts: int = 3,
             code: Path | None = None) -> list[Start]:
    """The first start on a filled store (an upgrade: nothing kept), then `starts` - 1 restarts."""
    done = []
    for n in range(starts):
        label = "upgrade" if n == 0 else f"restart {n}"
        done.append(measure_start(url, broker, fake, tmp, machines, time.time() - 30 + n, label, code=code))
        print(f"  {_line(done[-1])}", flush=True)
    return done


# ---------------------------------------------------------------------------------------------- the run


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _line(s: Start) -> str:
    return (f"{s.label:<10} code imported and store opened {_seconds(s.opened_s):>8}, "
            f"first new sample stored {_seconds(s.first_sample_s):>8} (CPU {_seconds(s.cpu_s)}), /status answered "
            f"{_seconds(s.first_answer_s):>8}, forecasts restored {_seconds(s.restored_s):>8}, "
            f"VmHWM {s.hwm / MIB:.0f} MiB")


@contextlib.contextmanager
def _stores(kind: str, tmp: Path) -> Iterator[Iterator[str]]:
    """Fresh stores one after the other: a new database of one PostgreSQL cluster each, or a new SQLite file."""
    if kind == "sqlite":
        yield (f"sqlite:///{tmp}/store{n}/rigwatch.sqlite3" for n in range(1000))
        return
    with PostgresCluster() as cluster:
        def fresh() -> Iterator[str]:
            for n in range(1000):
                name = f"store{n}"
                admin = tables.connect(cluster.url)
                admin.execute_sql(f"CREATE DATABASE {name}")
                admin.close()
                yield cluster.url.rsplit("/", 1)[0] + f"/{name}"
        yield fresh()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--machines", type=int, default=10_000)
    parser.add_argument("--samples", type=int, nargs="+", default=[1_000_000, 10_000_000],
                        help="store sizes to compare (default 1,000,000 and 10,000,000)")
    parser.add_argument("--starts", type=int, default=3, help="starts per store: the upgrade, then restarts")
    parser.add_argument("--code", type=Path, help="run the bot of this checkout instead (to compare with)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (stores, bot logs)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="rigwatch-restart-"))
    load_before = os.getloadavg()
    results: list[tuple[int, float, list[Start], tuple[float, int] | None]] = []
    try:
        prepare_models(f"file:{tmp}/models")
        with KafkaBroker() as broker, FakeTelegram(token=TOKEN) as fake, _stores(args.db, tmp) as stores:
            for samples in args.samples:
                url = next(stores)
                print(f"{args.db}: filling {samples:,} samples of {args.machines:,} machines ...", flush=True)
                fill_s = fill(url, args.machines, samples, time.time() - 60)
                print(f"  filled in {fill_s:.0f} s", flush=True)
                starts = restarts(url, args.machines, broker, fake, tmp, args.starts, args.code)
                results.append((samples, fill_s, starts, None if args.code else write_cost(url)))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"Rigwatch restart benchmark: {args.db}, {args.machines:,} machines, {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.2f} before and {os.getloadavg()[0]:.2f} after; seconds from launching the process")
    print(f"command: python -m bench.restart {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    ok = True
    for samples, fill_s, starts, cost in results:
        print(f"{samples:>11,} samples (filled in {fill_s:.0f} s):")
        for start in starts:
            print(f"  {_line(start)}")
            print(f"    {start.restored}")
        again = [s.first_sample_s for s in starts[1:] if s.first_sample_s is not None]
        if again:
            print(f"  restarts: first new sample stored after {statistics.median(again):.2f} s (median)")
        if cost is not None:
            print(f"  a batch keeping {learnt.SAVE_MOST} machines' trends (its most): {cost[0] * 1000:.0f} ms, "
                  f"{cost[1]:,} bytes a machine")
        ok = ok and all(s.first_sample_s is not None and s.first_sample_s <= TARGET_S for s in starts)
    print(f"target: the first new sample stored within {TARGET_S:.0f} s of every start: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
