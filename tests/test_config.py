"""Configuration: defaults, parsing, and one clear line naming the variable when a value is bad."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "123456:" + "A" * 30
OUR_VARIABLES = (
    "TELEGRAM_BOT_TOKEN", "TELEGRAM_API_URL", "ALLOWED_CHAT_IDS", "ADMIN_USER_IDS", "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "KAFKA_GROUP_ID", "MODEL_STORE", "ALERT_THRESHOLD",
    "LOG_LEVEL",
)


def test_defaults_follow_the_design() -> None:
    settings = load_settings({"TELEGRAM_BOT_TOKEN": TOKEN})

    assert settings.token == TOKEN
    assert settings.api_url == "https://api.telegram.org"
    assert settings.database_url == "sqlite:///data/rigwatch.sqlite3"
    assert settings.model_store == "file:models"
    assert settings.kafka_bootstrap is None, "no Kafka configured means single-host mode"
    assert settings.kafka_topic == "rigwatch.metrics"
    assert settings.kafka_group_id == "rigwatch-bot"
    assert settings.alert_threshold == 0.7
    assert settings.forecast_hours == 4
    assert settings.allowed_chat_ids == frozenset()
    assert settings.admin_user_ids == frozenset()
    assert settings.log_level == "INFO"
    assert settings.retention_days == 14
    assert (settings.alert_group_s, settings.alert_group_min, str(settings.timezone)) == (30, 3, "UTC")
    assert settings.remote_write_listen is None, "no receiver unless asked for"
    assert (settings.remote_write_token, settings.remote_write_device_label) == (None, "instance")
    assert (settings.kafka_topic_partitions, settings.kafka_unassigned_s) == (4, 60)


def test_the_bot_can_be_told_never_to_create_its_topic() -> None:
    settings = load_settings(with_token(KAFKA_TOPIC_PARTITIONS="0", KAFKA_UNASSIGNED_SECONDS="5"))

    assert (settings.kafka_topic_partitions, settings.kafka_unassigned_s) == (0, 5)


def test_the_remote_write_receiver_is_configured_from_three_variables() -> None:
    settings = load_settings(with_token(REMOTE_WRITE_LISTEN="0.0.0.0:9201", REMOTE_WRITE_TOKEN="t0ken-of-the-fleet!",
                                        REMOTE_WRITE_DEVICE_LABEL="host"))

    assert settings.remote_write_listen == ("0.0.0.0", 9201)
    assert settings.remote_write_token == "t0ken-of-the-fleet!" and "t0ken" not in repr(settings)
    assert settings.remote_write_device_label == "host"
    assert load_settings(with_token(REMOTE_WRITE_LISTEN="[::1]:9201")).remote_write_listen == ("::1", 9201)
    assert load_settings(with_token(REMOTE_WRITE_LISTEN=":9201")).remote_write_listen == (None, 9201)


def test_configured_values_are_used() -> None:
    settings = load_settings({
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": "http://127.0.0.1:8081/",
        "DATABASE_URL": "postgresql://rigwatch@db:5432/rigwatch",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka1:9092,kafka2:9092",
        "KAFKA_TOPIC": "fleet.metrics",
        "KAFKA_GROUP_ID": "bots",
        "MODEL_STORE": "s3://rigwatch-models/prod",
        "MODEL_SIGNING_KEY": "0123456789abcdef0123456789abcdef",
        "ALERT_THRESHOLD": "0.85",
        "FORECAST_HOURS": "1.5",
        "ALERT_GROUP_SECONDS": "60",
        "ALERT_GROUP_MIN": "5",
        "BOT_TIMEZONE": "Europe/Berlin",
    })

    assert settings.api_url == "http://127.0.0.1:8081"
    assert settings.database_url == "postgresql://rigwatch@db:5432/rigwatch"
    assert settings.kafka_bootstrap == "kafka1:9092,kafka2:9092"
    assert (settings.kafka_topic, settings.kafka_group_id) == ("fleet.metrics", "bots")
    assert settings.model_store == "s3://rigwatch-models/prod"
    assert settings.alert_threshold == 0.85
    assert load_settings(with_token(LOG_LEVEL="debug")).log_level == "DEBUG"
    assert settings.forecast_hours == 1.5
    assert (settings.alert_group_s, settings.alert_group_min, str(settings.timezone)) == (60, 5, "Europe/Berlin")


def test_id_lists_accept_spaces_and_negative_group_ids() -> None:
    settings = load_settings({
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "ALLOWED_CHAT_IDS": " -1001234567890 , 42,7 ,",
        "ADMIN_USER_IDS": "1001, 1002",
    })

    assert settings.allowed_chat_ids == frozenset({-1001234567890, 42, 7})
    assert settings.admin_user_ids == frozenset({1001, 1002})


def with_token(**env: str) -> dict[str, str]:
    return {"TELEGRAM_BOT_TOKEN": TOKEN, **env}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "TELEGRAM_BOT_TOKEN"),
        ({"TELEGRAM_BOT_TOKEN": "   "}, "TELEGRAM_BOT_TOKEN"),
        ({"TELEGRAM_BOT_TOKEN": "not-a-token"}, "TELEGRAM_BOT_TOKEN"),
        (with_token(ALLOWED_CHAT_IDS="12,abc"), "ALLOWED_CHAT_IDS"),
        (with_token(ADMIN_USER_IDS="1;2"), "ADMIN_USER_IDS"),
        (with_token(ALERT_THRESHOLD="1.5"), "ALERT_THRESHOLD"),
        (with_token(ALERT_THRESHOLD="high"), "ALERT_THRESHOLD"),
        (with_token(MODEL_STORE="ftp://x"), "MODEL_STORE"),
        (with_token(DATABASE_URL="mysql://x"), "DATABASE_URL"),
        (with_token(KAFKA_BOOTSTRAP_SERVERS="nohostport"), "KAFKA_BOOTSTRAP_SERVERS"),
        (with_token(LOG_LEVEL="verbose"), "LOG_LEVEL"),
        (with_token(FORECAST_HOURS="0"), "FORECAST_HOURS"),
        (with_token(FORECAST_HOURS="soon"), "FORECAST_HOURS"),
        (with_token(RETENTION_DAYS="0"), "RETENTION_DAYS"),
        (with_token(ALERT_GROUP_MIN="1"), "ALERT_GROUP_MIN"),
        (with_token(ALERT_GROUP_SECONDS="-5"), "ALERT_GROUP_SECONDS"),
        (with_token(BOT_TIMEZONE="Mars/Olympus"), "BOT_TIMEZONE"),
        (with_token(BOT_TIMEZONE="../../etc/passwd"), "BOT_TIMEZONE"),
        (with_token(REMOTE_WRITE_LISTEN="9201"), "REMOTE_WRITE_LISTEN"),
        (with_token(REMOTE_WRITE_LISTEN="0.0.0.0:70000"), "REMOTE_WRITE_LISTEN"),
        (with_token(REMOTE_WRITE_TOKEN="short"), "REMOTE_WRITE_TOKEN"),
        (with_token(REMOTE_WRITE_DEVICE_LABEL="host-name"), "REMOTE_WRITE_DEVICE_LABEL"),
        (with_token(KAFKA_TOPIC_PARTITIONS="-1"), "KAFKA_TOPIC_PARTITIONS"),
        (with_token(KAFKA_UNASSIGNED_SECONDS="0"), "KAFKA_UNASSIGNED_SECONDS"),
    ],
    ids=["no-token", "blank-token", "malformed-token", "chat-ids-abc", "admin-ids-semicolon", "threshold-1.5",
         "threshold-high", "model-store-ftp", "database-mysql", "kafka-no-port",
         "log-level-verbose", "forecast-hours-0", "forecast-hours-soon", "retention-0-days", "group-min-1",
         "group-seconds-negative", "timezone-unknown", "timezone-path", "listen-no-host", "listen-port-70000",
         "remote-write-token-short", "device-label-dash", "topic-partitions-negative", "unassigned-0-seconds"],
)
def test_a_bad_value_raises_config_error_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env)

    assert variable in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_malformed_token_is_not_repeated_in_the_error() -> None:
    secret = "my-secret-token-value-xyz"
    with pytest.raises(ConfigError) as raised:
        load_settings({"TELEGRAM_BOT_TOKEN": secret})

    assert secret not in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        load_settings(with_token(REMOTE_WRITE_TOKEN="secret with spaces"))

    assert "secret" not in str(raised.value).replace("REMOTE_WRITE_TOKEN", "")


def run_bot(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """`python -m bot` with only our variables from `env`; returns the finished process and its run time."""
    clean = {k: v for k, v in os.environ.items() if k not in OUR_VARIABLES}
    clean.update(DATABASE_URL=f"sqlite:///{tmp_path}/rigwatch.sqlite3", MODEL_STORE=f"file:{tmp_path}/models", **env)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=30
    )
    return done, time.monotonic() - started


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "ALLOWED_CHAT_IDS": "12,abc"}, "ALLOWED_CHAT_IDS"),
        ({}, "TELEGRAM_BOT_TOKEN"),
    ],
    ids=["bad-allowed-chat-ids", "no-token"],
)
def test_the_bot_stops_at_start_up_with_one_line_naming_the_variable(
    env: dict[str, str], variable: str, tmp_path: Path
) -> None:
    done, seconds = run_bot(env, tmp_path)

    assert done.returncode != 0
    assert seconds < 15
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert TOKEN not in done.stderr + done.stdout, "the bot token must never be printed"
    assert not (tmp_path / "models").exists(), "nothing is created when the configuration is bad"


def test_the_model_signing_key_is_required_for_s3_and_never_shown() -> None:
    key = "k3y-" + "s" * 28
    with pytest.raises(ConfigError, match=r"^MODEL_SIGNING_KEY is not set"):
        load_settings({"TELEGRAM_BOT_TOKEN": TOKEN, "MODEL_STORE": "s3://models/fleet"})
    with pytest.raises(ConfigError, match=r"^MODEL_SIGNING_KEY is too short") as caught:
        load_settings({"TELEGRAM_BOT_TOKEN": TOKEN, "MODEL_SIGNING_KEY": "short-secret"})
    assert "short-secret" not in str(caught.value)

    settings = load_settings({"TELEGRAM_BOT_TOKEN": TOKEN, "MODEL_STORE": "s3://models/fleet",
                              "MODEL_SIGNING_KEY": key})
    assert settings.model_signing_key == key and key not in repr(settings)
    assert load_settings({"TELEGRAM_BOT_TOKEN": TOKEN}).model_signing_key is None
