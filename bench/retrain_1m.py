"""/retrain on a big store, end to end, with the real bot process.

What it measures (the target of the issue "/retrain on 1,000,000 stored samples"):

- wall time of ``/retrain``: from injecting the command into the fake Telegram API until the bot's
  progress message is edited to its final text ("Retrain done" or "failed"); target <= 60 s;
- peak RSS of the bot process (VmHWM from /proc, plus the largest RSS sampled every 0.5 s including
  children); target <= 1.5 GB (1.5e9 bytes);
- ``/status`` latency while the retrain runs: a ``/status`` is injected every 0.5 s and timed until
  the bot's "Fleet" reply reaches the fake API; target: every one answered, the slowest within 1 s.

How: a temp dir gets a SQLite database (or, with ``--db postgres``, a throwaway PostgreSQL cluster)
filled with N samples of ~50 devices and a few hundred human labels; then the fake Telegram Bot API
(tests/fakes) and ``python -m bot`` (single-host mode, file model store) are started and driven.
Building the dataset is timed and printed but is not part of the target.

Run from the repository root (needs only requirements-dev.txt; Postgres also needs Debian's
``postgresql`` server package, as the tests do)::

    python -m bench.retrain_1m                     # 1,000,000 rows, SQLite
    python -m bench.retrain_1m --db postgres
    python -m bench.retrain_1m --rows 200000       # a quicker run

Exit code 0 only when all three targets are met.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import html
import io
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import peewee as pw
import psutil

from agent.vocabulary import KNOWN_METRICS
from bot import db
from tests.fakes.bot_process import BotProcess
from tests.fakes.services import postgres_cluster
from tests.fakes.telegram_api import FakeTelegram

TOKEN = "123456789:" + "B" * 35
CHAT = 4242
ADMIN = 7
TARGET_WALL_S = 60.0
TARGET_RSS_BYTES = 1.5e9
TARGET_STATUS_S = 1.0
STATUS_EVERY_S = 0.5
SAMPLE_INTERVAL_S = 5.0  # seconds between two samples of one device, as the agent sends them
INSERT_CHUNK = 50_000
COLUMNS = ["device", "ts", "received", "p_stressed", "model_version", *KNOWN_METRICS]


# ---------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class Device:
    name: str
    has_temp: bool
    has_swap: bool
    cpu_base: float
    mem_base: float
    disk_base: float
    cores: int


def fleet(n: int, rng: np.random.Generator) -> list[Device]:
    """PCs and Raspberry Pis with a temperature sensor, servers and VMs mostly without one."""
    devices = []
    for i in range(n):
        kind = ("pc", "srv", "rpi", "vm")[i % 4]
        devices.append(Device(
            name=f"{kind}{i:02d}",
            has_temp=kind in ("pc", "rpi") or (kind == "srv" and i % 3 == 0),
            has_swap=not (kind == "rpi" and i % 2 == 0),
            cpu_base=float(rng.uniform(3, 45)),
            mem_base=float(rng.uniform(20, 70)),
            disk_base=float(rng.uniform(10, 80)),
            cores={"pc": 8, "srv": 32, "rpi": 4, "vm": 2}[kind],
        ))
    return devices


def generate(rows: int, devices: list[Device], rng: np.random.Generator, end: float) -> tuple[np.ndarray, np.ndarray]:
    """(device index per row, float matrix of COLUMNS[1:]) for `rows` samples, oldest first; NaN = missing."""
    per = np.full(len(devices), rows // len(devices))
    per[: rows % len(devices)] += 1
    dev_idx, blocks = [], []
    for d, (device, n) in enumerate(zip(devices, per, strict=True)):
        k = np.arange(n, dtype=float)
        ts = end - (n - 1 - k) * SAMPLE_INTERVAL_S - rng.uniform(0, SAMPLE_INTERVAL_S)
        daily = np.sin(2 * np.pi * ts / 86400.0 + rng.uniform(0, 2 * np.pi))
        cpu = device.cpu_base * (1 + 0.5 * daily) + rng.gamma(2.0, 4.0, n)
        spikes = rng.random(n) < 0.004  # rare real overloads: a CPU pinned for a moment
        cpu[spikes] = rng.uniform(93, 100, spikes.sum())
        cpu = np.clip(cpu, 0, 100)
        load = np.clip(cpu / 100 * rng.uniform(0.6, 1.5, n), 0, None)
        mem = np.clip(device.mem_base + 8 * daily + rng.normal(0, 3, n), 1, 100)
        mem_full = rng.random(n) < 0.001
        mem[mem_full] = rng.uniform(92, 99.5, mem_full.sum())
        swap = np.clip(rng.gamma(1.5, 3.0, n) + np.where(mem > 90, 40, 0), 0, 100) if device.has_swap \
            else np.full(n, np.nan)
        disk = np.clip(device.disk_base + 5 * k / max(1, n) + rng.normal(0, 0.2, n), 0, 100)
        temp = np.clip(34 + 0.45 * cpu + rng.normal(0, 2, n), 20, 110) if device.has_temp else np.full(n, np.nan)
        values = {
            "ts": ts, "received": ts + rng.uniform(0.01, 0.5, n),
            "p_stressed": np.clip(rng.beta(1, 30, n) + (cpu > 95) * 0.6, 0, 1), "model_version": np.ones(n),
            "cpu_percent": cpu, "cpu_freq_mhz": np.where(cpu > 50, 3400.0, 1800.0) + rng.normal(0, 50, n),
            "load_1m": load, "mem_percent": mem, "swap_percent": swap, "disk_percent": disk,
            "disk_read_bps": rng.lognormal(10, 2, n), "disk_write_bps": rng.lognormal(11, 2, n),
            "net_sent_bps": rng.lognormal(9, 2, n), "net_recv_bps": rng.lognormal(10, 2, n),
            "cpu_temp_c": temp, "process_count": np.round(150 + device.cores * 10 + rng.normal(0, 5, n)),
            "uptime_s": 86400.0 * 3 + k * SAMPLE_INTERVAL_S,
        }
        blocks.append(np.column_stack([values[c] for c in COLUMNS[1:]]))
        dev_idx.append(np.full(n, d))
    matrix, devs = np.vstack(blocks), np.concatenate(dev_idx)
    order = np.argsort(matrix[:, 0], kind="stable")  # stored in arrival order, devices interleaved
    return devs[order], matrix[order]


def row_tuples(names: np.ndarray, matrix: np.ndarray) -> list[tuple]:
    """Rows as Python tuples with None for NaN (a missing metric is NULL, never 0)."""
    values = matrix.astype(object)
    values[np.isnan(matrix)] = None
    version = COLUMNS.index("model_version") - 1
    values[:, version] = matrix[:, version].astype(np.int64).astype(object)  # an integer column in Postgres
    return [(name, *row) for name, row in zip(names.tolist(), values.tolist(), strict=True)]


def insert_sqlite(database: pw.Database, names: np.ndarray, matrix: np.ndarray) -> None:
    """executemany on the raw sqlite3 connection, one transaction."""
    sql = f"INSERT INTO metric ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    connection = database.connection()
    with database.atomic():
        for start in range(0, len(matrix), INSERT_CHUNK):
            stop = start + INSERT_CHUNK
            connection.executemany(sql, row_tuples(names[start:stop], matrix[start:stop]))


def insert_postgres(database: pw.Database, names: np.ndarray, matrix: np.ndarray) -> None:
    """COPY ... FROM STDIN in CSV chunks (an empty unquoted field is NULL), one transaction."""
    sql = f"COPY metric ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
    with database.atomic():
        cursor = database.cursor()
        for start in range(0, len(matrix), INSERT_CHUNK):
            stop = start + INSERT_CHUNK
            buffer = io.StringIO()
            csv.writer(buffer).writerows(row_tuples(names[start:stop], matrix[start:stop]))
            buffer.seek(0)
            cursor.copy_expert(sql, buffer)


def add_labels(count: int, rng: np.random.Generator) -> int:
    """Human labels through bot.db.Label: stressed on real overloads, normal on ordinary samples, a few
    "wrong prediction" corrections on overloads that were fine."""
    half = count // 2
    hot = [r[0] for r in db.Metric.select(db.Metric.id)
           .where((db.Metric.cpu_percent >= 95) | (db.Metric.mem_percent >= 94))
           .order_by(db.Metric.id).tuples()]
    top = db.Metric.select(pw.fn.MAX(db.Metric.id)).scalar() or 0
    candidates = (rng.choice(top, size=min(top, 3 * count), replace=False) + 1).tolist()
    plain = [r[0] for r in db.Metric.select(db.Metric.id)
             .where(db.Metric.id.in_(candidates) & (db.Metric.cpu_percent < 60)).tuples()]
    stressed = rng.choice(hot, size=min(half, len(hot)), replace=False).tolist()
    normal = rng.choice(plain, size=min(count - len(stressed), len(plain)), replace=False).tolist()
    wrong = set(stressed[: max(1, len(stressed) // 10)])  # someone said "this spike was fine"
    now = time.time()
    rows = [{"metric": m, "value": 0 if m in wrong else 1, "user_id": ADMIN, "user_name": "@admin",
             "created": now - i} for i, m in enumerate(stressed)]
    rows += [{"metric": m, "value": 0, "user_id": ADMIN + 1, "user_name": "@ops", "created": now - i}
             for i, m in enumerate(normal)]
    with db.db.atomic():
        for chunk in pw.chunked(rows, 500):
            db.Label.insert_many(chunk).execute()
    return len(rows)


def build_dataset(url: str, rows: int, n_devices: int, n_labels: int, seed: int) -> tuple[float, int]:
    """Fill the store; returns (seconds, labels stored)."""
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    devices = fleet(n_devices, rng)
    dev_idx, matrix = generate(rows, devices, rng, end=time.time() - 10)
    names = np.array([d.name for d in devices], dtype=object)[dev_idx]
    database = db.open_database(url)
    try:
        if url.startswith("sqlite"):
            insert_sqlite(database, names, matrix)
        else:
            insert_postgres(database, names, matrix)
        labels = add_labels(n_labels, rng)
    finally:
        database.close()
    return time.monotonic() - started, labels


@contextlib.contextmanager
def database_url(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/db/rigwatch.sqlite3"
    else:
        with postgres_cluster() as url:
            yield url


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Measured:
    started: float = 0.0  # when /retrain was injected (time.time())
    wall_s: float | None = None  # /retrain injected -> final edit of the progress message
    outcome: str = "no answer"
    final_text: str = ""
    steps: list[tuple[float, str]] = field(default_factory=list)  # (seconds since /retrain, progress text)
    status_sent: list[float] = field(default_factory=list)
    status_answered: list[float] = field(default_factory=list)  # time of each "Fleet" reply, in order
    idle_status_s: list[float] = field(default_factory=list)
    rss_max: int = 0
    hwm_before: int = 0
    hwm: int = 0

    def latencies(self) -> list[float]:
        return [a - s for s, a in zip(self.status_sent, self.status_answered, strict=False)]

    def step_at(self, seconds: float) -> str:
        """The retrain step the progress message showed `seconds` after /retrain."""
        shown = [text for at, text in self.steps if at <= seconds]
        return shown[-1].splitlines()[0].removeprefix("⏳ Retraining: ").rstrip("…") if shown else "starting"


def process_rss(pid: int) -> int:
    """RSS of the process and all its children, in bytes."""
    try:
        proc = psutil.Process(pid)
        return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
    except psutil.Error:
        return 0


def vm_hwm(pid: int) -> int:
    """Peak resident set size of the process since it started (VmHWM), in bytes."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def fleet_replies(fake: FakeTelegram, after: int) -> list[float]:
    """Times at which the bot sent a /status overview to the chat, from call-log index `after` on."""
    return [c.time for c in fake.calls()[after:] if c.method == "sendMessage" and c.status == 200
            and c.params.get("chat_id") == CHAT and "Fleet" in str(c.params.get("text", ""))]


def idle_status(fake: FakeTelegram, asks: int = 3, timeout: float = 30.0) -> list[float]:
    """/status latency with nothing else going on: separates a slow query from a busy process."""
    out = []
    for _ in range(asks):
        mark = fake.call_count()
        sent = time.time()
        fake.send_text(CHAT, "/status", user_id=ADMIN)
        fake.wait_for_message(CHAT, lambda text: "Fleet" in text, timeout=timeout, after=mark)
        out.append(fleet_replies(fake, mark)[0] - sent)
    return out


def drive_retrain(fake: FakeTelegram, bot: BotProcess, timeout: float) -> Measured:
    """Send /retrain, ask /status every 0.5 s until the progress message is final, sample RSS meanwhile."""
    assert bot.proc is not None
    pid = bot.proc.pid
    result = Measured(hwm_before=vm_hwm(pid))
    mark = fake.call_count()
    started = result.started = time.time()
    fake.send_text(CHAT, "/retrain", user_id=ADMIN)
    next_status, next_rss = started, started + STATUS_EVERY_S  # the first /status goes with /retrain
    progress_id: int | None = None
    seen_edits = 0
    while result.wall_s is None:
        now = time.time()
        if now - started > timeout:
            result.outcome = f"timed out after {timeout:.0f} s"
            break
        if bot.proc.poll() is not None:
            result.outcome = f"bot exited with {bot.proc.returncode}"
            break
        if now >= next_status:
            result.status_sent.append(time.time())
            fake.send_text(CHAT, "/status", user_id=ADMIN)
            next_status += STATUS_EVERY_S
        if now >= next_rss:
            result.rss_max = max(result.rss_max, process_rss(pid))
            next_rss += STATUS_EVERY_S
        calls = fake.calls()[mark:]
        for call in calls:
            text = str(call.params.get("text", ""))
            if progress_id is None and call.method == "sendMessage" and call.status == 200 and "Retraining" in text:
                progress_id = call.result["message_id"]
                result.steps.append((call.time - started, text))
            elif call.method == "sendMessage" and "something went wrong" in text:
                result.wall_s, result.outcome, result.final_text = call.time - started, "error", text
        edits = [c for c in calls if c.method == "editMessageText" and progress_id is not None
                 and c.params.get("message_id") == progress_id]
        for call in edits[seen_edits:]:
            text = str(call.params.get("text", ""))
            result.steps.append((call.time - started, text))
            if "Retrain done" in text or "failed" in text:
                result.wall_s = call.time - started
                result.outcome = "done" if "Retrain done" in text else "failed"
                result.final_text = text
        seen_edits = len(edits)
        time.sleep(0.05)
    # Every /status asked during the retrain must still be answered: wait for the stragglers.
    deadline = time.time() + 30
    while len(fleet_replies(fake, mark)) < len(result.status_sent) and time.time() < deadline:
        result.rss_max = max(result.rss_max, process_rss(pid))
        time.sleep(0.1)
    result.status_answered = fleet_replies(fake, mark)
    result.rss_max = max(result.rss_max, process_rss(pid))
    result.hwm = vm_hwm(pid)
    return result


# ---------------------------------------------------------------------------------------------- report


def plain(text: str) -> str:
    """A Telegram HTML text as people read it."""
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(args: argparse.Namespace, build_s: float, labels: int, m: Measured) -> bool:
    """Print the figures; True when every target is met."""
    latencies = m.latencies()
    unanswered = len(m.status_sent) - len(latencies)
    wall_ok = m.outcome == "done" and m.wall_s is not None and m.wall_s <= TARGET_WALL_S
    rss_ok = 0 < max(m.hwm, m.rss_max) <= TARGET_RSS_BYTES
    status_ok = bool(latencies) and unanswered == 0 and max(latencies) <= TARGET_STATUS_S
    mb = 1024 * 1024
    wall = f"{m.wall_s:.1f} s" if m.wall_s is not None else "-"
    print()
    print(f"Rigwatch /retrain benchmark: {args.rows:,} rows, {args.devices} devices, {labels} labels, "
          f"{args.db}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"  dataset built in            {build_s:.1f} s (not part of the target)")
    if m.idle_status_s:
        print(f"  /status before the retrain  {', '.join(f'{x:.3f}' for x in m.idle_status_s)} s (idle bot)")
    print(f"  /retrain wall time          {wall} ({m.outcome})   target <= {TARGET_WALL_S:.0f} s   "
          f"{verdict(wall_ok)}")
    if latencies:
        print(f"  /status during the retrain  {len(latencies)} answered of {len(m.status_sent)} asked; "
              f"median {statistics.median(latencies):.3f} s, max {max(latencies):.3f} s   "
              f"target <= {TARGET_STATUS_S:.0f} s   {verdict(status_ok)}")
        worst = latencies.index(max(latencies))
        asked = m.status_sent[worst] - m.started
        print(f"  slowest /status             asked {asked:.1f} s after /retrain, during '{m.step_at(asked)}'")
    else:
        print(f"  /status during the retrain  0 answered of {len(m.status_sent)} asked   {verdict(status_ok)}")
    print(f"  bot peak RSS (VmHWM)        {m.hwm / mb:.0f} MiB (before /retrain {m.hwm_before / mb:.0f} MiB; "
          f"max sampled incl. children {m.rss_max / mb:.0f} MiB)   target <= {TARGET_RSS_BYTES / 1e9:.1f} GB   "
          f"{verdict(rss_ok)}")
    print("  progress of the retrain (s after /retrain):")
    for at, text in sorted(m.steps):
        print(f"    {at:7.1f}  {plain(text.splitlines()[0])[:110]}")
    if m.final_text:
        print(f"             {plain(m.final_text.splitlines()[-1])[:110]}")
    passed = wall_ok and rss_ok and status_ok
    print(f"  RESULT: {verdict(passed)}")
    return passed


def run(args: argparse.Namespace, tmp: Path) -> bool:
    """Build the store, start the fake API and the bot, drive /retrain; True when every target is met."""
    with database_url(args.db, tmp) as url:
        print(f"building {args.rows:,} samples in {args.db} ({tmp}) ...", flush=True)
        build_s, labels = build_dataset(url, args.rows, args.devices, args.labels, args.seed)
        print(f"built in {build_s:.1f} s; starting the fake Telegram API and the bot ...", flush=True)
        with FakeTelegram(token=TOKEN) as fake:
            bot = BotProcess({
                "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": fake.url, "ALLOWED_CHAT_IDS": str(CHAT),
                "ADMIN_USER_IDS": str(ADMIN), "DATABASE_URL": url, "MODEL_STORE": f"file:{tmp}/models",
            }, tmp / "bot.log")
            bot.env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # single-host mode, whatever the caller's shell says
            with bot:
                bot.wait_log("single-host mode", timeout=120)
                idle = idle_status(fake)
                print("bot ready; /retrain ...", flush=True)
                measured = drive_retrain(fake, bot, args.timeout)
                measured.idle_status_s = idle
                bot.stop()
    return report(args, build_s, labels, measured)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrain_1m", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="samples in the store (default 1,000,000)")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite", help="database engine")
    parser.add_argument("--devices", type=int, default=50, help="devices the samples are spread over")
    parser.add_argument("--labels", type=int, default=300, help="human labels to store")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on /retrain after this many s")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, models, bot log)")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="rigwatch-bench-"))
    passed = False
    try:
        passed = run(args, tmp)
    finally:
        if passed and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"  kept {tmp} (bot log: {tmp / 'bot.log'})")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
