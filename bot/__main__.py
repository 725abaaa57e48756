"""`python -m bot`: the Rigwatch bot, the one process of the Procfile."""

from __future__ import annotations

import argparse
import asyncio
import sys

import peewee
from telegram.error import InvalidToken

from bot import logs
from bot.app import build_application, serve
from bot.config import ConfigError, load_settings
from bot.store import open_database
from ml.registry import StoreError, open_store


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bot", description="The Rigwatch bot.")
    parser.add_argument("--worker", action="store_true",
                        help="ingest, predict and send alerts, but leave commands and buttons to the one bot process")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"rigwatch: {exc}")
    logs.configure(settings.log_level, settings.token)
    try:
        open_database(settings.database_url)
        model_store = open_store(settings.model_store, settings.model_signing_key)
    except peewee.PeeweeException as exc:
        sys.exit(f"rigwatch: cannot open DATABASE_URL: {exc}".strip())
    except StoreError as exc:
        sys.exit(f"rigwatch: cannot open MODEL_STORE: {exc}")
    try:
        asyncio.run(serve(build_application(settings, model_store), worker=args.worker))
    except InvalidToken:
        # PTB's own text of this error holds the token: say it in our words.
        sys.exit(f"rigwatch: the Bot API at {settings.api_url} rejected TELEGRAM_BOT_TOKEN; "
                 "get a valid token from @BotFather")


if __name__ == "__main__":
    main()
