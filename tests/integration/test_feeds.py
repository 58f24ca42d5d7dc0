"""The live feeds of an ingress replica (`deployments.api.feeds`) on a real redis-server: one reader
per partition whatever the number of clients, a client that stops reading is dropped with a
reason while the others get everything, and the caps on feeds answer 503/429."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from deployments.api.feeds import FeedHub
from deployments.api.http_errors import ApiError
from stream.core.codec import Message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.messages import RESULT
from stream.readers.queries import ResultQueries
from tests.waiting import poll

KEYS = PipelineKeys("feeds", 3)
SOURCES = ["cam-0", "cam-1", "cam-3"]  # one per partition
PER_SOURCE = 450
"""Results a source publishes: 1350 in all, more than a feed holds (100 + one read of each of
the 6 streams, 1200)."""


async def _publish(client: aioredis.Redis, source: str, seqs: range) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for seq in seqs:
            meta = {"kind": RESULT, "source": source, "seq": seq, "model": "m"}
            pipe.xadd(KEYS.for_source(source).results, {FIELD: encode_message(Message(meta=meta))})  # type: ignore[dict-item]
        await pipe.execute()


async def _blocked_clients(client: aioredis.Redis) -> int:
    return int((await client.info("clients"))["blocked_clients"])


async def _open() -> bool:
    return False


async def test_many_feeds_share_one_reader_per_partition_and_a_stalled_one_is_dropped(
    redis_client: aioredis.Redis, redis_server: Any
) -> None:
    from stream.adapters.redis.streams import connect

    client = await connect(redis_server.url)
    hub = FeedHub(ResultQueries(client, KEYS), max_feeds=50, max_feeds_per_client=50, queue_size=100)
    feeds = [await hub.subscribe(f"c{i}", source=None, kinds={RESULT}) for i in range(30)]
    stalled = await hub.subscribe("stalled", source=None, kinds={RESULT})
    loop = asyncio.get_running_loop()
    received: list[list[int]] = [[] for _ in feeds]

    async def drain(i: int) -> None:
        async for _event_id, meta in feeds[i].entries(_open, 0.2, loop.time() + 60):
            if meta is not None:
                received[i].append(meta["seq"])
                if len(received[i]) == 3 * PER_SOURCE:
                    return

    readers = [asyncio.create_task(drain(i)) for i in range(len(feeds))]
    assert await poll(lambda: _blocked_clients(redis_client), timeout_s=10, every_s=0.05)
    # 31 open feeds, and Redis sees one blocking read per partition
    assert await _blocked_clients(redis_client) == KEYS.partitions
    for first in range(0, PER_SOURCE, 50):  # batches of 50 a partition: less than one queue
        for source in SOURCES:
            await _publish(redis_client, source, range(first, first + 50))
    await asyncio.wait_for(asyncio.gather(*readers), 60)
    assert all(len(r) == 3 * PER_SOURCE for r in received), (
        [len(r) for r in received],
        [f.dropped for f in feeds][:3],
    )  # everything, to every client that reads
    assert stalled.dropped is not None and "fell 1300 events behind" in stalled.dropped
    assert stalled not in hub.feeds and len(hub.feeds) == 30
    for feed in feeds:
        hub.close(feed)
    assert await poll(lambda: not hub.reading, timeout_s=5, every_s=0.05)  # the reader stops
    await client.aclose()


async def test_caps_on_feeds_in_total_and_per_client(redis_client: aioredis.Redis) -> None:
    hub = FeedHub(ResultQueries(redis_client, KEYS), max_feeds=3, max_feeds_per_client=2, queue_size=10)
    first = await hub.subscribe("a", source=None, kinds=None)
    await hub.subscribe("a", source="cam-0", kinds=None)
    with pytest.raises(ApiError) as per_client:
        await hub.subscribe("a", source=None, kinds=None)
    assert per_client.value.status == 429 and "api.max_feeds_per_client" in per_client.value.reason
    await hub.subscribe("b", source=None, kinds=None)
    with pytest.raises(ApiError) as total:
        await hub.subscribe("c", source=None, kinds=None)
    assert total.value.status == 503 and "api.max_feeds" in total.value.reason
    hub.close(first)
    await hub.subscribe("a", source=None, kinds=None)  # a closed feed frees its place
    for feed in list(hub.feeds):
        hub.close(feed)
