"""Waiting with a bound, in one way: ``async with asyncio.timeout(s)`` around the awaited call;
`pause` until a stop or a time, `off_loop` for a blocking call that may never return, and
`cancel_and_wait` to end tasks.

`asyncio.wait_for` is not used (ruff bans it): on Python 3.11 it returns the awaited result when
that result and a cancel arrive in the same loop turn, so the cancel is lost and a loop that was
told to stop carries on (CPython gh-86296, fixed in 3.12 by building ``wait_for`` on
``asyncio.timeout``). ``asyncio.timeout`` awaits in the caller's own task, where a cancel always
lands.

redis-py itself still sends every command through ``asyncio.wait_for`` (its 5 s socket timeout),
so on 3.11 a task cancelled while a Redis command is being written can carry on as if nothing
happened: cancelling 8 tasks that loop on Redis commands lost the cancel of 2 to 7 of them in a
few rounds, none with ``socket_timeout=None``. Hence `cancel_and_wait`: whatever cancels a task and
waits for it cancels it again until it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Collection
from typing import Any, TypeVar

__all__ = ["cancel_and_wait", "off_loop", "pause"]

_T = TypeVar("_T")

_CANCEL_AGAIN_S = 0.5
"""How long a cancelled task has to end before it is cancelled again (its cleanup included)."""


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


async def cancel_and_wait(tasks: Collection[asyncio.Future[Any]]) -> None:
    """Cancel `tasks` and wait until each has ended, cancelling again every half second those still
    running: a cancel lost inside a Redis command (see the module docstring) would otherwise leave a
    loop that runs until its stop event running for good, and its waiter waiting for good.

    What the tasks raised is not raised here. A cancel of the caller meanwhile does not cut this
    short: the tasks still end first (else a task cancelled again while ending its own tasks would
    leave them running, orphaned), then the caller's CancelledError is raised."""
    left = {task for task in tasks if not task.done()}
    interrupted = False
    while left:
        for task in left:
            task.cancel()
        try:
            _, left = await asyncio.wait(left, timeout=_CANCEL_AGAIN_S)
        except asyncio.CancelledError:
            interrupted = True
            left = {task for task in left if not task.done()}
    for task in tasks:  # retrieved: no "exception was never retrieved" for what they raised
        if not task.cancelled():
            task.exception()
    if interrupted:
        raise asyncio.CancelledError
