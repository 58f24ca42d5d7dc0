"""Waiting on a condition in tests: the one way, with a timeout and a message naming what was awaited.

A test never sleeps until something probably happened: it polls a condition, and a condition that
never holds fails the test after `timeout_s` with what it was waiting for (and the last value the
condition returned, which often says why).

- `wait_until`: from synchronous code (a condition that is a plain callable).
- `until`: from a coroutine (the condition may be sync or async); the loop keeps running.
- `poll`: like `until`, but answers True/False instead of failing, for a caller that acts on
  "it did not happen".
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["poll", "until", "wait_until"]

Condition = Callable[[], Any]


def _timed_out(what: str, timeout_s: float, last: Any) -> AssertionError:
    return AssertionError(f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r})")


def wait_until(condition: Condition, *, timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    """Call `condition` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout_s, last)
        time.sleep(every_s)


async def _value(condition: Callable[[], Any | Awaitable[Any]]) -> Any:
    value = condition()
    return await value if inspect.isawaitable(value) else value


async def until(
    condition: Callable[[], Any | Awaitable[Any]], *, timeout_s: float, what: str, every_s: float = 0.05
) -> Any:
    """Await `condition` (sync or async) until it is truthy, and return its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = await _value(condition)
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout_s, last)
        await asyncio.sleep(every_s)


async def poll(
    condition: Callable[[], Any | Awaitable[Any]], *, timeout_s: float, every_s: float = 0.05
) -> bool:
    """True once `condition` (sync or async) is truthy, False if `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while not await _value(condition):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every_s)
    return True
