"""A sink delivery's lanes: one task per partition it delivers, started and stopped while it runs
as the replica's partitions change (`stream.sinks.loop.SinkLoop` hands them out by lease).

A lane stopped on purpose finishes what it is doing first (its own stop event), for up to a bound,
then it is cancelled; what it read and did not ack stays pending for the partition's next lane. An
error in any lane, or in the task running beside them, ends `run` for every lane.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any

from stream.waiting import cancel_and_wait

__all__ = ["Lanes"]

Lane = Callable[[int, asyncio.Event], Coroutine[Any, Any, None]]


class Lanes:
    """Runs `lane(partition, stop)` for each partition in `owned` while `run` runs."""

    def __init__(self, lane: Lane, partitions: int) -> None:
        self._lane = lane
        self.owned: set[int] = set(range(partitions))
        """The partitions to run lanes for (all of them unless told otherwise)."""
        self._tasks: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._error: asyncio.Future[None] | None = None
        """While `run` runs: set with the first error of a lane or of `beside`, which ends it."""

    async def run(self, stop: asyncio.Event, beside: Awaitable[None]) -> None:
        """Run the lanes of `owned` and `beside` until `stop` (each lane finishes what it holds) or
        the first error (raised here)."""
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._error = failed
        other = asyncio.ensure_future(beside)
        other.add_done_callback(self._done)
        self.add(self.owned)
        stopped = asyncio.create_task(stop.wait())
        try:
            waiting: list[asyncio.Future[Any]] = [stopped, failed]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if failed.done():
                failed.result()  # raises the first error
            for _, lane_stop in self._tasks.values():
                lane_stop.set()
            await asyncio.gather(other, *(task for task, _ in self._tasks.values()))
        finally:
            self._error = None
            stopped.cancel()
            tasks = [other, *(task for task, _ in self._tasks.values())]
            self._tasks.clear()
            await cancel_and_wait(tasks)

    def add(self, partitions: Collection[int]) -> None:
        """Own `partitions` too: their lanes start now while `run` runs (else when it does)."""
        self.owned.update(partitions)
        if self._error is None:
            return
        for k in sorted(partitions):
            if k not in self._tasks:
                lane_stop = asyncio.Event()
                task = asyncio.create_task(self._lane(k, lane_stop))
                task.add_done_callback(self._done)
                self._tasks[k] = (task, lane_stop)

    async def remove(self, partitions: Collection[int], *, wait_s: float) -> None:
        """Stop the lanes of `partitions`: each finishes what it is doing for up to `wait_s`, then
        it is cancelled."""
        self.owned.difference_update(partitions)
        lanes = [self._tasks.pop(k) for k in partitions if k in self._tasks]
        for _, lane_stop in lanes:
            lane_stop.set()
        tasks = [task for task, _ in lanes]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=wait_s) if wait_s > 0 else (set(), set(tasks))
            await cancel_and_wait(late)

    def _done(self, task: asyncio.Future[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        if self._error is not None and not self._error.done():
            self._error.set_exception(task.exception())  # type: ignore[arg-type]
