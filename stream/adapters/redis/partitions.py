"""Partitions on Redis: the pipeline's recorded partition count, and reading every partition.

The partition count P is fixed when a pipeline is first created (`ensure_layout` records it in
``keys.layout``); a stage or run that asks for another P fails with `ConfigError` instead of
silently reading the wrong streams.

`FanInReader` reads one consumer group over P streams (one per partition). On a Redis Cluster a
multi-key XREADGROUP fails (the keys are on different slots), and one XREADGROUP per partition in
turn would make a busy partition wait out a blocking read on an idle one; so each partition has
one read in flight, and `read` returns as soon as any of them has entries. With P = 1 it is one
plain XREADGROUP, exactly as before partitions existed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio as aioredis

from stream.adapters.redis.entries import Entry
from stream.adapters.redis.streams import StreamTransport
from stream.core.keys import PipelineKeys
from stream.errors import ConfigError

__all__ = ["FanInReader", "ensure_layout", "recorded_keys"]


async def ensure_layout(client: aioredis.Redis, keys: PipelineKeys) -> None:
    """Record `keys.partitions` for a new pipeline; ConfigError if it was created with another count.

    A pipeline created before the count was recorded has one partition (its streams exist, the
    record does not).
    """
    recorded = await client.hget(keys.layout, "partitions")
    if recorded is None:
        if keys.partitions != 1 and await client.exists(keys.partition(0).frames):
            recorded = b"1"
        elif await client.hsetnx(keys.layout, "partitions", keys.partitions):
            return
        else:  # another process recorded it just now
            recorded = await client.hget(keys.layout, "partitions")
    have = int(recorded or 0)
    if have != keys.partitions:
        raise ConfigError(
            f"pipeline {keys.pipeline!r} was created with {have} partition(s), this process asks for "
            f"{keys.partitions} (streams.partitions / FRAMESTREAM_STREAMS__PARTITIONS); the count is "
            f"fixed when a pipeline is created: set it to {have}, or name a new pipeline "
            "(streams.pipeline)"
        )


async def recorded_keys(client: aioredis.Redis, pipeline: str) -> PipelineKeys:
    """The keys of `pipeline` with the partition count it was created with (1 when none was
    recorded: a pipeline not created yet, or made before counts were recorded). For tools that
    join a running pipeline without its settings, such as the load tester."""
    recorded = await client.hget(PipelineKeys(pipeline).layout, "partitions")
    return PipelineKeys(pipeline, int(recorded or 1))


class FanInReader:
    """New entries of `group` from every stream in `streams` (one per partition), for `consumer`."""

    def __init__(self, transport: StreamTransport, streams: Sequence[str], group: str, consumer: str) -> None:
        if not streams:
            raise ValueError("FanInReader needs at least one stream")
        self.transport = transport
        self.streams = list(streams)
        self.group, self.consumer = group, consumer
        self._reads: dict[str, asyncio.Task[list[Entry]]] = {}

    def read_streams(self, streams: Sequence[str]) -> None:
        """Read `streams` from now on; reads in flight on the others are dropped (what Redis
        delivered to them stays pending for this consumer)."""
        self.streams = list(streams)
        for stream in [s for s in self._reads if s not in self.streams]:
            self._reads.pop(stream).cancel()

    async def read(self, *, count: int, block_ms: int | None) -> list[Entry]:
        """Up to `count` entries per partition, from whichever partitions have some first (waiting
        at most about `block_ms`, or not at all with None)."""
        if len(self.streams) == 1 and not self._reads:
            return await self.transport.read(
                self.streams[0], self.group, self.consumer, count=count, block_ms=block_ms
            )
        for stream in self.streams:
            if stream not in self._reads:
                self._reads[stream] = asyncio.create_task(
                    self.transport.read(stream, self.group, self.consumer, count=count, block_ms=block_ms)
                )
        await asyncio.wait(self._reads.values(), return_when=asyncio.FIRST_COMPLETED)
        return self._take_done()

    def _take_done(self) -> list[Entry]:
        entries: list[Entry] = []
        error: BaseException | None = None
        for stream, task in list(self._reads.items()):
            if task.done():
                del self._reads[stream]
                if task.cancelled():
                    continue
                if (e := task.exception()) is not None:
                    error = error or e
                else:
                    entries += task.result()
        if error is not None:  # what the others read stays pending for this consumer: taken back on rerun
            raise error
        return entries

    def delivered(self) -> set[tuple[str, str]]:
        """(stream, id) of entries reads in flight have received but `read` has not returned yet."""
        return {
            (e.stream, e.id)
            for task in self._reads.values()
            if task.done() and not task.cancelled() and task.exception() is None
            for e in task.result()
        }

    async def finish(self) -> list[Entry]:
        """Wait for the reads in flight (each ends within its block time) and return their entries,
        so a stopping stage can still handle them."""
        if self._reads:
            await asyncio.wait(self._reads.values())
        return self._take_done()

    def cancel(self) -> None:
        """Drop the reads in flight (after an error): what they read stays pending for this
        consumer and is taken back (`recover_own`) when the loop runs again."""
        for task in self._reads.values():
            task.cancel()
        self._reads.clear()
