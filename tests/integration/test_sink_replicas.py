"""Sinks replicas share the partitions (a lease each, a fair share each), against a real
redis-server and a real HTTP receiver on 127.0.0.1: two replicas over four partitions each deliver
two; a partition handed over, or taken from a replica that died, goes on in order; every item
arrives at least once and each source's items first arrive in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stream.core.codec import Message, encode_message
from stream.core.keys import FIELD, PipelineKeys, partition_of
from stream.settings import Settings
from stream.sinks.loop import SinkLoop
from stream.waiting import cancel_and_wait
from tests.faults.webhook_receiver import WebhookReceiver
from tests.waiting import until

SECRET = "a-webhook-secret-of-some-length"
PARTITIONS = 4
PER_SOURCE = 60


def _sources() -> list[str]:
    """Two sources in each partition."""
    chosen: dict[int, list[str]] = {k: [] for k in range(PARTITIONS)}
    n = 0
    while any(len(v) < 2 for v in chosen.values()):
        source = f"cam-{n}"
        k = partition_of(source, PARTITIONS)
        if len(chosen[k]) < 2:
            chosen[k].append(source)
        n += 1
    return [s for k in range(PARTITIONS) for s in chosen[k]]


async def _publish(client: Any, keys: PipelineKeys, sources: list[str], seqs: range) -> None:
    for seq in seqs:
        for source in sources:
            meta = {"kind": "result", "source": source, "model": "m", "seq": seq, "score": 0.9}
            await client.xadd(keys.for_source(source).results, {FIELD: encode_message(Message(meta=meta))})


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hook = WebhookReceiver(secret=SECRET).up()
    yield hook
    hook.down()


@contextlib.asynccontextmanager
async def _replica(
    settings: Settings, client: Any, name: str
) -> AsyncIterator[tuple[SinkLoop, asyncio.Task[None]]]:
    loop = SinkLoop(settings, client, consumer=name)
    await loop.start()
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield loop, task
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)


async def test_two_replicas_share_the_partitions_and_one_takes_over_a_dead_ones_in_order(
    redis_client: Any, receiver: WebhookReceiver
) -> None:
    pipeline = f"s{secrets.token_hex(3)}"
    sink = {"name": "hook", "kind": "webhook", "url": receiver.url, "secret": SECRET,
            "max_items": 10, "max_wait_ms": 20, "backoff_initial_s": 0.05, "backoff_max_s": 0.2,
            "max_attempts": 10_000}  # fmt: skip
    streams = {"pipeline": pipeline, "partitions": PARTITIONS, "block_ms": 50, "claim_idle_ms": 500}
    settings = Settings(streams=streams, sinks=[sink])
    keys = PipelineKeys(pipeline, PARTITIONS)
    sources = _sources()
    receiver.delay_s, receiver.mode = 0.01, "slow"  # sends take a while: replicas hold batches in flight

    def arrived(n: int) -> bool:
        return len(receiver.keys()) >= n * len(sources)

    async with _replica(settings, redis_client, "a") as (a, a_task):
        await until(lambda: a.owned == [0, 1, 2, 3], timeout_s=10, what="the only replica owning all 4")
        await _publish(redis_client, keys, sources, range(0, 20))
        async with _replica(settings, redis_client, "b") as (b, _):
            # a hands two partitions over while their items are being delivered
            await _publish(redis_client, keys, sources, range(20, 40))

            def shared() -> bool:
                return len(a.owned) == 2 and len(b.owned) == 2 and set(a.owned).isdisjoint(b.owned)

            await until(shared, timeout_s=15, what=f"2 partitions each (a: {a.owned}, b: {b.owned})")
            await until(lambda: arrived(40), timeout_s=30, what="the first 40 of each source")
            assert a.processed > 0 and b.processed > 0
            taken_from_a = set(a.owned)
            await _publish(redis_client, keys, sources, range(40, 50))
            await cancel_and_wait([a_task])  # a dies: it releases nothing, acks nothing more
            await _publish(redis_client, keys, sources, range(50, PER_SOURCE))
            await until(lambda: b.owned == [0, 1, 2, 3], timeout_s=15, what="b owning every partition")
            await until(lambda: arrived(PER_SOURCE), timeout_s=30, what="every item of every source")
    assert taken_from_a
    assert {r.key for r in receiver.items} == {f"{s}/m/{seq}" for s in sources for seq in range(PER_SOURCE)}
    for source in sources:
        assert receiver.first_arrivals(source) == list(range(PER_SOURCE)), source


async def test_a_replica_cancelled_once_ends_even_when_a_redis_call_inside_loses_the_cancel(
    redis_client: Any, receiver: WebhookReceiver
) -> None:
    """On Python 3.11 redis-py can lose a cancel (it sends through ``asyncio.wait_for``): the lease
    keeper then loops on, as its stop never comes. The replica's run must end all the same."""
    sink = {"name": "hook", "kind": "webhook", "url": receiver.url, "secret": SECRET}
    streams = {"pipeline": f"s{secrets.token_hex(3)}", "partitions": PARTITIONS, "claim_idle_ms": 500}
    loop = SinkLoop(Settings(streams=streams, sinks=[sink]), redis_client, consumer="a")
    await loop.start()
    renew, inside, lost = loop.ownership.renew, asyncio.Event(), []

    async def renew_that_loses_the_first_cancel() -> list[int]:
        if lost:
            return await renew()
        inside.set()
        try:
            await asyncio.sleep(3600)  # a Redis call in flight
        except asyncio.CancelledError:
            lost.append(True)  # ... whose cancel is lost: it returns as if nothing happened
        return []

    loop.ownership.renew = renew_that_loses_the_first_cancel  # type: ignore[method-assign]
    task = asyncio.create_task(loop.run(asyncio.Event()))
    await until(inside.is_set, timeout_s=10, what="the lease keeper inside a Redis call")
    task.cancel()  # the replica dies once: no stop event, no second cancel
    done, _ = await asyncio.wait([task], timeout=10)
    assert lost, "the lease keeper's cancel was never lost: the case this test is about did not happen"
    assert done, "the replica's run went on waiting for a lease keeper that lost its cancel"
