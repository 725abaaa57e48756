"""Prometheus scraping a real node_exporter every second and remote-writing to `python -m bot`: the machine shows
in the chat as any agent machine does, in single-host mode (stored by the bot itself) and in fleet mode (through
the Kafka topic)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from bot import db
from bot.intake.prompb import remote_pb2
from bot.intake.remote_write_http import PATH
from tests.fakes.bot_process import BotProcess
from tests.fakes.node_exporter import body, machine, write_request
from tests.fakes.scenario import ask, bot_env, wait_until
from tests.fakes.services import free_port, node_exporter, prometheus
from tests.fakes.telegram_api import FakeTelegram

pytestmark = [
    pytest.mark.slow,
]
TOKEN = "a-token-only-prometheus-knows"
DEVICE = "edge-node1"


def config(target: str, receiver_port: int) -> str:
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
        replacement: "{DEVICE}:9100"
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
