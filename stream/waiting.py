"""Waiting with a bound, in one way: ``async with asyncio.timeout(s)`` around the awaited call;
`pause` until a stop or a time, and `off_loop` for a blocking call that may never return.

`asyncio.wait_for` is not used (ruff bans it): on Python 3.11 it returns the awaited result when
that result and a cancel arrive in the same loop turn, so the cancel is lost and a loop that was
told to stop carries on (CPython gh-86296, fixed in 3.12 by building ``wait_for`` on
``asyncio.timeout``). ``asyncio.timeout`` awaits in the caller's own task, where a cancel always
lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["off_loop", "pause"]

_T = TypeVar("_T")


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def off_loop(fn: Callable[..., _T], *args: Any, timeout_s: float) -> _T:
    """`fn(*args)` in a daemon thread, waited for `timeout_s` at most (TimeoutError). A Ray call
    can block for good when Ray's own processes were signalled along with the run (``timeout``,
    systemd): in ``asyncio.to_thread`` it would hold up the end of ``asyncio.run`` (which joins
    the default executor's threads) and so the whole stop; a daemon thread is simply left."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not done.done():
            outcome()

    def work() -> None:
        try:
            result = fn(*args)
            outcome = functools.partial(done.set_result, result)
        except BaseException as e:
            outcome = functools.partial(done.set_exception, e)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=work, name=f"off-loop-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    async with asyncio.timeout(timeout_s):
        return await done
