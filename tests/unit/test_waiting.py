"""`stream.waiting.cancel_and_wait`: a task whose cancel gets lost (as one inside a redis-py
command can on Python 3.11) still ends, the caller is neither stuck nor handed its error, and a
caller cancelled meanwhile does not orphan the tasks it was ending."""

from __future__ import annotations

import asyncio

import pytest

from stream.waiting import cancel_and_wait


async def _loop_that_loses_one_cancel(stop: asyncio.Event, rounds: list[int]) -> None:
    """Runs until `stop`, as the stage and sink loops do; the first cancel it gets is lost."""
    lost = False
    while not stop.is_set():
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True  # what a lost cancel looks like from outside: the loop carries on
        rounds.append(1)


async def test_a_loop_that_lost_its_cancel_is_cancelled_again_until_it_ends() -> None:
    rounds: list[int] = []
    task = asyncio.create_task(_loop_that_loses_one_cancel(asyncio.Event(), rounds))
    await asyncio.sleep(0.05)
    async with asyncio.timeout(5):
        await cancel_and_wait([task])
    assert task.cancelled()
    went_on = len(rounds)
    await asyncio.sleep(0.05)
    assert len(rounds) == went_on  # ended for good, not still looping


async def test_tasks_that_failed_or_finished_are_waited_for_without_raising() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    failed, finished = asyncio.create_task(fails()), asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await cancel_and_wait([failed, finished])
    assert isinstance(failed.exception(), ValueError) and finished.done()


async def test_a_caller_cancelled_meanwhile_ends_its_tasks_first_then_is_cancelled() -> None:
    """A loop ending its lanes, cancelled again meanwhile (its own waiter re-cancels it), must not
    leave them running: they would read on after their sink was deleted."""
    stubborn = asyncio.create_task(_loop_that_loses_one_cancel(asyncio.Event(), []))
    waiter = asyncio.create_task(cancel_and_wait([stubborn]))
    await asyncio.sleep(0.05)
    for _ in range(3):
        waiter.cancel()
        await asyncio.sleep(0.01)
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await waiter
    assert stubborn.cancelled()
