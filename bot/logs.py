"""The bot's log: one format, one level, and the bot token never in it.

The token is in every Bot API URL, so PTB's and httpx's own log lines, and the text of some of PTB's
exceptions, carry it. A filter on the root handlers masks it in every record that reaches the log,
whichever logger wrote it; uncaught exceptions and warnings go through the same handlers.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"
# Chatty below DEBUG: httpx logs every request at INFO; APScheduler warns each time a poll is skipped
# because the previous one still runs (a big batch, a probe of a dead broker), which the poller expects.
QUIET_BELOW_DEBUG = {"httpx": logging.WARNING, "apscheduler": logging.ERROR}


def secret_part(token: str) -> str:
    """What must never be shown: the part after the bot id (`123456:SECRET`); the bot id itself is public."""
    return token.split(":", 1)[-1]


class Redact(logging.Filter):
    """Masks a secret in a record's message, arguments, exception and stack text."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def _clean(self, text: str) -> str:
        return text.replace(self.secret, MASK)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secret:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler would print msg and args as they are
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = self._clean(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self._clean(record.stack_info)
        return True


def configure(level: str, token: str) -> None:
    """Log to stderr at `level` with the token masked everywhere."""
    logging.basicConfig(level=level, format=FORMAT)
    redact = Redact(secret_part(token))
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
    if level != "DEBUG":
        for name, quiet in QUIET_BELOW_DEBUG.items():
            logging.getLogger(name).setLevel(quiet)
    logging.captureWarnings(True)
    # Python prints an uncaught exception straight to stderr: send it through the filtered handlers.
    sys.excepthook = _log_uncaught
    threading.excepthook = lambda args: _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException | None, traceback: TracebackType | None
) -> None:
    logging.getLogger("rigwatch").critical("uncaught exception", exc_info=(exc_type, exc, traceback))
