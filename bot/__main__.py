"""`python -m bot`: the Rigwatch bot, the one process of the Procfile."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit

import peewee
from telegram.error import InvalidToken

from agent.log_once import Outage
from agent.vocabulary import command_name
from bot import logs
from bot.app import build_application, serve
from bot.chat.bot_api import RETRY_MAX_S
from bot.config import ConfigError, load_settings
from bot.db import open_database
from bot.retry import retrying
from ml.store import FileStore, StoreError, open_store

log = logging.getLogger("bot")
# What a database that is down, starting or out of reach says. Anything else (a wrong password, a database
# that does not exist) is a mistake in DATABASE_URL, said at once.
UNREACHABLE = ("connection refused", "timeout expired", "the database system is starting up",
               "the database system is shutting down", "could not translate host name", "no such file or directory",
               "server closed the connection unexpectedly")


def _unreachable(error: BaseException) -> bool:
    return isinstance(error, peewee.OperationalError) and any(text in str(error).lower() for text in UNREACHABLE)


def where(database_url: str) -> str:
    """Where DATABASE_URL keeps the data, to say in the log: an SQLite file's absolute path (a relative one is
    relative to the folder the bot was started in), a server without its password."""
    parsed = urlsplit(database_url)
    if parsed.scheme.startswith("sqlite"):
        path = database_url.split("://", 1)[1][1:]
        return str(Path(path).resolve()) if path and path != ":memory:" else database_url
    return f"{parsed.scheme}://{parsed.hostname}{f':{parsed.port}' if parsed.port else ''}{parsed.path}"


def open_database_when_up(url: str) -> None:
    """Open the database, waiting with backoff while it is down or starting: a fleet's services start in any
    order. The log says so once, and once more when it answers."""
    outage = Outage(log, "the database is unreachable (%s); retrying with backoff", "the database is reachable")
    for attempt in retrying(_unreachable, lambda error: outage.down(str(error).strip().splitlines()[0]),
                            max_s=RETRY_MAX_S):
        with attempt:
            open_database(url)
    outage.up()


M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 2


def fewer_malloc_arenas() -> None:
    """glibc gives a thread that allocates while another does an arena of its own, up to eight per CPU, and each
    keeps what the batches it served freed: on a backlog of big messages the bot's threads (ingestion, the
    event loop's workers, librdkafka) held about 400 MiB, with two arenas 330 MiB at the same pace
    (docs/performance.md, the hot path). Elsewhere (another C library) nothing changes."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):
        return


def main(argv: list[str] | None = None) -> None:
    fewer_malloc_arenas()  # before the threads start
    parser = argparse.ArgumentParser(prog=command_name("bot"), description=(
        "The Rigwatch bot: reads metrics (Kafka, this machine, Prometheus remote write), predicts, alerts and "
        "answers in Telegram. Configured by environment variables: see docs/configuration.md."))
    parser.add_argument("--worker", action="store_true",
                        help="ingest, predict and send alerts, but leave commands and buttons to the one bot process")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"rigwatch: {exc}")
    logs.configure(settings.log_level, settings.token)
    try:
        open_database_when_up(settings.database_url)
        model_store = open_store(settings.model_store, settings.model_signing_key)
    except peewee.PeeweeException as exc:
        sys.exit(f"rigwatch: cannot open DATABASE_URL: {exc}".strip())
    except StoreError as exc:
        sys.exit(f"rigwatch: cannot open MODEL_STORE: {exc}")
    log.info("storing metrics in %s and model versions in %s", where(settings.database_url),
             model_store.root.resolve() if isinstance(model_store, FileStore) else model_store.describe)
    try:
        asyncio.run(serve(build_application(settings, model_store), worker=args.worker))
    except InvalidToken:
        # PTB's own text of this error holds the token: say it in our words.
        sys.exit(f"rigwatch: the Bot API at {settings.api_url} rejected TELEGRAM_BOT_TOKEN; "
                 "get a valid token from @BotFather")


if __name__ == "__main__":
    main()
