"""A restart of the real bot on a store of many machines: samples are taken in and commands answered while the
machines' trends come back, and a restart reads one kept row per machine, not their history."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot import db
from schema.tables import TrendState
from tests.fakes.bot_process import BotProcess
from tests.fakes.fleet_store import fill, machine, new_samples
from tests.fakes.scenario import CHAT, bot_env, produce
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow
MACHINES = 3000
HOURS = 1.0  # of samples, one every 15 s: 720,000 of them
RESTORED = re.compile(r"forecasts restored for (\d+) devices in [\d.]+ s: (\d+) kept states and (\d+) samples after "
                      r"them read, (\d+) devices rebuilt from (\d+) recent samples")


@dataclass
class Start:
    """Seconds from launching the bot to its first new sample stored, its answer to /status and its forecasts
    restored, and what it said of them (devices, kept states, samples after them, rebuilt, recent samples)."""

    first_sample: float
    answered: float
    restored: float
    said: tuple[int, ...]


def start(env: dict[str, str], log: Path, telegram: FakeTelegram, kafka: str, topic: str, at: float) -> Start:
    """Start the bot with one new sample of every machine in the topic and /status of one machine waiting."""
    produce(kafka, topic, list(new_samples(MACHINES, at)))
    before = db.Metric.select(db.Metric.id).order_by(db.Metric.id.desc()).scalar()
    mark = telegram.call_count()
    telegram.send_text(CHAT, f"/status {machine(MACHINES // 2)}", user_id=CHAT)
    times: dict[str, float] = {}
    with BotProcess(env, log) as bot:
        launched = time.monotonic()
        while len(times) < 3:
            assert time.monotonic() - launched < 45, f"not all of sample, answer, restored: {times}\n{bot.log[-2000:]}"
            assert bot.proc is not None and bot.proc.poll() is None, bot.log[-2000:]
            now = time.monotonic() - launched
            if "sample" not in times and db.Metric.select(db.Metric.id).order_by(db.Metric.id.desc()).scalar() > before:
                times["sample"] = now
            if "answer" not in times and any(c.method == "sendMessage" for c in telegram.calls()[mark:]):
                times["answer"] = now
            if "restored" not in times and (said := RESTORED.search(bot.log)):
                times["restored"] = now
            time.sleep(0.02)
        assert bot.stop() == 0
    return Start(times["sample"], times["answer"], times["restored"], tuple(int(n) for n in said.groups()))


def test_samples_are_taken_in_and_commands_answered_while_the_trends_come_back_and_a_restart_reads_no_history(
    database_url: str, kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    end = time.time() - 120
    fill(database_url, MACHINES, int(MACHINES * HOURS * 3600 / 15), end)
    db.open_database(database_url)
    env = bot_env(telegram, tmp_path, database_url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)

    upgrade = start(env, tmp_path / "upgrade.log", telegram, kafka, topic, end + 15)

    # An upgrade from a version that kept no trends: rebuilt from the whole hour of every machine (and the new samples
    # stored before it was read), in the background.
    devices, states, after, rebuilt, recent = upgrade.said
    assert (devices, states, after, rebuilt) == (MACHINES, 0, 0, MACHINES), upgrade
    assert MACHINES * 240 <= recent <= MACHINES * 241, upgrade
    assert upgrade.first_sample < upgrade.restored and upgrade.answered < upgrade.restored, upgrade
    assert TrendState.select().count() == MACHINES, "kept at the graceful stop"

    restart = start(env, tmp_path / "restart.log", telegram, kafka, topic, end + 30)

    # One kept row per machine, and nothing of the history: at most the new samples stored since the start.
    devices, states, after, rebuilt, recent = restart.said
    assert (devices, states, rebuilt, recent) == (MACHINES, MACHINES, 0, 0), restart
    assert after <= MACHINES, restart
    assert db.Metric.select().count() == MACHINES * 242
