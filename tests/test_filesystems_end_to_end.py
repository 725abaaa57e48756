"""Every filesystem and the process behind an alert, with the real bot process, a real broker and the fake Bot
API; and the real agent reading a real second filesystem (a loop-mounted ext4 image)."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.wire import encode
from bot import db
from tests.fakes.bot_process import ROOT, BotProcess
from tests.fakes.filesystems import loop_filesystem
from tests.fakes.scenario import CHAT, ask, bot_env, produce
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow
FILESYSTEMS = {"/": 41.2, "/data": 99.5}
PROCESSES = {"cpu": [("java", 4121, 161.0), ("make", 9, 40.0)],
             "memory": [("java", 4121, 61.0), ("postgres", 88, 12.0)]}


def test_a_machine_with_two_filesystems_is_alerted_by_mount_point_with_the_process_behind_it(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, database_url: str
) -> None:
    ts = time.time() - 5
    metrics = {"cpu_percent": 30.0, "load_1m": 0.3, "mem_percent": 98.5, "disk_percent": 99.5}
    hostile = {"v": 1, "device": "pc1", "ts": ts + 1, "metrics": metrics,
               "filesystems": {"/data": 99.5, "/\u202eatad": 3}}
    produce(kafka, topic, [
        (b"pc1", encode("pc1", ts, metrics, filesystems=FILESYSTEMS, processes=PROCESSES)),
        (b"pc1", json.dumps(hostile).encode()),
        (b"pc1", encode("pc1", ts + 2, metrics, processes={"memory": [("java", -1, 61.0)]})),
    ])
    env = bot_env(telegram, tmp_path, database_url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        alert = telegram.wait_for_message(CHAT, lambda text: "<b>pc1</b> is stressed" in text, timeout=30)
        lines = alert["text"].splitlines()
        assert "• Disk /data 99.5 % (no usual range yet)" in lines
        assert "• Memory 98.5 % (no usual range yet) · top: java 61 % (pid 4121), postgres 12 %" in lines

        status = ask(telegram, "/status pc1")
        assert re.search(r"\nDisk / +41\.2 %\n", status) and re.search(r"\nDisk /data +99\.5 %", status), status
        assert "Top CPU: java 161 % (pid 4121), make 40 %" in status
        assert "Top memory: java 61 % (pid 4121), postgres 12 %" in status

        rejected = html.unescape(ask(telegram, "/rejected"))
        assert "filesystem mount point '/\\u202eatad' is empty, longer than 256 characters or has a control" in \
            rejected
        assert "process 'java' has pid -1, not a whole number" in rejected
        bot.wait_log("Application started")
        assert bot.stop() == 0
    db.open_database(database_url)
    (row,) = db.Metric.select()
    assert json.loads(row.filesystems) == FILESYSTEMS
    assert "Traceback" not in bot.log


def test_the_real_agent_reports_a_second_filesystem_that_the_bot_shows_and_alerts_on_when_full(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    folder = tmp_path / "mnt"
    folder.mkdir()
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    with loop_filesystem(folder, 99.6) as (mount, used), BotProcess(env, tmp_path / "bot.log") as bot:
        agent_env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka, "KAFKA_TOPIC": topic}
        agent = subprocess.Popen([sys.executable, "-m", "agent", "--device", "pc1", "--interval", "0.5"], cwd=ROOT,
                                 env=agent_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            alert = telegram.wait_for_message(CHAT, lambda text: "<b>pc1</b> is stressed" in text, timeout=30)
            status = ask(telegram, "/status pc1")
        finally:
            agent.terminate()
            agent.communicate(timeout=15)
        assert f"Disk {mount} {used:.1f} %" in alert["text"]
        assert f"Disk /…{mount[-17:]} {used:.1f} %" in status and re.search(r"\nDisk / +\d", status), status
        assert "Top memory:" in status, "some process always holds memory"
        assert bot.stop() == 0
    db.open_database(url)
    stored = db.latest_sample("pc1")
    assert stored is not None and stored.filesystems[mount] == pytest.approx(used, abs=0.1)
    assert stored.metrics["disk_percent"] == max(stored.filesystems.values())
