"""Saying a problem once in the log, not once per retry or per message: `Outage` for a dependency that fails and
comes back, `Once` for problems by key. The agent and the bot both log this way; the agent ships alone with it."""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable


class Once:
    """Problems said once each, by key: again after `again_s` with how many came meanwhile, or (`again_s` None)
    not again until the key is forgotten. At most `most` keys are remembered; beyond, all are forgotten."""

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING, again_s: float | None = None,
                 most: int = 1000) -> None:
        self.logger = logger
        self.level = level
        self.again_s = again_s
        self.most = most
        self._said: dict[Hashable, tuple[float, int]] = {}  # key -> (when said, how many since)

    def due(self, key: Hashable) -> int | None:
        """Whether the problem of `key` is to be said now: how many came since it was last said (0 the first
        time), or None when it was said recently (this one is counted)."""
        now = time.monotonic()
        said = self._said.get(key)
        if said is not None and (self.again_s is None or now - said[0] < self.again_s):
            self._said[key] = (said[0], said[1] + 1)
            return None
        if len(self._said) >= self.most:
            self._said.clear()
        self._said[key] = (now, 0)
        return said[1] if said is not None else 0

    def say(self, key: Hashable, message: str, *args: object) -> bool:
        """Log `message % args` unless `key` was said recently; a repeat says how many came meanwhile."""
        since = self.due(key)
        if since is None:
            return False
        self.logger.log(self.level, message + (f" ({since} more since)" if since else ""), *args)
        return True

    def forget(self, key: Hashable | None = None) -> None:
        """The problem of `key` (of every key, when None) is over: the next one is said at once."""
        if key is None:
            self._said.clear()
        else:
            self._said.pop(key, None)


class Outage:
    """A dependency that can fail for a while (Telegram, Kafka, the database, the model store): said in the log
    once when the outage starts and once when it ends, not once per retry."""

    def __init__(self, logger: logging.Logger, down: str, up: str, level: int = logging.WARNING) -> None:
        self.logger = logger
        self.down_text = down  # a %-format of one argument: the reason
        self.up_text = up
        self.level = level
        self.is_down = False
        self.cause: object = None  # what the last outage was put down to

    def down(self, reason: object, exc_info: bool = False, cause: object = None) -> bool:
        """The dependency failed; whether this started an outage, or one of another `cause`, and was logged."""
        if self.is_down and cause == self.cause:
            return False
        self.is_down, self.cause = True, cause
        self.logger.log(self.level, self.down_text, reason, exc_info=exc_info)
        return True

    def up(self) -> bool:
        """The dependency works; whether this ended an outage (and was logged)."""
        if not self.is_down:
            return False
        self.is_down = False
        self.logger.info(self.up_text)
        return True
