"""The link to the Bot API: whether Telegram answers, and connecting to it with backoff while it does not.

An outage of Telegram, at start or later, is retried with backoff and said once in the log when it starts and
once when it ends. Metrics are stored meanwhile: ingestion does not wait for the chat.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application
from telegram.request import HTTPXRequest

from agent.log_once import Outage
from bot.retry import retrying_async

log = logging.getLogger(__name__)
RETRY_MAX_S = 30.0  # the longest wait between two tries to reach the Bot API


class TelegramLink(Outage):
    """Whether the Bot API answers; the log says so once per change, not once per retry."""

    def __init__(self) -> None:
        super().__init__(log, "cannot reach the Telegram Bot API (%s); retrying with backoff, metrics are still "
                              "stored and alerts wait", "Telegram Bot API reachable again")

    def failed(self, error: BaseException) -> None:
        self.down(f"{type(error).__name__}: {error}")


class PollingRequest(HTTPXRequest):
    """The connection getUpdates uses. A failed poll reaches the Updater's error callback, but a good one
    has no hook: this tells the link when Telegram answers again."""

    __slots__ = ("_link",)

    def __init__(self, link: TelegramLink) -> None:
        super().__init__(connection_pool_size=1)  # what ApplicationBuilder gives getUpdates by default
        self._link = link

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        code, payload = await super().do_request(*args, **kwargs)
        if code == HTTPStatus.OK:
            self._link.up()
        return code, payload


def _worth_retrying(error: BaseException) -> bool:
    # No connection, a 502, a timeout heal by themselves; a rejected token does not.
    return isinstance(error, TelegramError) and not isinstance(error, InvalidToken)


async def connect(application: Application, link: TelegramLink) -> None:
    """Initialize the application (its getMe checks the token), retrying with backoff while Telegram fails.
    Raises InvalidToken when the Bot API rejects the token: that cannot heal."""

    async for attempt in retrying_async(_worth_retrying, link.failed, max_s=RETRY_MAX_S):
        with attempt:
            await application.initialize()
    link.up()
