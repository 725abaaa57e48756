"""The model lifecycle from chat: /retrain, /versions, /rollback over a versioned S3 bucket and a folder."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from agent.wire import Sample
from bot import db
from ml import artifact, model
from ml.store import open_store
from tests.fakes.bot_process import BotProcess
from tests.fakes.scenario import ADMIN, CHAT, WAIT_S, ask, bot_env, message, produce, wait_until
from tests.fakes.services import free_port
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow
KEY = "lifecycle-signing-key-0123456789"
STRESSED = {"cpu_percent": 99.0, "mem_percent": 97.0, "disk_percent": 40.0, "load_1m": 0.3}


def quiet_fleet(start: float, count: int) -> list[tuple[bytes, bytes]]:
    """Normal samples of three machines, deterministic."""
    return [
        (f"pc{i % 3}".encode(),
         message(f"pc{i % 3}", start + i, cpu_percent=5.0 + i % 40, mem_percent=30.0 + i % 25,
                 disk_percent=40.0 + i % 10, load_1m=0.05 + (i % 10) / 20, swap_percent=float(i % 5)))
        for i in range(count)
    ]


def final_text(telegram: FakeTelegram, chat: int, message_id: int, pattern: str, timeout: float = 60) -> str:
    """Wait until the bot's message `message_id` has been edited to match `pattern`."""
    def current() -> str:
        return next((m["text"] for m in telegram.messages(chat) if m["message_id"] == message_id), "")
    wait_until(lambda: re.search(pattern, current()) is not None, timeout=timeout, what=f"message matching {pattern}")
    return current()


def reply_to(telegram: FakeTelegram, command: str, pattern: str, user: int = ADMIN) -> dict:
    """Send a command and return the bot's reply that matches `pattern`."""
    mark = telegram.call_count()
    telegram.send_text(CHAT, command, user_id=user)
    return telegram.wait_for_message(CHAT, lambda text: re.search(pattern, text) is not None, after=mark,
                                     timeout=WAIT_S)


def press_and_wait_edit(telegram: FakeTelegram, message: dict, button_text: str, pattern: str) -> str:
    data = next(b["callback_data"] for row in message["reply_markup"]["inline_keyboard"] for b in row
                if b["text"] == button_text)
    telegram.press_button(CHAT, message["message_id"], data, user_id=ADMIN, username="admin")
    return final_text(telegram, CHAT, message["message_id"], pattern)


def test_retrain_versions_rollback_and_a_tampered_artifact_on_s3(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, s3_endpoint: str
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)  # no versioning yet: the bot turns it on and says so
    start = time.time() - 4000
    produce(kafka, topic, [*quiet_fleet(start, 600), (b"pc9", message("pc9", start + 700, **STRESSED))])
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic,
                  MODEL_STORE=f"s3://{bucket}/fleet", AWS_ENDPOINT_URL=s3_endpoint, MODEL_SIGNING_KEY=KEY)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        alert = telegram.wait_for_message(CHAT, lambda text: "pc9" in text, timeout=30)
        press_and_wait_edit(telegram, alert, "✅ Correct", "Acknowledged by")
        assert "enabled versioning" in bot.log
        db.open_database(url)
        wait_until(lambda: db.Metric.select().count() == 601, what="all samples stored")

        progress = reply_to(telegram, "/retrain", "Retraining")
        result = final_text(telegram, CHAT, progress["message_id"], "Retrain done")
        steps = [c.params["text"] for c in telegram.calls("editMessageText")
                 if c.params["message_id"] == progress["message_id"]]
        assert any("training" in s for s in steps) and any("evaluating" in s for s in steps)
        assert "v1 (old)" in result and "v2 (new)" in result and "F1" in result
        assert "v2 is active now" in result

        versions = ask(telegram, "/versions")
        assert re.search(r"▶ v2 .*\n\s+v1 ", versions), versions
        assert "601" in versions  # v2 was trained on every stored sample

        confirm = reply_to(telegram, "/rollback", "Roll back")
        press_and_wait_edit(telegram, confirm, "Roll back to v1", "v1 is active now")
        assert "active model v1" in ask(telegram, "/status pc9")
        model_store = open_store(f"s3://{bucket}/fleet", KEY)
        assert model_store.active() == 1
        assert len(s3.list_object_versions(Bucket=bucket, Prefix="fleet/model.skops")["Versions"]) == 2

        # The loop closes: the retrained model is surer still of the sample a person confirmed as stressed.
        labelled = db.Metric.get_by_id(db.Label.select().first().metric)
        sample = {name: getattr(labelled, name) for name in STRESSED}
        p_v1, p_v2 = (model.predict(artifact.loads(model_store.load(v)), [sample])[0] for v in (1, 2))
        assert p_v2 > p_v1

        # Someone swaps v2's artifact in the bucket: activating it is refused, v1 stays.
        forged = s3.put_object(Bucket=bucket, Key="fleet/model.skops", Body=model_store.load(1))
        index = json.loads(s3.get_object(Bucket=bucket, Key="fleet/index.json")["Body"].read())
        for record in index["versions"]:
            if record["version"] == 2:
                record["object_version"] = forged["VersionId"]
        s3.put_object(Bucket=bucket, Key="fleet/index.json", Body=json.dumps(index).encode())
        confirm = reply_to(telegram, "/rollback 2", "Roll back")
        refused = press_and_wait_edit(telegram, confirm, "Roll back to v2", "refused")
        assert "signature" in refused
        assert "v1 stays active" in refused
        assert model_store.active() == 1
        assert "active model v1" in ask(telegram, "/status pc9")
        assert bot.stop() == 0


def fill(url: str, count: int, start: float) -> None:
    """Store quiet samples directly, as if the poller had."""
    from agent.wire import parse

    db.open_database(url)
    samples = [parse(value) for _key, value in quiet_fleet(start, count)]
    db.store_batch(samples, [0.1] * count, 1, [])


def test_only_admins_change_the_model_and_bad_versions_get_a_clear_reply(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    fill(url, 50, time.time() - 100)
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("model v1 is active")
        for command in ("/retrain", "/rollback", "/rollback 1"):
            reply = reply_to(telegram, command, "admins", user=55)["text"]
            assert "Only admins" in reply and "55" in reply and "ADMIN_USER_IDS" in reply
        forged = telegram.press_button(CHAT, 1, "activate:1", user_id=55)
        assert "Only admins" in telegram.answer_for(forged).params["text"]

        assert "no model v9" in reply_to(telegram, "/rollback 9", "v9")["text"]
        assert "Usage" in reply_to(telegram, "/rollback latest", "Usage")["text"]
        assert "nothing to roll back" in reply_to(telegram, "/rollback", "roll back")["text"]
        assert "▶ v1" in ask(telegram, "/versions")
        detail = ask(telegram, "/versions 1")
        assert "v1 (active)" in detail and "Brier" in detail and "0.8-1.0" in detail, detail
        assert "no model v9" in ask(telegram, "/versions v9")
        assert "refused /retrain for user 55" in bot.log
        assert bot.stop() == 0
    assert [v.version for v in open_store(f"file:{tmp_path}/models").versions()] == [1]


def test_one_retrain_at_a_time_and_labels_that_conflict_with_a_scenario_are_held_back_and_named(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    fill(url, 20_000, time.time() - 30_000)  # enough rows that the second /retrain finds the first one running
    # This team calls a disk at 86 % trouble and said so thirty times: a model that learnt it would alert on
    # machines an operator calls busy but healthy, so the scenario table holds those labels back, and says so.
    full = db.store_batch([Sample("pc7", time.time() - 3000 + i, {"cpu_percent": 20.0, "disk_percent": 86.0})
                              for i in range(30)], [0.3] * 30, 1, [])
    for sample in full:
        db.add_label(sample.id, 1, ADMIN, "@alice")
    model_store = open_store(f"file:{tmp_path}/models")

    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("model v1 is active")
        progress = reply_to(telegram, "/retrain", "Retraining")
        busy = reply_to(telegram, "/retrain", "already running")
        assert busy["message_id"] != progress["message_id"]
        result = final_text(telegram, CHAT, progress["message_id"], "Retrain done")
        assert "held back 30 labels" in result and "(CPU 20, disk 86) conflicts with" in result
        assert "busy but healthy" in result and "fails" not in result
        wait_until(lambda: model_store.active() == 2, what="v2 active: it passes every operator scenario")
        assert "active model v2" in ask(telegram, "/status pc1")
        assert bot.stop() == 0


def test_s3_unreachable_during_retrain_saves_nothing_and_keeps_the_model(
    kafka: str, topic: str, telegram: FakeTelegram, tmp_path: Path, s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    url = f"sqlite:///{tmp_path}/rigwatch.sqlite3"
    fill(url, 200, time.time() - 1000)
    env = bot_env(telegram, tmp_path, url, KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_TOPIC=topic,
                  MODEL_STORE=f"s3://{bucket}/m", AWS_ENDPOINT_URL=endpoint, MODEL_SIGNING_KEY=KEY)
    try:
        with BotProcess(env, tmp_path / "bot.log") as bot:
            bot.wait_log("model v1 is active")
            server.stop()
            progress = reply_to(telegram, "/retrain", "Retraining")
            failed = final_text(telegram, CHAT, progress["message_id"], "failed")
            assert "Could not connect" in failed and "unchanged (v1)" in failed
            assert "active model v1" in ask(telegram, "/status pc1")
            assert bot.stop() == 0
    finally:
        # moto keeps its buckets in this process: a new server on the same port shows what was saved.
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        server.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        model_store = open_store(f"s3://{bucket}/m", KEY)
        assert [v.version for v in model_store.versions()] == [1]
        assert model_store.active() == 1
    finally:
        server.stop()
