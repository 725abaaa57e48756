"""Forecast alerts and usual ranges as an operator meets them: Kafka messages, `python -m bot`, a Telegram chat.

Hours of samples are sent in seconds: the bot goes by the samples' own timestamps.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from bot import db
from bot.pipeline.forecast import BUCKET_S
from tests.fakes.bot_process import BotProcess
from tests.fakes.samples import messages
from tests.fakes.scenario import ADMIN, CHAT, ask, bot_env, message, produce, wait_until
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow
MINUTE = 60.0
QUIET = {"cpu_percent": 20.0, "mem_percent": 50.0}


def history(device: str, end: float, hours: float, disk: float = 47.5, step: float = 240) -> list[tuple[bytes, bytes]]:
    """A quiet machine: disk between 40 and 55 % around `disk`, one sample every `step` seconds until `end`."""
    count = int(hours * 3600 / step)
    return messages(device, end - count * step, [{**QUIET, "disk_percent": disk - 7.5 + i % 16} for i in range(count)],
                    step)


def fill(device: str, start: float, minutes: int, disk: float, per_10_min: float = 1.0) -> list[tuple[bytes, bytes]]:
    """The disk grows by `per_10_min` points every 10 minutes, one sample a minute."""
    disks = [min(100.0, disk + per_10_min * (m // 10)) for m in range(minutes)]
    return messages(device, start, [{**QUIET, "disk_percent": d} for d in disks], MINUTE)


def forecasts_for(telegram: FakeTelegram, device: str) -> list[str]:
    return [c.params["text"] for c in telegram.calls("sendMessage")
            if c.status == 200 and f"<b>{device}</b>: disk will be full" in str(c.params.get("text", ""))]


def is_status(text: str) -> bool:
    """A machine's /status, not an incident's message that came meanwhile."""
    return "Forecast" in text


def forecast_part(status: str) -> str:
    return status[status.index("Forecast"):]


def test_a_filling_disk_is_forecast_once_explained_and_judged_and_a_restart_does_not_repeat_it(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    # On the forecasts' 10-minute grid: an hour of fill is then six whole intervals, whatever the clock says.
    # (Starting mid-interval, the trend needs one interval more, and this first hour may end without one.)
    fill_start = (time.time() - 3 * 3600) // BUCKET_S * BUCKET_S
    flat = [(b"pc2", message("pc2", fill_start - 12 * 3600 + m * 2 * MINUTE, disk_percent=90.0 + m % 3 / 10))
            for m in range(7 * 60)]
    flat[-30] = (b"pc2", message("pc2", fill_start + 2 * 3600 - 60 * MINUTE + 1, disk_percent=99.9))  # one outlier
    produce(kafka, topic, history("pc1", fill_start, 24) + fill("pc1", fill_start, 60, 80.0) + flat)
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        alert = telegram.wait_for_message(CHAT, lambda text: "<b>pc1</b>: disk will be full" in text, timeout=30)
        first = alert["text"].splitlines()[0]
        now = float(re.search(r"now (\d+) %", first)[1])
        assert 80 < now < 95, first
        assert re.search(r"in about \d+ h \(now \d+ %, \+[5-7]\.\d %/h\)", first), first
        db.open_database(url)
        stored = db.Metric.select().count()
        produce(kafka, topic, fill("pc1", fill_start + 60 * MINUTE, 40, 86.0))
        wait_until(lambda: db.Metric.select().count() == stored + 40, what="the rest of the fill stored")
        assert re.search(r"usually 4\d–5\d %", alert["text"]), alert["text"]
        buttons = [b for row in alert["reply_markup"]["inline_keyboard"] for b in row]
        assert [b["text"] for b in buttons][:2] == ["✅ Right forecast", "❌ Wrong forecast"]
        right = buttons[0]["callback_data"]

        status = ask(telegram, "/status pc1", answer=is_status)
        assert "disk will be full in about" in forecast_part(status)
        assert re.search(r"Disk \(root\).*usually 4\d–5\d %", status), status
        assert "no trend toward an edge" in forecast_part(ask(telegram, "/status pc2", answer=is_status))

        incident_id = int(right.split(":")[1])
        for forged in (f"i:{incident_id}:ok", f"i:{incident_id + 1}:right", f"label:{incident_id}:1",
                       f"i:{incident_id}:maybe"):
            answer = telegram.answer_for(telegram.press_button(CHAT, alert["message_id"], forged, user_id=ADMIN))
            assert "not valid" in answer.params["text"], forged
        answer = telegram.answer_for(telegram.press_button(CHAT, alert["message_id"], right, user_id=ADMIN,
                                                           username="alice"))
        assert "right forecast" in answer.params["text"]
        edit = telegram.wait_for_call("editMessageText")
        edited = edit.params["text"]
        assert "Acknowledged by @alice" in edited and "<b>pc1</b>: disk will be full" in edited
        assert bot.stop() == 0
    assert len(forecasts_for(telegram, "pc1")) == 1
    assert forecasts_for(telegram, "pc2") == []
    assert [(f.value, f.user_id, f.incident.kind) for f in db.ForecastLabel.select()] == [(1, ADMIN, "forecast")]
    assert db.Label.select().count() == 0, "a verdict on a forecast is no stressed/normal label"

    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("forecasts restored for 2 devices")
        again = ask(telegram, "/status pc1", answer=is_status)
        assert forecast_part(again) == forecast_part(status), "same trend after a restart"
        stored = db.Metric.select().count()
        produce(kafka, topic, fill("pc1", fill_start + 100 * MINUTE, 20, 90.0))
        wait_until(lambda: db.Metric.select().count() == stored + 20, what="the fill goes on")
        time.sleep(1)  # a repeated forecast would be sent now
        assert bot.stop() == 0
    assert len(forecasts_for(telegram, "pc1")) == 1, "the episode was alerted before the restart"


def test_a_disk_that_is_cleaned_up_stops_its_forecast_and_a_new_fill_is_forecast_again(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    start = time.time() - 6 * 3600
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    produce(kafka, topic, history("pc3", start, 24) + fill("pc3", start, 100, 80.0))
    with BotProcess(env, tmp_path / "bot.log") as bot:
        telegram.wait_for_message(CHAT, lambda text: "<b>pc3</b>: disk will be full" in text, timeout=30)
        db.open_database(url)

        cleaned = [(b"pc3", message("pc3", start + (100 + m) * MINUTE, disk_percent=50.0)) for m in range(90)]
        produce(kafka, topic, cleaned)
        wait_until(lambda: db.Metric.select().count() == 360 + 100 + 90, what="the cleaned disk stored")
        wait_until(lambda: "no trend toward an edge" in forecast_part(ask(telegram, "/status pc3", answer=is_status)),
                   what="the forecast ended by the cleanup")

        produce(kafka, topic, fill("pc3", start + 190 * MINUTE, 100, 50.0, per_10_min=3.0))
        wait_until(lambda: len(forecasts_for(telegram, "pc3")) == 2, what="the second fill's forecast")
        assert bot.stop() == 0
    assert len(forecasts_for(telegram, "pc3")) == 2


def test_a_stressed_alert_names_its_drivers_with_the_machine_usual_range(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    end = time.time() - 60
    spike = (b"pc4", message("pc4", end, cpu_percent=20.0, mem_percent=50.0, disk_percent=99.4))
    produce(kafka, topic, [*history("pc4", end, 24), spike])
    produce(kafka, topic, [(b"new", message("new", end, cpu_percent=20.0, mem_percent=99.0, disk_percent=50.0))])
    env = bot_env(telegram, tmp_path, f"sqlite:///{tmp_path}/rigwatch.sqlite3", KAFKA_BOOTSTRAP_SERVERS=kafka,
                  KAFKA_TOPIC=topic)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        alert = telegram.wait_for_message(CHAT, lambda text: "<b>pc4</b> is stressed" in text, timeout=30)
        assert re.search(r"Disk \(root\) 99\.4 % \(usually 4\d–5\d % on pc4\)", alert["text"]), alert["text"]
        young = telegram.wait_for_message(CHAT, lambda text: "<b>new</b> is stressed" in text, timeout=30)
        assert "Memory 99 % (no usual range yet)" in young["text"]
        assert bot.stop() == 0
