"""Configuration of the model tools (`python -m ml.*`), read and validated here and nowhere else in ml/.

The bot reads the same variables through these functions, so both programs accept the same values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.vocabulary import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///data/rigwatch.sqlite3"
DEFAULT_MODEL_STORE = "file:models"
MIN_SIGNING_KEY_CHARS = 16


@dataclass(frozen=True)
class StoreSettings:
    database_url: str
    model_store: str
    model_signing_key: str | None = field(default=None, repr=False)  # a secret: never in a repr or a log


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


def model_signing_key(env: Mapping[str, str], store: str) -> str | None:
    """MODEL_SIGNING_KEY: the HMAC key of the model index; required for s3:// stores, whose bucket others may
    write. The value is never echoed in an error."""
    raw = env.get("MODEL_SIGNING_KEY", "").strip()
    if not raw:
        if store.startswith("s3://"):
            raise ConfigError("MODEL_SIGNING_KEY is not set; an s3:// MODEL_STORE needs it to sign and verify "
                              "model versions (e.g. the output of `openssl rand -hex 32`)")
        return None
    if len(raw) < MIN_SIGNING_KEY_CHARS:
        raise ConfigError(f"MODEL_SIGNING_KEY is too short: use at least {MIN_SIGNING_KEY_CHARS} random characters")
    return raw


def load_store_settings(env: Mapping[str, str] | None = None) -> StoreSettings:
    """The database and the model store from the environment; raises ConfigError naming a bad variable."""
    env = os.environ if env is None else env
    store = model_store(env)
    return StoreSettings(database_url=database_url(env), model_store=store,
                         model_signing_key=model_signing_key(env, store))
