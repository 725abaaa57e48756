"""The bot's configuration: read and validated from the environment here and nowhere else."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ml.config import ConfigError, database_url, model_signing_key, model_store
from schema.oncall import Dependency, parse_dependencies

__all__ = ["ConfigError", "Settings", "load_settings"]


@dataclass(frozen=True)
class Settings:
    token: str
    api_url: str
    allowed_chat_ids: frozenset[int]
    admin_user_ids: frozenset[int]
    database_url: str
    kafka_bootstrap: str | None
    kafka_topic: str
    kafka_group_id: str
    kafka_session_timeout_ms: int
    model_store: str
    model_signing_key: str | None = field(repr=False)  # a secret: never in a repr or a log
    alert_threshold: float
    alert_hysteresis: float
    recover_samples: int
    alert_repeat_s: float
    alert_edit_s: float
    silent_after_s: float | None  # None: 3 x each device's usual interval, at least 60 s
    forecast_hours: float
    sample_interval_s: float
    poll_interval_s: float
    batch_size: int
    log_level: str
    retention_days: float
    alert_group_s: float = 30.0
    alert_group_min: int = 3
    timezone: tzinfo = UTC
    remote_write_listen: tuple[str | None, int] | None = None  # (host, port); host None: every interface
    remote_write_token: str | None = field(default=None, repr=False)  # a secret: never in a repr or a log
    remote_write_device_label: str = "instance"
    dependencies: tuple[Dependency, ...] = ()
    kafka_topic_partitions: int = 4  # of the topic the bot creates when it is missing; 0: it never creates it
    kafka_unassigned_s: float = 60.0  # a consumer with no partition this long says so (log, /status)


def _id_set(env: Mapping[str, str], name: str) -> frozenset[int]:
    raw = env.get(name, "").strip()
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    bad = [part for part in ids if not re.fullmatch(r"-?\d{1,20}", part)]
    if bad:
        raise ConfigError(f"{name} must be comma-separated numeric ids, got {bad[0][:30]!r}")
    return frozenset(int(part) for part in ids)


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw[:30]!r}") from None
    if not (low <= value <= high):
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {raw[:30]!r}")
    return value


def _timezone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"BOT_TIMEZONE must be an IANA time zone such as Europe/Berlin, got {name[:40]!r}") from None


MIN_REMOTE_WRITE_TOKEN_CHARS = 16


def _listen(raw: str) -> tuple[str | None, int] | None:
    """REMOTE_WRITE_LISTEN: host:port, [v6 address]:port, or :port for every interface; empty: off."""
    if not raw:
        return None
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]*):(\d{1,5})", raw)
    if not match or not 1 <= int(match[2]) <= 65535:
        raise ConfigError(f"REMOTE_WRITE_LISTEN must be host:port (port 1 to 65535), got {raw[:60]!r}")
    host = match[1].strip("[]")
    return host or None, int(match[2])


def _remote_write_token(raw: str) -> str | None:
    """REMOTE_WRITE_TOKEN: a bearer token; never repeated in an error."""
    if not raw:
        return None
    if len(raw) < MIN_REMOTE_WRITE_TOKEN_CHARS or not re.fullmatch(r"[\x21-\x7e]+", raw):
        raise ConfigError(f"REMOTE_WRITE_TOKEN must be at least {MIN_REMOTE_WRITE_TOKEN_CHARS} printable ASCII "
                          "characters without spaces")
    return raw


def _label_name(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", raw):
        raise ConfigError(f"REMOTE_WRITE_DEVICE_LABEL must be a Prometheus label name, got {raw[:60]!r}")
    return raw


def _dependencies(raw: str) -> tuple[Dependency, ...]:
    """DEPENDENCIES: "rack1-* on sw-rack1; rack2-* on sw-rack2", or the path of a file with one rule a line."""
    if not raw:
        return ()
    text = raw
    if " on " not in raw.lower():
        try:
            text = Path(raw).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"DEPENDENCIES must be rules such as 'rack1-* on sw-rack1' or a readable file of "
                              f"them; {raw[:60]!r} cannot be read ({exc.__class__.__name__})") from None
    try:
        return tuple(parse_dependencies(text))
    except ValueError as exc:
        raise ConfigError(f"DEPENDENCIES: {exc}") from None


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(raw: str) -> str:
    if raw.upper() not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw[:30]!r}")
    return raw.upper()


def load_settings(env: Mapping[str, str] | None = None, *, require_token: bool = True) -> Settings:
    """Settings from the environment; raises ConfigError naming the first bad variable."""
    env = os.environ if env is None else env
    token = env.get("TELEGRAM_BOT_TOKEN", "").strip()
    if require_token and not re.fullmatch(r"\d+:[A-Za-z0-9_-]{20,}", token):
        what = "is not set" if not token else "does not look like a bot token (digits:letters)"
        raise ConfigError(f"TELEGRAM_BOT_TOKEN {what}; get one from @BotFather")
    api_url = env.get("TELEGRAM_API_URL", "").strip().rstrip("/") or "https://api.telegram.org"
    if not re.match(r"https?://[^/\s]+", api_url):
        raise ConfigError(f"TELEGRAM_API_URL must be an http(s) URL, got {api_url[:60]!r}")
    bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() or None
    if bootstrap and not re.fullmatch(r"[\w.\-\[\]:]+:\d+(,[\w.\-\[\]:]+:\d+)*", bootstrap):
        raise ConfigError(f"KAFKA_BOOTSTRAP_SERVERS must be host:port[,host:port], got {bootstrap[:60]!r}")
    threshold = _number(env, "ALERT_THRESHOLD", 0.7, 0.0, 1.0)
    silent_after = env.get("SILENT_AFTER", "").strip()
    return Settings(
        token=token,
        api_url=api_url,
        allowed_chat_ids=_id_set(env, "ALLOWED_CHAT_IDS"),
        admin_user_ids=_id_set(env, "ADMIN_USER_IDS"),
        database_url=database_url(env),
        kafka_bootstrap=bootstrap,
        kafka_topic=env.get("KAFKA_TOPIC", "").strip() or "rigwatch.metrics",
        kafka_group_id=env.get("KAFKA_GROUP_ID", "").strip() or "rigwatch-bot",
        kafka_session_timeout_ms=int(_number(env, "KAFKA_SESSION_TIMEOUT_MS", 10000, 1000, 300000)),
        model_store=model_store(env),
        model_signing_key=model_signing_key(env, model_store(env)),
        alert_threshold=threshold,
        alert_hysteresis=_number(env, "ALERT_HYSTERESIS", 0.15, 0.0, threshold),
        recover_samples=int(_number(env, "RECOVER_SAMPLES", 3, 1, 1000)),
        alert_repeat_s=60 * _number(env, "ALERT_REPEAT_MINUTES", 30, 0, 7 * 24 * 60),
        alert_edit_s=_number(env, "ALERT_EDIT_SECONDS", 60, 1, 3600),
        silent_after_s=_number(env, "SILENT_AFTER", 0, 10, 7 * 86400) if silent_after else None,
        forecast_hours=_number(env, "FORECAST_HOURS", 4, 0.25, 7 * 24),
        sample_interval_s=_number(env, "SAMPLE_INTERVAL_SECONDS", 5, 0.1, 3600),
        poll_interval_s=_number(env, "POLL_INTERVAL_SECONDS", 1, 0.05, 60),
        batch_size=int(_number(env, "BATCH_SIZE", 5000, 1, 100000)),
        log_level=_log_level(env.get("LOG_LEVEL", "").strip() or "INFO"),
        retention_days=_number(env, "RETENTION_DAYS", 14, 1, 36500),
        alert_group_s=_number(env, "ALERT_GROUP_SECONDS", 30, 0, 3600),
        alert_group_min=int(_number(env, "ALERT_GROUP_MIN", 3, 2, 1000)),
        timezone=_timezone(env.get("BOT_TIMEZONE", "").strip() or "UTC"),
        remote_write_listen=_listen(env.get("REMOTE_WRITE_LISTEN", "").strip()),
        remote_write_token=_remote_write_token(env.get("REMOTE_WRITE_TOKEN", "").strip()),
        remote_write_device_label=_label_name(env.get("REMOTE_WRITE_DEVICE_LABEL", "").strip() or "instance"),
        dependencies=_dependencies(env.get("DEPENDENCIES", "").strip()),
        kafka_topic_partitions=int(_number(env, "KAFKA_TOPIC_PARTITIONS", 4, 0, 10000)),
        kafka_unassigned_s=_number(env, "KAFKA_UNASSIGNED_SECONDS", 60, 1, 86400),
    )
