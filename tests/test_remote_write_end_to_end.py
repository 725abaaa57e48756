"""Prometheus scraping a real node_exporter every second and remote-writing to `python -m bot`: the machine shows
in the chat as any agent machine does, in single-host mode (stored by the bot itself) and in fleet mode (through
the Kafka topic); a machine in trouble, crafted as the /proc and /sys trees node_exporter reads, has its readings
stored, and its degraded array and its failing disk (smartmon's series in its textfile directory, or
smartctl_exporter's written as Prometheus writes them) alert in the chat as an agent machine's do."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot import db
from bot.intake.prompb import remote_pb2
from bot.intake.remote_write_http import PATH
from tests.fakes.bot_process import BotProcess
from tests.fakes.machine_tree import FILES_MAX, FILES_OPEN, PID_MAX, THREADS, CraftedMachine
from tests.fakes.node_exporter import body, machine, write_request
from tests.fakes.scenario import CHAT, ask, bot_env, wait_until
from tests.fakes.services import free_port, node_exporter, prometheus
from tests.fakes.smart_exporters import smartctl_exporter, smartmon, textfile
from tests.fakes.smartctl import ATA_DISK, grown
from tests.fakes.telegram_api import FakeTelegram

pytestmark = [
    pytest.mark.slow,
]
TOKEN = "a-token-only-prometheus-knows"
DEVICE = "edge-node1"


def config(target: str, receiver_port: int, device: str = DEVICE) -> str:
    """Scrape node_exporter every second, name its machine, and remote-write as docs/fleets.md says."""
    return f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["{target}"]
    relabel_configs:
      - target_label: instance
        replacement: "{device}:9100"
remote_write:
  - url: http://127.0.0.1:{receiver_port}/api/v1/write
    authorization:
      credentials: {TOKEN}
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
"""


@pytest.mark.parametrize("fleet", [False, True], ids=["single-host", "fleet"])
def test_a_node_exporter_machine_shows_in_status_with_its_metrics(
    fleet: bool, telegram: FakeTelegram, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    port = free_port()
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    extra = {"REMOTE_WRITE_LISTEN": f"127.0.0.1:{port}", "REMOTE_WRITE_TOKEN": TOKEN, "SAMPLE_INTERVAL_SECONDS": "60"}
    if fleet:
        extra.update(KAFKA_BOOTSTRAP_SERVERS=request.getfixturevalue("kafka"),
                     KAFKA_TOPIC=request.getfixturevalue("topic"))
    env = bot_env(telegram, tmp_path, url, **extra)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("remote write: listening")
        with node_exporter() as target, prometheus(config(target, port)) as prometheus_log:
            db.open_database(url)

            def machine_with_cpu() -> bool:
                return db.Metric.select().where(db.Metric.device == DEVICE, db.Metric.cpu_percent.is_null(False),
                                                db.Metric.mem_percent.is_null(False)).exists()

            try:
                wait_until(machine_with_cpu, timeout=60, what="a sample of the node_exporter machine with its CPU")
            except AssertionError:
                raise AssertionError(f"{prometheus_log.read_text()[-3000:]}\n{bot.log[-3000:]}") from None
            overview = ask(telegram, "/status")
            detail = ask(telegram, f"/status {DEVICE}")
            greeting = ask(telegram, "/start")
        assert bot.stop() == 0

    assert f"the machines Prometheus remote-writes to my port {port}" in greeting
    assert DEVICE in overview
    assert DEVICE in detail and "CPU" in detail and "Memory" in detail and "Disk / " in detail, detail
    rows = list(db.Metric.select().where(db.Metric.device == DEVICE).order_by(db.Metric.ts))
    latest = rows[-1]
    assert 0 <= latest.cpu_percent <= 100 and 0 < latest.mem_percent < 100 and latest.load_1m >= 0
    assert latest.disk_percent is not None and latest.net_recv_bps is not None
    assert "/" in json.loads(latest.filesystems), "every real filesystem, by its mount point"
    assert len({row.ts for row in rows}) == len(rows)  # one sample per scrape
    assert db.Rejected.select().count() == 0


def test_a_scrape_split_over_two_writes_survives_a_kill_between_them(telegram: FakeTelegram, tmp_path: Path) -> None:
    """Prometheus cut a scrape between two batches; the first was answered 204, then the bot was killed. After
    the restart the second comes: the machine's sample has the series of both."""
    port = free_port()
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, REMOTE_WRITE_LISTEN=f"127.0.0.1:{port}", REMOTE_WRITE_TOKEN=TOKEN,
                  SAMPLE_INTERVAL_SECONDS="60")
    now = time.time()
    whole = write_request({f"{DEVICE}:9100": [(now - 15, machine())]})
    scrape = write_request({f"{DEVICE}:9100": [(now, machine(mem_available=2e9))]})
    first, rest = write_request({}), write_request({})
    for series in scrape.timeseries:  # /data's series in the second write
        (rest if any(label.value == "/data" for label in series.labels) else first).timeseries.append(series)

    def post(request: remote_pb2.WriteRequest) -> int:
        answer = httpx.post(f"http://127.0.0.1:{port}{PATH}", content=body(request), timeout=30, headers={
            "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy", "Authorization": f"Bearer {TOKEN}"})
        return answer.status_code

    log = tmp_path / "bot.log"
    with BotProcess(env, log) as bot:
        bot.wait_log("remote write: listening")
        assert post(whole) == 204  # the machine's size is known: the next scrape waits for all of its series
        assert post(first) == 204
        bot.kill()
    with BotProcess(env, log) as bot:
        bot.wait_log("1 scrapes kept before the restart wait for the rest", timeout=60)
        assert post(rest) == 204
        db.open_database(url)
        wait_until(lambda: db.Metric.select().where(db.Metric.device == DEVICE, db.Metric.ts == round(now, 3)).exists(),
                   timeout=30, what="the split scrape stored")
        assert bot.stop() == 0

    row = db.Metric.get(db.Metric.device == DEVICE, db.Metric.ts == round(now, 3))
    assert row.mem_percent == pytest.approx(87.5)  # from the write before the kill
    assert row.disk_percent == pytest.approx(85.0)  # /data, from the write after it
    assert db.HeldPart.select().count() == 0


# ------------------------------------------------------------------------------------- a machine in trouble

CRAFTED = "crafted-md1"


@dataclass
class Watched:
    """The bot watching the crafted machine through a real node_exporter and Prometheus, remote write between."""

    bot: BotProcess
    port: int  # the bot's remote-write port
    url: str  # its database
    telegram: FakeTelegram

    def samples(self, device: str = CRAFTED) -> list[db.Metric]:
        return list(db.Metric.select().where(db.Metric.device == device).order_by(db.Metric.ts))

    def post(self, request: remote_pb2.WriteRequest) -> int:
        answer = httpx.post(f"http://127.0.0.1:{self.port}{PATH}", content=body(request), timeout=30, headers={
            "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy", "Authorization": f"Bearer {TOKEN}"})
        return answer.status_code


@contextlib.contextmanager
def watching(crafted: CraftedMachine, telegram: FakeTelegram, tmp_path: Path, **extra: str) -> Iterator[Watched]:
    """The bot (with `extra` settings), node_exporter reading the crafted trees and Prometheus scraping it every
    second, while the crafted machine's counters grow every half second. The alerts on these readings can be
    asserted here too, on `telegram`, once the bot's rules decide on them."""
    port = free_port()
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, REMOTE_WRITE_LISTEN=f"127.0.0.1:{port}", REMOTE_WRITE_TOKEN=TOKEN,
                  SAMPLE_INTERVAL_SECONDS="60", **extra)
    stop = threading.Event()

    def grow() -> None:
        while not stop.wait(0.5):
            crafted.step()

    growing = threading.Thread(target=grow, daemon=True)
    exporter_log = tmp_path / "node_exporter.log"
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("remote write: listening")
        with node_exporter(*crafted.flags(), log=exporter_log) as target, \
                prometheus(config(target, port, CRAFTED)) as prometheus_log:
            db.open_database(url)
            growing.start()
            try:
                yield Watched(bot, port, url, telegram)
            except AssertionError as failed:
                raise AssertionError(f"{failed}\n{exporter_log.read_text()[-2000:]}\n"
                                     f"{prometheus_log.read_text()[-2000:]}\n{bot.log[-2000:]}") from None
            finally:
                stop.set()
                growing.join(5)
        assert bot.stop() == 0


def stored_readings(row: db.Metric) -> dict[str, dict[str, float]]:
    """The readings a stored sample holds, as the `readings` column has them (JSON)."""
    return json.loads(row.readings)["readings"] if row.readings else {}


def test_a_machine_in_trouble_read_by_a_real_node_exporter_has_its_readings_stored(
        telegram: FakeTelegram, tmp_path: Path) -> None:
    """A degraded md array, OOM kills, a file table near its limit, interface errors, memory and I/O stalls, a
    reboot waiting, …: node_exporter reads them from crafted /proc and /sys trees, Prometheus scrapes it and
    remote-writes to the bot, and the bot stores them as the agent's readings. (systemd's collector needs systemd
    on D-Bus, which this machine has not: its units come by a write of their own below.)"""
    crafted = CraftedMachine(tmp_path / "machine")
    growing = ("oom_kills", "net_errors_percent", "link_changes", "ecc_correctable", "disk_io_queue",
               "major_faults_per_s")
    with watching(crafted, telegram, tmp_path) as watch:

        def every_count_grew() -> bool:
            seen = {name for row in watch.samples() for name, objects in stored_readings(row).items()
                    if any(value > 0 for value in objects.values())}
            return seen >= set(growing)

        wait_until(every_count_grew, timeout=40, what="the crafted machine's counters seen growing in stored samples")
        # node_exporter's systemd collector asks systemd over D-Bus: a write as Prometheus sends it brings the units.
        now = time.time()
        units = [machine(units=3) for _ in range(2)]
        units[1]["node_systemd_unit_state", (("name", "service-01.service"), ("state", "failed"),
                                             ("type", "simple"))] = 1.0
        for i, scrape in enumerate(units):
            scrape["node_systemd_service_restart_total", (("name", "service-02.service"),)] = 4.0 + 3 * i
            assert watch.post(write_request({"edge-units:9100": [(now - 15 + 15 * i, scrape)]})) == 204
        wait_until(lambda: len(watch.samples("edge-units")) == 2, timeout=20, what="the units' samples stored")
        latest = db.latest_sample(CRAFTED)
        rows = watch.samples()
        units_stored = db.latest_sample("edge-units")

    assert latest is not None and latest.readings is not None
    readings = latest.readings
    assert readings["md_active"] == {"md0": 1.0} and readings["md_failed"] == {"md0": 1.0}
    assert readings["md_required"] == {"md0": 2.0}
    assert readings["fd_percent"] == {"": 100.0 * FILES_OPEN / FILES_MAX}
    assert readings["pids_percent"] == {"": round(100.0 * THREADS / PID_MAX, 6)}
    assert readings["conntrack_percent"] == {"": 25.0}
    assert readings["reboot_required"] == {"": 1.0} and readings["textfile_error"] == {"": 0.0}
    assert readings["bond_slaves"] == {"bond0": 2.0} and readings["bond_active"] == {"bond0": 1.0}
    assert readings["temp_alarm"] == {"coretemp/temp1": 1.0}
    assert readings["readonly"]["/usr"] == 1.0 and readings["readonly"]["/"] == 0.0
    assert 0 < readings["inodes_percent"]["/"] < 100 and readings["inodes_used"]["/"] > 0
    assert {"clock_synced", "clock_offset_s", "clock_maxerror_s"} <= set(readings)  # this machine's own clock
    assert "unit_failed" not in readings  # no systemd collector: not read, rather than "no unit failed"
    # 30 of each 2,000 packets of eth0 came with an error: 1.5 %, whatever the steps between two scrapes (0 % when
    # none came between them: no packet, no error).
    errors = {stored_readings(row).get("net_errors_percent", {}).get("eth0") for row in rows}
    assert 1.5 in errors and errors <= {None, 0.0, 1.5}
    # Of each step's second of CPU time, 0.2 s stolen and 0.1 s waiting for I/O; stalls in every step.
    shares = [row for row in rows if row.cpu_steal_percent is not None]
    assert shares and {(row.cpu_steal_percent, row.cpu_iowait_percent, row.cpu_percent) for row in shares} == {
        (20.0, 10.0, 70.0)}
    assert any(row.psi_memory_full_percent and row.psi_io_full_percent for row in rows)
    assert latest.metrics["mem_percent"] == 75.0
    kills = [stored_readings(row)["oom_kills"][""] for row in rows if "oom_kills" in stored_readings(row)]
    assert kills and all(count % 2 == 0 for count in kills) and max(kills) > 0  # two kills a step

    assert units_stored is not None and units_stored.readings is not None
    assert units_stored.readings["unit_failed"] == {"service-01.service": 1.0}
    assert units_stored.readings["unit_restarts"] == {"service-02.service": 3.0}
    assert db.Rejected.select().count() == 0


# The crafted machine has many problems at once: each one's alert in a message of its own, not grouped.
ONE_BY_ONE = {"ALERT_GROUP_MIN": "50"}


def test_a_degraded_array_read_by_a_real_node_exporter_alerts_in_the_chat_and_recovers_once_rebuilt(
        telegram: FakeTelegram, tmp_path: Path) -> None:
    crafted = CraftedMachine(tmp_path / "machine")
    with watching(crafted, telegram, tmp_path, **ONE_BY_ONE):
        raid = telegram.wait_for_message(CHAT, lambda text: "RAID md0" in text, timeout=40)
        crafted.heal_md()
        cleared = telegram.wait_for_message(CHAT, lambda text: "RAID array degraded (md0) cleared" in text, timeout=30)
        status = ask(telegram, f"/status {CRAFTED}")

    # As the agent's alert says it (tests/test_conditions_end_to_end.py), but for the failed member: node_exporter
    # counts it without naming it.
    assert raid["text"].startswith(f"🚨 <b>{CRAFTED}</b>: RAID md0 degraded: 1 of 2 disks active, 1 failed\n")
    assert "critical" in raid["text"] and "What to do: Replace the failed disk" in raid["text"]
    assert [b["text"] for row in raid["reply_markup"]["inline_keyboard"] for b in row][:2] == [
        "✅ Correct", "❌ Expected here"]
    assert cleared["reply_to_message"]["message_id"] == raid["message_id"], "a reply to the alert"
    assert "RAID md0" not in status and "🛠" in status, "its other problems stay: a bond down, a temperature alarm"


def test_a_failing_disk_from_smartmons_textfile_or_smartctl_exporter_alerts_as_the_agents_does(
        telegram: FakeTelegram, tmp_path: Path) -> None:
    """smartmon.sh's file in node_exporter's textfile directory: sda quiet at first, then its sectors grow and the
    disk model says it is likely to fail; and a machine whose smartctl_exporter, a target of its own, says the same
    of its disk. Each a 💽 alert naming the disk, its model and serial, as an agent machine's
    (tests/test_conditions_end_to_end.py)."""
    crafted = CraftedMachine(tmp_path / "machine")
    crafted.textfile("smartmon.prom", textfile(smartmon(ATA_DISK, "/dev/sda")))
    failing = grown(ATA_DISK, reallocated=2000, pending=500)
    with watching(crafted, telegram, tmp_path, **ONE_BY_ONE) as watch:
        wait_until(lambda: db.DiskDay.select().where(db.DiskDay.p.is_null(False)).exists(), timeout=40,
                   what="the crafted machine's disk judged")
        assert not db.DiskDay.get().alert, "a few sectors, for years: no alert"
        crafted.textfile("smartmon.prom", textfile(smartmon(failing, "/dev/sda")))
        textfiles = telegram.wait_for_message(CHAT, lambda text: text.startswith(f"💽 <b>{CRAFTED}</b>"), timeout=30)

        now = time.time()  # node_exporter's scrapes of the machine, and smartctl_exporter's between them
        disk = smartctl_exporter({**failing, "serial_number": "Z1F0EDGE"}, "sda")
        assert watch.post(write_request({"edge-disks:9100": [(now - 10, machine()), (now, machine())],
                                         "edge-disks:9633": [(now - 5, disk)]})) == 204
        exporter = telegram.wait_for_message(CHAT, lambda text: text.startswith("💽 <b>edge-disks</b>"), timeout=30)
        status = ask(telegram, "/status edge-disks")

    for alert, device, serial in ((textfiles, CRAFTED, "Z1F0ABCD"), (exporter, "edge-disks", "Z1F0EDGE")):
        assert alert["text"].startswith(f"💽 <b>{device}</b>: disk sda (ST3000DM001-1CH166, serial {serial}) is likely "
                                        "to fail within 30 days (P "), alert["text"]
        assert "pending sectors" in alert["text"] and "What to do: Copy what matters off it" in alert["text"]
        assert [b["text"] for row in alert["reply_markup"]["inline_keyboard"] for b in row][:2] == [
            "✅ Replaced", "❌ Wrong"]
    assert "Memory" in status and "sda ST3000DM001-1CH166 Z1F0EDGE: P " in status, "one machine, its disk with it"
