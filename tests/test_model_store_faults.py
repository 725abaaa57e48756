"""The real bot against a model store that is down, invalid, tampered with or from an older release: it
keeps ingesting and answering, says what is wrong once, never runs code from the store, and heals."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import boto3
import pandas as pd
import pytest
import skops.io as sio
from moto.server import ThreadedMotoServer

from agent.collect import default_device_id
from bot import db
from ml import artifact
from ml.store import open_store
from ml.training import train
from tests.fakes.bot_process import BotProcess
from tests.fakes.models import evil_pickle, legacy_entry, pickle_folder
from tests.fakes.scenario import ADMIN, CHAT, WAIT_S, ask, bot_env, chat_texts, wait_until
from tests.fakes.services import free_port, new_bucket
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.slow
KEY = "faults-signing-key-0123456789"
DEVICE = default_device_id()
NO_MODEL = "No model could be loaded"


def single_host(telegram: FakeTelegram, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The bot watching its own machine: samples keep coming without Kafka."""
    return bot_env(telegram, tmp_path, f"sqlite:///{tmp_path}/rigwatch.sqlite3", SAMPLE_INTERVAL_SECONDS="0.3",
                   **extra)


def status(telegram: FakeTelegram, env: dict[str, str]) -> str:
    """/status of this machine, once it has a stored sample."""
    db.open_database(env["DATABASE_URL"])
    wait_until(lambda: db.Metric.select().exists(), what="a stored sample")
    return ask(telegram, f"/status {DEVICE}")


def wait_chat(telegram: FakeTelegram, needle: str) -> str:
    return telegram.wait_for_message(CHAT, lambda text: needle in text, timeout=WAIT_S)["text"]


def edited_to(telegram: FakeTelegram, message_id: int, needle: str) -> str:
    """The text of the bot's message once it has been edited to contain `needle`."""
    def text() -> str:
        return next((m["text"] for m in telegram.messages(CHAT) if m["message_id"] == message_id), "")
    wait_until(lambda: needle in text(), what=f"message edited to {needle!r}")
    return text()


def test_s3_down_at_start_then_up_the_bot_answers_meanwhile_then_loads_a_model_and_predicts(
    telegram: FakeTelegram, tmp_path: Path, s3_endpoint: str
) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = single_host(telegram, tmp_path, MODEL_STORE="s3://models-later/fleet", MODEL_SIGNING_KEY=KEY,
                      AWS_ENDPOINT_URL=endpoint)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        warning = wait_chat(telegram, NO_MODEL)
        assert "Could not connect" in warning and "without a prediction" in warning
        assert "active model none" in status(telegram, env)

        server.start()
        try:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="models-later")
            wait_chat(telegram, "Model v1 is loaded")
            bot.wait_log("model v1 is active")
            db.open_database(env["DATABASE_URL"])
            wait_until(lambda: db.Metric.select().where(db.Metric.model_version == 1).exists(),
                       what="a sample predicted by v1")
            assert "by model v1; active model v1" in status(telegram, env)
            assert bot.stop() == 0
        finally:
            server.stop()
    assert bot.log.count("no model loaded") == 1
    assert sum(NO_MODEL in text for text in chat_texts(telegram)) == 1


def plant(endpoint: str, bucket: str, prefix: str, signature: str | None, version: int) -> None:
    """What someone who can write the bucket does: a model of theirs, its true digest, an entry made active."""
    s3 = boto3.client("s3", endpoint_url=endpoint)
    theirs = artifact.dumps(train(pd.DataFrame(), seed=version).pipeline)
    version_id = s3.put_object(Bucket=bucket, Key=f"{prefix}/model.skops", Body=theirs)["VersionId"]
    index = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/index.json")["Body"].read())
    entry = {**index["versions"][0], "version": version, "object_version": version_id,
             "sha256": hashlib.sha256(theirs).hexdigest(), "size": len(theirs), "signature": signature}
    index = {"active": version, "versions": [*index["versions"], entry]}
    s3.put_object(Bucket=bucket, Key=f"{prefix}/index.json", Body=json.dumps(index).encode())


def test_a_planted_artifact_with_a_forged_entry_is_refused_and_the_bot_keeps_its_model(
    telegram: FakeTelegram, tmp_path: Path, s3_endpoint: str
) -> None:
    bucket = new_bucket(boto3.client("s3", endpoint_url=s3_endpoint))
    env = single_host(telegram, tmp_path, MODEL_STORE=f"s3://{bucket}/fleet", MODEL_SIGNING_KEY=KEY,
                      AWS_ENDPOINT_URL=s3_endpoint)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        bot.wait_log("model v1 is active")
        plant(s3_endpoint, bucket, "fleet", None, 2)
        plant(s3_endpoint, bucket, "fleet", hashlib.sha256(b"a guess").hexdigest(), 3)

        for version, reason in ((2, "unsigned"), (3, "signature")):
            mark = telegram.call_count()
            telegram.send_text(CHAT, f"/rollback {version}", user_id=ADMIN)
            confirm = telegram.wait_for_message(CHAT, lambda text: "Roll back" in text, after=mark, timeout=WAIT_S)
            telegram.press_button(CHAT, confirm["message_id"], f"activate:{version}", user_id=ADMIN)
            refused = edited_to(telegram, confirm["message_id"], f"v{version} refused")
            assert reason in refused and "v1 stays active" in refused
            bot.wait_log(f"model v{version} refused: .*{reason}.*; keeping v1")
        assert "active model v1" in status(telegram, env)
        assert bot.stop() == 0

    # The planted version is the active one in the bucket now: a restart refuses it and says so.
    with BotProcess(env, tmp_path / "bot.log") as bot:
        warning = wait_chat(telegram, f"{NO_MODEL}: s3://{bucket}/fleet")
        assert "signature of model version 3" in warning
        assert "active model none" in status(telegram, env)
        assert bot.stop() == 0
    assert KEY not in bot.log


@pytest.mark.parametrize("kind", ["s3", "file"])
def test_a_pickle_that_runs_code_is_never_executed_whatever_the_index_says(
    telegram: FakeTelegram, tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    marker = tmp_path / "marker"
    payload = evil_pickle(marker)
    if kind == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = new_bucket(boto3.client("s3", endpoint_url=endpoint))
        s3 = boto3.client("s3", endpoint_url=endpoint)
        version_id = s3.put_object(Bucket=bucket, Key="fleet/model.pkl", Body=payload)["VersionId"]
        index = {"active": 1, "versions": [legacy_entry(1, payload, version_id)]}
        s3.put_object(Bucket=bucket, Key="fleet/index.json", Body=json.dumps(index).encode())
        extra = {"MODEL_STORE": f"s3://{bucket}/fleet", "MODEL_SIGNING_KEY": KEY, "AWS_ENDPOINT_URL": endpoint}
        reason, refusal = "unsigned", "unsigned index entry"
    else:  # a folder without a key: the digest matches, only the unpickler stands in the way
        pickle_folder(tmp_path / "models", [payload])
        extra = {}
        reason, refusal = "builtins.exec", "was not migrated"
    env = single_host(telegram, tmp_path, **extra)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        assert reason in wait_chat(telegram, "model version 1 not migrated")
        assert refusal in wait_chat(telegram, NO_MODEL)
        assert "active model none" in status(telegram, env)
        assert bot.stop() == 0
    assert not marker.exists()


def deep_index() -> bytes:
    return b'{"active": null, "versions": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def not_a_pipeline(folder: Path) -> bytes:
    """A valid skops file of a dict, with its true digest in the index."""
    data = sio.dumps({"coef": [1.0, 2.0]})
    (folder / "v0001.skops").write_bytes(data)
    entry = {**legacy_entry(1, data), "format": "skops"}
    return json.dumps({"active": 1, "versions": [entry]}).encode()


@pytest.mark.parametrize("variant", ["version is a path", "deeply nested", "not a pipeline"])
def test_an_invalid_index_or_artifact_leaves_the_bot_running_and_it_says_so(
    telegram: FakeTelegram, tmp_path: Path, variant: str
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    content = {
        "version is a path": lambda: json.dumps({"active": None, "versions": [
            {**legacy_entry(1, b"x"), "version": "../evil"}]}).encode(),
        "deeply nested": deep_index,
        "not a pipeline": lambda: not_a_pipeline(folder),
    }[variant]()
    (folder / "index.json").write_bytes(content)
    expected = "holds a dict, not a scikit-learn Pipeline" if variant == "not a pipeline" else \
        "index.json is not a valid model index"
    env = single_host(telegram, tmp_path)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        assert expected in wait_chat(telegram, NO_MODEL)
        assert "active model none" in status(telegram, env)
        assert bot.stop() == 0
    assert (folder / "index.json").read_bytes() == content, "the bot must not overwrite what it cannot read"


def test_an_old_pickle_folder_is_migrated_at_start_and_predicts(telegram: FakeTelegram, tmp_path: Path) -> None:
    pickle_folder(tmp_path / "models", [pickle.dumps(train(pd.DataFrame(), seed=n).pipeline) for n in (1, 2)])
    env = single_host(telegram, tmp_path)
    with BotProcess(env, tmp_path / "bot.log") as bot:
        assert "v1, v2" in wait_chat(telegram, "converted to skops under the same numbers")
        bot.wait_log("model v2 is active")
        db.open_database(env["DATABASE_URL"])
        wait_until(lambda: db.Metric.select().where(db.Metric.model_version == 2).exists(),
                   what="a sample predicted by v2")
        assert "by model v2; active model v2" in status(telegram, env)
        assert bot.stop() == 0
    with BotProcess(env, tmp_path / "bot.log") as bot:  # once: a restart finds nothing left to migrate
        bot.wait_log("model v2 is active", count=2)
        assert bot.stop() == 0
    assert bot.log.count("from pickle to skops") == 1
    assert [v.format for v in open_store(f"file:{tmp_path}/models").versions()] == ["skops", "skops"]


def test_an_s3_store_without_a_signing_key_stops_start_up_with_one_line(
    telegram: FakeTelegram, tmp_path: Path
) -> None:
    env = single_host(telegram, tmp_path, MODEL_STORE="s3://models/fleet", MODEL_SIGNING_KEY="")
    bot = BotProcess(env, tmp_path / "bot.log").start()
    assert bot.proc is not None and bot.proc.wait(timeout=WAIT_S) != 0
    assert bot.log.strip().splitlines()[-1].startswith("rigwatch: MODEL_SIGNING_KEY is not set")
