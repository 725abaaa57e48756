"""One way to wait out a dependency that is down: exponential backoff between tries (tenacity), each failure handed
to `on_failure` (which says the outage once), for as long as `worth_retrying` says the error can heal."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, wait_exponential

OnFailure = Callable[[BaseException], Any]  # may be a coroutine function when the retrying is asynchronous


def _settings(worth_retrying: Callable[[BaseException], bool], on_failure: OnFailure, first_s: float,
              max_s: float) -> dict[str, Any]:
    def failure(state: RetryCallState) -> BaseException:
        assert state.outcome is not None  # before_sleep runs after an attempt
        return state.outcome.exception()

    if inspect.iscoroutinefunction(on_failure):
        async def before_sleep(state: RetryCallState) -> None:
            await on_failure(failure(state))
    else:
        def before_sleep(state: RetryCallState) -> None:
            on_failure(failure(state))

    return {"retry": retry_if_exception(worth_retrying), "wait": wait_exponential(multiplier=first_s, max=max_s),
            "before_sleep": before_sleep, "reraise": True}


def retrying(worth_retrying: Callable[[BaseException], bool], on_failure: OnFailure, first_s: float = 1.0,
             max_s: float = 30.0) -> Retrying:
    """`for attempt in retrying(...): with attempt: …` tries until it works or fails in a way that cannot heal
    (raised as it is)."""
    return Retrying(**_settings(worth_retrying, on_failure, first_s, max_s))


def retrying_async(worth_retrying: Callable[[BaseException], bool], on_failure: OnFailure, first_s: float = 1.0,
                   max_s: float = 30.0) -> AsyncRetrying:
    """`async for attempt in retrying_async(...): with attempt: …`, the same on the event loop."""
    return AsyncRetrying(**_settings(worth_retrying, on_failure, first_s, max_s))
