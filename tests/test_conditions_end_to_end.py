"""Conditions end to end: the real agent reads a machine (a made-up /proc and /sys it is pointed at, with a smartctl
of the test's answering for its disk, or the real one with a real loop-mounted filesystem), publishes to a real
broker, and the real bot process alerts in the fake Bot API naming the object, replies when it clears, and shows it
in /status."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import db
from bot.db import StoredSample
from tests.fakes import filesystems
from tests.fakes.bot_process import ROOT, BotProcess
from tests.fakes.machine import MachineTree
from tests.fakes.scenario import CHAT, ask, bot_env, chat_texts, wait_until
from tests.fakes.smartctl import ATA_DISK, FakeSmartctl, grown, unreadable
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow
EMPTY = StoredSample(0, "", 0.0, {}, None, None, readings={})
HEALTHY_MDSTAT = """Personalities : [raid1]
md0 : active raid1 sdc[1] sdb[0]
      1046528 blocks super 1.2 [2/2] [UU]

unused devices: <none>
"""


@contextlib.contextmanager
def agent(kafka: str, topic: str, device: str, *options: str,
          smartctl: Path | None = None) -> Iterator[subprocess.Popen]:
    """The real agent, publishing every half second until the block ends (with the test's smartctl, from its folder,
    first on its PATH)."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka, "KAFKA_TOPIC": topic}
    if smartctl is not None:
        env["PATH"] = f"{smartctl}{os.pathsep}{env.get('PATH', '')}"
    process = subprocess.Popen([sys.executable, "-m", "agent", "--device", device, "--interval", "0.5", *options],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        process.terminate()
        process.communicate(timeout=15)


def test_a_degraded_array_and_oom_kills_read_by_the_agent_alert_and_the_array_recovers(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path,
) -> None:
    machine = MachineTree(tmp_path / "db3")
    machine.degraded_md_arrays()
    machine.log("Linux version 6.1.0")  # the kernel log is there from the start: the agent reads what comes after
    # Its three arrays' alerts would come as one group message: here each problem is read in its own message.
    env = bot_env(telegram, tmp_path, f"sqlite:///{tmp_path}/rigwatch.sqlite3", KAFKA_BOOTSTRAP_SERVERS=kafka,
                  KAFKA_TOPIC=topic, ALERT_GROUP_MIN="10")
    with BotProcess(env, tmp_path / "bot.log") as bot, agent(kafka, topic, "db3", *machine.options):
        raid = telegram.wait_for_message(CHAT, lambda text: "RAID md0" in text, timeout=40)

        machine.log("Out of memory: Killed process 4121 (java) total-vm:8388608kB, anon-rss:7340032kB")
        machine.vmstat(oom_kill=1, pgmajfault=0)
        oom = telegram.wait_for_message(CHAT, lambda text: "for memory" in text, timeout=30)

        machine.write("proc/mdstat", HEALTHY_MDSTAT)
        machine.write("sys/block/md0/md/dev-sdb/state", "in_sync\n")
        cleared = telegram.wait_for_message(CHAT, lambda text: "RAID array degraded (md0) cleared" in text,
                                            timeout=30)
        telegram.wait_for_message(CHAT, lambda text: "(md127) cleared" in text, timeout=30)  # gone from mdstat
        status = ask(telegram, "/status db3")
        assert bot.stop() == 0

    assert raid["text"].startswith("🚨 <b>db3</b>: RAID md0 degraded: 1 of 2 disks active, sdb failed\n")
    assert "What to do: Replace the failed disk" in raid["text"]
    assert [b["text"] for row in raid["reply_markup"]["inline_keyboard"] for b in row][:2] == [
        "✅ Correct", "❌ Expected here"]
    assert oom["text"].startswith(
        "🛠 <b>db3</b>: the kernel killed 1 process for memory in 30 min: java (pid 4121)\n")
    assert cleared["reply_to_message"]["message_id"] == raid["message_id"], "a reply to the alert"
    assert "🛠 the kernel killed 1 process for memory" in status, "still open: within its 30 minutes"
    assert "Not readable here:" in status and "systemd (" in status, "never taken for no failed unit"
    assert "Traceback" not in bot.log


def test_a_real_filesystem_remounted_read_only_under_the_real_agent_alerts(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path,
) -> None:
    folder = tmp_path / "mnt"
    folder.mkdir()
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    with filesystems.loop_filesystem(folder, 10) as (mount, _used), BotProcess(env, tmp_path / "bot.log") as bot, \
            agent(kafka, topic, "db4"):
        db.open_database(url)
        wait_until(lambda: (db.latest_sample("db4") or EMPTY).readings.get("readonly", {}).get(mount) == 0,
                   what="the bot stored the filesystem writable")
        filesystems.run("mount", "-o", "remount,ro", mount)
        alert = telegram.wait_for_message(CHAT, lambda text: "remounted read-only" in text, timeout=40)
        assert bot.stop() == 0

    assert alert["text"].startswith(f"🚨 <b>db4</b>: {mount} was remounted read-only\n")
    assert "dmesg" in alert["text"]


def test_a_disk_failing_under_the_real_agent_alerts_and_its_alert_stays_while_the_disk_cannot_be_read(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path,
) -> None:
    """The machine's disks, sda and sdb, as smartctl answers for them: sda scarred but quiet at first; then its
    reallocated and pending sectors grow, and the disk model says it is likely to fail: a 💽 alert naming the disk, its
    model and serial. Then smartctl cannot open it any more (an I/O error) while sdb still answers: sda is not gone,
    its alert stays open and /status says the disk cannot be read."""
    machine = MachineTree(tmp_path / "nas5")
    machine.write("sys/block/sdb/size", "1000000\n")
    smartctl = FakeSmartctl(tmp_path / "smartctl")
    smartctl.answer("sda", ATA_DISK)
    smartctl.answer("sdb", {**ATA_DISK, "serial_number": "Z1F0CALM"})
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    with BotProcess(env, tmp_path / "bot.log") as bot, \
            agent(kafka, topic, "nas5", *machine.options, "--smart-interval", "1", smartctl=smartctl.folder):
        db.open_database(url)
        wait_until(lambda: db.DiskDay.select().where(db.DiskDay.p.is_null(False)).count() == 2, timeout=40,
                   what="the disks judged")
        assert not any(day.alert for day in db.DiskDay.select()), "a few sectors, for years: no alert"
        smartctl.answer("sda", grown(ATA_DISK, reallocated=2000, pending=500))
        alert = telegram.wait_for_message(CHAT, lambda text: text.startswith("💽"), timeout=30)

        smartctl.answer("sda", unreadable(2, "Smartctl open device: /dev/sda failed: Input/output error"))
        wait_until(lambda: "smart sda" in ((db.latest_sample("nas5") or EMPTY).unreadable or {}), timeout=30,
                   what="the disk said unreadable")
        status = ask(telegram, "/status nas5")  # a few samples after: each would have resolved the alert before
        assert bot.stop() == 0

    assert alert["text"].startswith("💽 <b>nas5</b>: disk sda (ST3000DM001-1CH166, serial Z1F0ABCD) is likely to fail "
                                    "within 30 days (P "), alert["text"]
    assert "pending sectors" in alert["text"] and "What to do: Copy what matters off it" in alert["text"]
    buttons = [b["text"] for row in alert["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons[:2] == ["✅ Replaced", "❌ Wrong"]
    assert "is likely to fail within 30 days" in status, "still open"
    [unread] = [line for line in status.splitlines() if line.startswith("Not readable here:")]
    assert "smart sda (smartctl could not open it: Input/output error)" in unread
    assert "sda ST3000DM001-1CH166 Z1F0ABCD: P " in status and "not readable now" in status
    assert not [text for text in chat_texts(telegram) if "no longer on the machine" in text]
    assert "Traceback" not in bot.log
