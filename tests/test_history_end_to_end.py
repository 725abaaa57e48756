"""An incident's history with the real bot process, a real broker and the fake Bot API: it opens, someone answers,
it recovers, and its post-mortem is a document a person can read."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.fakes.bot_process import BotProcess
from tests.fakes.samples import messages
from tests.fakes.scenario import CHAT, WAIT_S, ask, bot_env, current, press, produce, wait_until
from tests.fakes.telegram_api import FakeTelegram

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]
HEALTHY = {"cpu_percent": 20.0, "load_1m": 0.3, "mem_percent": 50.0, "disk_percent": 50.0}
FULL_DISK = {**HEALTHY, "disk_percent": 99.5}


def test_an_answered_and_recovered_incident_has_a_report_a_person_can_read(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    env = bot_env(telegram, tmp_path, f"sqlite:///{tmp_path}/rigwatch.sqlite3", KAFKA_BOOTSTRAP_SERVERS=kafka,
                  KAFKA_TOPIC=topic, BOT_TIMEZONE="Asia/Kolkata")  # no summer time: always IST
    start = time.time() - 120
    with BotProcess(env, tmp_path / "bot.log") as bot:
        produce(kafka, topic, messages("pc1", start, [FULL_DISK] * 3))
        alert = telegram.wait_for_message(CHAT, lambda text: "<b>pc1</b> is stressed" in text)
        assert "labelled stressed" in press(telegram, alert, "✅ Correct", "bob")
        produce(kafka, topic, messages("pc1", start + 15, [HEALTHY] * 3))
        wait_until(lambda: "recovered" in current(telegram, alert["message_id"])["text"], what="recovered")

        listed = ask(telegram, "/history pc1")
        number = int(re.search(r"#(\d+) <b>pc1</b> · stressed · .* IST · lasted \d+ s · @bob pressed correct",
                               listed)[1])
        mark = telegram.call_count()
        telegram.send_text(CHAT, f"/report {number}")
        document = telegram.wait_for_document(CHAT, after=mark, timeout=WAIT_S)
        chart = telegram.wait_for_photo(CHAT, after=mark, timeout=WAIT_S)
        assert bot.stop() == 0

    assert document.params["document"]["filename"] == f"incident-{number}-pc1.md"
    assert chart.result["reply_to_message"]["message_id"] == document.result["message_id"]
    report = document.params["document"]["data"].decode()
    assert report.startswith(f"# Incident #{number}: pc1 stressed\n\n## Summary\n\n- **Machine:** pc1\n")
    assert re.search(r"- \*\*Duration:\*\* lasted \d+ s\n", report) and "- **Peak:** P(stressed) " in report
    assert re.search(r"- \*\*Answered:\*\* @bob pressed correct after \d+ s\n", report)
    assert "| Disk (root) | 99.5 % | 50 % |" in report, "what drove it, at its worst and at its end"
    samples = report.split("## Samples")[1].split("## Timeline")[0]
    assert "each row a sample:\n\n| time | CPU | Memory | Disk (root) | P(stressed) |" in samples
    rows = re.findall(r"^\| \d\d:\d\d:\d\d \| 20 % \| 50 % \| ([\d.]+) % \| \d+% \|$", samples, re.MULTILINE)
    assert rows == ["99.5"] * 3 + ["50"] * 3, samples
    timeline = re.findall(r"^- \d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST: (.+)$", report.split("## Timeline")[1],
                          re.MULTILINE)
    assert timeline[0] == "opened: pc1 stressed"
    assert timeline.index("@bob pressed correct") < timeline.index("resolved: recovered")
    assert f"message {alert['message_id']} sent to chat {CHAT}" in timeline
    assert any(line.startswith(f"its message in chat {CHAT} edited") for line in timeline)
    assert "Traceback" not in bot.log
