"""The HTTP API's result queries (`/v1/results`, the SSE feed) over a partitioned pipeline, on a
real redis-server: a source's results are found in its partition, and the feed follows them all."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from deployments.api.feeds import FeedHub
from stream.core.codec import Message, encode_message
from stream.core.keys import FIELD, PipelineKeys, partition_of
from stream.core.messages import LABEL_CHANGE, RESULT
from stream.readers.queries import ResultQueries

KEYS = PipelineKeys("queries", 3)
SOURCES = ["cam-0", "cam-1", "cam-3"]  # crc32 % 3: 2, 1, 0: one source per partition


async def publish(client: aioredis.Redis, source: str, seq: int, kind: str = RESULT) -> None:
    meta = {"kind": kind, "source": source, "seq": seq, "model": "m"}
    stream = KEYS.for_source(source).results if kind == RESULT else KEYS.for_source(source).events
    await client.xadd(stream, {FIELD: encode_message(Message(meta=meta))})  # type: ignore[dict-item]


async def test_results_after_a_seq_come_from_the_sources_partition(redis_client: aioredis.Redis) -> None:
    assert sorted(partition_of(s, 3) for s in SOURCES) == [0, 1, 2]
    queries = ResultQueries(redis_client, KEYS)
    for source in SOURCES:
        for seq in range(5):
            await publish(redis_client, source, seq)
    for source in SOURCES:
        found, results = await queries.after(source, 1, limit=10)
        assert found and [r["seq"] for r in results] == [2, 3, 4]
        assert {r["source"] for r in results} == {source}


async def test_the_feed_follows_every_partition_and_resumes_from_its_event_id(
    redis_client: aioredis.Redis,
) -> None:
    queries = ResultQueries(redis_client, KEYS)
    gone = asyncio.Event()

    async def disconnected() -> bool:
        return gone.is_set()

    hub = FeedHub(queries, max_feeds=4, max_feeds_per_client=2, queue_size=100)
    _, feed = await hub.follow(
        "c", None, source=None, kinds={RESULT, LABEL_CHANGE}, disconnected=disconnected, max_s=60
    )
    assert (await anext(feed)).startswith(": framestream")
    for source in SOURCES:
        await publish(redis_client, source, 0)
    await publish(redis_client, "cam-1", 0, kind=LABEL_CHANGE)
    events = []
    while len(events) < 4:
        text = await asyncio.wait_for(anext(feed), 10)
        if text.startswith("event:"):
            events.append(text)
    gone.set()
    assert {s for s in SOURCES if any(f'"source":"{s}"' in e for e in events)} == set(SOURCES)
    last_id = events[-1].split("\nid: ")[1].split("\n")[0]
    assert len(last_id.split(",")) == 6  # a results and an events id per partition

    await publish(redis_client, "cam-3", 1)  # written while the client was away
    again = asyncio.Event()

    async def back() -> bool:
        return again.is_set()

    _, resumed = await hub.follow("c", last_id, source=None, kinds={RESULT}, disconnected=back, max_s=60)
    await anext(resumed)
    text = ""
    while not text.startswith("event:"):
        text = await asyncio.wait_for(anext(resumed), 10)
    again.set()
    assert '"source":"cam-3"' in text and '"seq":1' in text
