"""`python -m bot`: the Rigwatch bot, the one process of the Procfile."""

from __future__ import annotations

import logging
import sys

import peewee
from telegram import Update

from bot.app import build_application
from bot.config import ConfigError, load_settings
from bot.store import open_database
from ml.registry import StoreError, open_store


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request URL at INFO, and the URL holds the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("librdkafka").setLevel(logging.ERROR)
    try:
        settings = load_settings()
        open_database(settings.database_url)
        model_store = open_store(settings.model_store, settings.model_signing_key)
    except ConfigError as exc:
        sys.exit(f"rigwatch: {exc}")
    except peewee.PeeweeException as exc:
        sys.exit(f"rigwatch: cannot open DATABASE_URL: {exc}".strip())
    except StoreError as exc:
        sys.exit(f"rigwatch: cannot open MODEL_STORE: {exc}")
    build_application(settings, model_store).run_polling(allowed_updates=Update.ALL_TYPES)


if __name__ == "__main__":
    main()
