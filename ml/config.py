"""Configuration of the model tools (`python -m ml.*`), read and validated here and nowhere else in ml/.

The bot reads the same variables through these functions, so both programs accept the same values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///data/rigwatch.sqlite3"
DEFAULT_MODEL_STORE = "file:models"


class ConfigError(Exception):
    """A configuration value that cannot be used; the text names the variable."""


@dataclass(frozen=True)
class StoreSettings:
    database_url: str
    model_store: str


def database_url(env: Mapping[str, str]) -> str:
    """DATABASE_URL: a peewee URL of SQLite or Postgres."""
    raw = env.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
    if not re.match(r"(sqlite|postgres|postgresql)(\+pool)?://", raw):
        raise ConfigError("DATABASE_URL must be a sqlite:/// or postgresql:// URL")
    return raw


def model_store(env: Mapping[str, str]) -> str:
    """MODEL_STORE: file:<dir> or s3://bucket/prefix."""
    raw = env.get("MODEL_STORE", "").strip() or DEFAULT_MODEL_STORE
    if not (raw.startswith("file:") and len(raw) > 5) and not re.fullmatch(r"s3://[a-z0-9.\-]{3,63}(/.*)?", raw):
        raise ConfigError(f"MODEL_STORE must be file:<dir> or s3://bucket/prefix, got {raw[:60]!r}")
    return raw


def load_store_settings(env: Mapping[str, str] | None = None) -> StoreSettings:
    """The database and the model store from the environment; raises ConfigError naming a bad variable."""
    env = os.environ if env is None else env
    return StoreSettings(database_url=database_url(env), model_store=model_store(env))
