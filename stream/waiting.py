"""Waiting with a bound, in one way: ``async with asyncio.timeout(s)`` around the awaited call.

`asyncio.wait_for` is not used (ruff bans it): on Python 3.11 it returns the awaited result when
that result and a cancel arrive in the same loop turn, so the cancel is lost and a loop that was
told to stop carries on (CPython gh-86296, fixed in 3.12 by building ``wait_for`` on
``asyncio.timeout``). ``asyncio.timeout`` awaits in the caller's own task, where a cancel always
lands.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["pause"]


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
