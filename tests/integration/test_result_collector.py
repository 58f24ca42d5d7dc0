"""`ResultCollector` on a real redis-server: its own group, a group Redis lost, a server that stops
answering, results of other sources."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream.adapters.redis_server import RedisServer
from stream.adapters.redis_streams import connect
from stream.core.codec import Message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.messages import EOS, RESULT
from stream.stages.sinks import ResultCollector

KEYS = PipelineKeys("collector")
MODEL = "m"


def result(source: str, seq: int) -> dict[bytes | str, bytes]:
    meta = {"kind": RESULT, "source": source, "seq": seq, "model": MODEL, "latency_ms": 1.0}
    return {FIELD: encode_message(Message(meta=meta))}


def eos(source: str, frames: int) -> dict[bytes | str, bytes]:
    meta = {"kind": EOS, "source": source, "model": MODEL, "frames": frames, "skipped": 0}
    return {FIELD: encode_message(Message(meta=meta))}


async def publish(client: aioredis.Redis, source: str, seqs: range, *, end: int | None = None) -> None:
    for seq in seqs:
        await client.xadd(KEYS.results, result(source, seq))  # type: ignore[arg-type]
    if end is not None:
        await client.xadd(KEYS.results, eos(source, end))  # type: ignore[arg-type]


async def drain(collector: ResultCollector) -> None:
    while await collector.poll(block_ms=10):
        pass


@pytest.fixture
async def client(redis_client: aioredis.Redis) -> AsyncIterator[aioredis.Redis]:
    yield redis_client


async def test_two_collectors_in_their_own_groups_each_get_every_result_and_the_end(
    client: aioredis.Redis,
) -> None:
    a = ResultCollector(client, KEYS, group="sink:a")
    b = ResultCollector(client, KEYS, group="sink:b")
    await a.ensure_group()
    await b.ensure_group()
    await publish(client, "s", range(50), end=50)
    for collector in (a, b):
        await drain(collector)
        assert collector.finished({("s", MODEL)})
        assert collector.track("s", MODEL).seqs == set(range(50))


async def test_a_group_redis_lost_is_made_again_and_nothing_is_skipped_or_counted_twice(
    client: aioredis.Redis,
) -> None:
    """Redis came back without the group (no persistence, or an AOF from before it existed)."""
    collector = ResultCollector(client, KEYS, group="sink:lost")
    await collector.ensure_group()
    await publish(client, "s", range(20))
    await drain(collector)
    await client.xgroup_destroy(KEYS.results, "sink:lost")
    await publish(client, "s", range(20, 40), end=40)  # written while the group was missing
    await drain(collector)  # NOGROUP: made again at 0
    await drain(collector)
    track = collector.track("s", MODEL)
    assert collector.regroups == 1
    assert track.seqs == set(range(40)) and collector.finished({("s", MODEL)})
    assert track.duplicates == 0  # re-reading 0..19 is not a duplicate
    await publish(client, "s", range(5, 7))  # a real duplicate still counts
    await drain(collector)
    assert track.duplicates == 2


async def test_only_the_given_sources_are_tracked_and_written(client: aioredis.Redis, tmp_path) -> None:
    from stream.stages.sinks import JsonlSink

    sink = JsonlSink(tmp_path / "r.jsonl")
    collector = ResultCollector(client, KEYS, group="sink:mine", sink=sink, sources=["mine"])
    await collector.ensure_group()
    await publish(client, "other", range(10), end=10)
    await publish(client, "mine", range(3), end=3)
    await drain(collector)
    sink.close()
    assert set(collector.tracks) == {("mine", MODEL)}
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 3


async def test_a_server_that_stops_answering_is_a_timeout_not_a_hang() -> None:
    """SIGSTOP keeps the connection open but nobody answers. Without a bound the read waits forever
    on redis-py < 8 (no default socket timeout; 8.x gives up after 5 s): the collector's own bound
    answers well before that."""
    with RedisServer() as server:
        assert server.process is not None
        client = await connect(server.url)
        try:
            collector = ResultCollector(client, KEYS, group="sink:stall", reply_timeout_s=0.5)
            await collector.ensure_group()
            await publish(client, "s", range(3))
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(RedisTimeoutError):
                    await asyncio.wait_for(collector.poll(block_ms=100), timeout=30)
                assert time.monotonic() - started < 4
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            await publish(client, "s", range(3, 5), end=5)
            await drain(collector)  # on a fresh connection, own pending first
            await drain(collector)
            assert collector.track("s", MODEL).seqs == set(range(5))
            assert collector.finished({("s", MODEL)})
        finally:
            await client.aclose()
