"""Fair use of Telegram's flood limits: alerts before command replies, and no member's flood of commands
delays anyone else.

Telegram takes about 30 messages a second in all and about 20 a minute in one group, and answers 429 beyond.
Every message the bot queues in a group delays the next one there, so:
- `FairRateLimiter` obeys both limits, and keeps part of each group's minute for what the outbox sends (its
  calls pass `rate_limit_args=URGENT`): a command reply waits while that reserve is all that is left.
- `CommandBudget` lets each member of a chat send a small burst of commands; beyond it one "slow down" reply,
  then their commands are dropped (not queued) for a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiolimiter import AsyncLimiter
from telegram.ext import BaseRateLimiter

URGENT = "urgent"  # rate_limit_args of the outbox's calls
OVERALL_PER_S = 30
GROUP_PER_MINUTE = 20
RESERVE = 6  # of a group's minute, kept for the outbox
WAIT_STEP_S = 0.25
MAX_LIMITERS = 1024  # idle ones (full capacity) are forgotten beyond this many


def _prune(limiters: dict[Any, AsyncLimiter], keep: object) -> None:
    if len(limiters) > MAX_LIMITERS:
        for key, limiter in list(limiters.items()):
            if key != keep and limiter.has_capacity(limiter.max_rate):
                del limiters[key]


class FairRateLimiter(BaseRateLimiter[str]):
    """Telegram's overall and per-group limits, with a reserve of each group's minute for URGENT calls. A 429
    that still comes is raised to the caller (the sender pauses as long as Telegram asks)."""

    def __init__(self) -> None:
        self._overall = AsyncLimiter(OVERALL_PER_S, 1)
        self._groups: dict[int | str, AsyncLimiter] = {}

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to close."""

    def _group(self, chat_id: object) -> AsyncLimiter | None:
        with contextlib.suppress(TypeError, ValueError):
            chat_id = int(chat_id)  # type: ignore[call-overload]
        if not ((isinstance(chat_id, int) and chat_id < 0) or isinstance(chat_id, str)):
            return None  # a private chat: only the overall limit
        _prune(self._groups, chat_id)
        return self._groups.setdefault(chat_id, AsyncLimiter(GROUP_PER_MINUTE, 60))

    async def process_request(
        self, callback: Callable[..., Coroutine[Any, Any, Any]], args: Any, kwargs: dict[str, Any],
        endpoint: str, data: dict[str, Any], rate_limit_args: str | None,
    ) -> Any:
        chat_id = data.get("chat_id")
        group = self._group(chat_id) if chat_id is not None else None
        if group is None:
            if chat_id is None:  # getUpdates, answerCallbackQuery, …: no message in a chat
                return await callback(*args, **kwargs)
            async with self._overall:
                return await callback(*args, **kwargs)
        if rate_limit_args != URGENT:
            while not group.has_capacity(1 + RESERVE):
                await asyncio.sleep(WAIT_STEP_S)
        async with group, self._overall:
            return await callback(*args, **kwargs)


class CommandBudget:
    """Per member and chat: a burst of `burst` commands, refilled at `per_minute`; a member over it is told once
    and ignored for `cooldown_s`."""

    def __init__(self, burst: int = 10, per_minute: float = 20, cooldown_s: float = 60) -> None:
        self.burst, self.per_minute, self.cooldown_s = burst, per_minute, cooldown_s
        self._budgets: dict[tuple[int, int], AsyncLimiter] = {}
        self._ignored_until: dict[tuple[int, int], float] = {}

    async def take(self, chat_id: int, user_id: int) -> bool | None:
        """True: go on. False: over budget, say "slow down" (once). None: told already: drop it."""
        key, now = (chat_id, user_id), time.monotonic()
        if self._ignored_until.get(key, 0.0) > now:
            return None
        self._ignored_until.pop(key, None)
        if len(self._ignored_until) > MAX_LIMITERS:
            self._ignored_until = {k: t for k, t in self._ignored_until.items() if t > now}
        _prune(self._budgets, key)
        budget = self._budgets.get(key)
        if budget is None:
            # A bucket of `burst` that leaks at `per_minute`: aiolimiter's rate is max_rate per time_period.
            budget = self._budgets[key] = AsyncLimiter(self.burst, self.burst * 60 / self.per_minute)
        if budget.has_capacity():
            await budget.acquire()  # does not wait: it has capacity
            return True
        self._ignored_until[key] = now + self.cooldown_s
        return False
