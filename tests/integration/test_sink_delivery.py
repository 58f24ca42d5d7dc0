"""The sink delivery loop against a real redis-server and a real HTTP receiver on 127.0.0.1:
results written to the results stream (as postprocess writes them) reach the webhook signed,
in order, acked only once confirmed; failures become dead letters of that sink, which
`dead retry` re-drives to that sink alone; `on_full: drop` dead-letters the oldest waiting items.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stream.adapters.redis.dead_letters import DeadLetters
from stream.adapters.redis.group_stats import group_stats
from stream.adapters.redis.sink_backlog import sink_backlog
from stream.core.codec import Message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.readers.sink_status import sink_status
from stream.readers.watch import read_counters
from stream.settings import Settings
from stream.sinks.loop import SinkLoop
from stream.sinks.settings import SinkSettings
from stream.waiting import cancel_and_wait
from tests.faults.webhook_receiver import WebhookReceiver
from tests.waiting import until

SECRET = "a-webhook-secret-of-some-length"


def _settings(pipeline: str, **sink: Any) -> tuple[Settings, SinkSettings]:
    fields = {"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/", "secret": SECRET,
              "max_items": 20, "max_wait_ms": 20, "backoff_initial_s": 0.05, "backoff_max_s": 0.2,
              **sink}  # fmt: skip
    settings = Settings(streams={"pipeline": pipeline, "block_ms": 50, "claim_idle_ms": 500}, sinks=[fields])
    return settings, settings.sinks[0]


def _result(source: str, seq: int, score: float = 0.9) -> bytes:
    meta = {"kind": "result", "source": source, "model": "m", "seq": seq, "label": "cat", "score": score}
    return encode_message(Message(meta=meta))


async def _publish(client: Any, keys: PipelineKeys, source: str, seqs: range, **kw: Any) -> None:
    for seq in seqs:
        await client.xadd(keys.results, {FIELD: _result(source, seq, **kw)})


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hook = WebhookReceiver(secret=SECRET).up()
    yield hook
    hook.down()


@contextlib.asynccontextmanager
async def _running(loop: SinkLoop, before: Any = None) -> AsyncIterator[asyncio.Event]:
    """`loop` running (its groups made first, then `before` awaited) until the block ends."""
    stop = asyncio.Event()
    await loop.start()
    if before is not None:
        await before
    task = asyncio.create_task(loop.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_results_arrive_signed_in_order_and_are_acked_once_confirmed(
    redis_client: Any, receiver: WebhookReceiver
) -> None:
    pipeline = f"s{secrets.token_hex(3)}"
    settings, sink = _settings(pipeline, url=receiver.url, min_score=0.5)
    keys = PipelineKeys(pipeline)
    loop = SinkLoop(settings, redis_client, consumer="t")
    async with _running(loop):
        await _publish(redis_client, keys, "a", range(50))
        await _publish(redis_client, keys, "low", range(5), score=0.1)  # below min_score: acked, not sent
        await redis_client.xadd(
            keys.results, {FIELD: encode_message(Message(meta={"kind": "eos", "source": "a"}))}
        )
        await until(lambda: len(receiver.keys()) == 50, timeout_s=20, what="50 results at the webhook")
        await until(
            lambda: _backlog_is(redis_client, keys, sink, 0), timeout_s=10, what="the sink's backlog at 0"
        )
    assert receiver.bad_signatures == 0
    assert receiver.first_arrivals("a") == list(range(50))
    assert {r.key for r in receiver.items} == {f"a/m/{seq}" for seq in range(50)}
    assert (await read_counters(redis_client, keys))["sink:hook:delivered"] == 50


async def _backlog_is(client: Any, keys: PipelineKeys, sink: SinkSettings, n: int) -> bool:
    return await sink_backlog(client, keys, sink) == n


async def test_a_wrong_secret_is_refused_and_nothing_is_acked(
    redis_client: Any, receiver: WebhookReceiver
) -> None:
    pipeline = f"s{secrets.token_hex(3)}"
    settings, sink = _settings(
        pipeline, url=receiver.url, secret="not-the-receivers-secret", max_attempts=1000
    )
    keys = PipelineKeys(pipeline)
    loop = SinkLoop(settings, redis_client, consumer="t")
    async with _running(loop):
        await _publish(redis_client, keys, "a", range(3))
        await until(lambda: receiver.bad_signatures >= 1, timeout_s=10, what="a refused signature")
        # 401 is not retryable: each item is tried alone, then dead-lettered, never acked unsent
        await until(lambda: _dead_at_least(redis_client, keys, 3), timeout_s=10, what="3 dead letters")
    assert receiver.items == []
    letters = [r async for r in DeadLetters(redis_client, keys).each(stage="sink:hook")]
    assert len(letters) == 3 and all("HTTP 401" in r.reason for r in letters)
    (row,) = await sink_status(redis_client, keys, [sink])  # what the console shows
    assert (row["name"], row["delivered"], row["dead_letters"], row["backlog"]) == ("hook", 0, 3, 0)
    assert "HTTP 401" in row["last_error"] and row["last_error_ms"] > 0


async def _dead_at_least(client: Any, keys: PipelineKeys, n: int) -> bool:
    return await DeadLetters(client, keys).count() >= n


async def test_a_dead_letter_retried_goes_to_that_sink_only(
    redis_client: Any, receiver: WebhookReceiver
) -> None:
    pipeline = f"s{secrets.token_hex(3)}"
    settings, sink = _settings(pipeline, url=receiver.url, max_attempts=2)
    keys = PipelineKeys(pipeline)
    # another consumer of the results stream (as the pipeline's own readers are)
    await redis_client.xgroup_create(keys.results, "other", id="$", mkstream=True)
    receiver.mode = "error"
    loop = SinkLoop(settings, redis_client, consumer="t")
    async with _running(loop):
        await _publish(redis_client, keys, "a", range(4))
        await until(lambda: _dead_at_least(redis_client, keys, 4), timeout_s=20, what="4 sink dead letters")
        letters = [r async for r in DeadLetters(redis_client, keys).each(stage="sink:hook")]
        assert len(letters) == 4 and all("not delivered after 2 attempts" in r.reason for r in letters)
        assert all(r.stream == keys.sink_retry("hook") for r in letters)
        results_before = await redis_client.xlen(keys.results)
        receiver.mode = "ok"
        outcomes = await DeadLetters(redis_client, keys).retry_all(stage="sink:hook")
        assert [o.error for o in outcomes] == [None] * 4
        await until(lambda: len(receiver.keys()) == 4, timeout_s=20, what="the retried items at the webhook")
    assert receiver.first_arrivals("a") == [0, 1, 2, 3]
    # re-driven to the sink's retry stream, not the results stream every consumer reads
    assert await redis_client.xlen(keys.results) == results_before
    assert (await group_stats(redis_client, keys.results, "other")).lag == 4


async def test_on_full_drop_dead_letters_the_oldest_waiting_items(redis_client: Any) -> None:
    pipeline = f"s{secrets.token_hex(3)}"
    hook = WebhookReceiver(secret=SECRET)  # never up: every connection is refused
    settings, sink = _settings(pipeline, url="http://127.0.0.1:1/hook", max_backlog=30, on_full="drop",
                               max_items=5, max_attempts=10_000)  # fmt: skip
    keys = PipelineKeys(pipeline)
    loop = SinkLoop(settings, redis_client, consumer="t")
    async with _running(loop, before=_publish(redis_client, keys, "a", range(100))):
        await until(
            lambda: _backlog_is(redis_client, keys, sink, 30), timeout_s=20, what="backlog down to 30"
        )
    counters = await read_counters(redis_client, keys)
    assert counters["sink:hook:dropped"] == 70
    letters = [r async for r in DeadLetters(redis_client, keys).each(stage="sink:hook")]
    assert len(letters) == 70 and all("max_backlog=30" in r.reason for r in letters)
    # the oldest not yet read went first: what waits is the newest and, when the lane read its
    # first batch before the first drop, that batch (held, being retried)
    dropped = sorted(r.seq for r in letters if r.seq is not None)
    assert dropped[0] in range(6) and dropped == list(range(dropped[0], dropped[0] + 70)), dropped
    assert hook.items == []


async def test_a_sink_that_is_down_holds_up_no_other_sink(
    redis_client: Any, receiver: WebhookReceiver
) -> None:
    pipeline = f"s{secrets.token_hex(3)}"
    down = {"name": "down", "kind": "webhook", "url": "http://127.0.0.1:1/hook", "max_attempts": 10_000,
            "backoff_initial_s": 0.05, "backoff_max_s": 0.2}  # fmt: skip
    settings, _ = _settings(pipeline, url=receiver.url)
    settings = settings.model_copy(update={"sinks": [*settings.sinks, SinkSettings(**down)]})
    keys = PipelineKeys(pipeline)
    loop = SinkLoop(settings, redis_client, consumer="t")
    async with _running(loop):
        await _publish(redis_client, keys, "a", range(60))
        await until(
            lambda: len(receiver.keys()) == 60, timeout_s=20, what="60 results at the sink that is up"
        )
        assert await sink_backlog(redis_client, keys, settings.sinks[1]) == 60  # all kept for the other
    assert receiver.first_arrivals("a") == list(range(60))


async def test_what_a_stopped_sink_consumer_held_is_taken_over_and_delivered(
    redis_client: Any, receiver: WebhookReceiver
) -> None:
    pipeline = f"s{secrets.token_hex(3)}"
    settings, sink = _settings(pipeline, url=receiver.url, max_attempts=10_000)
    keys = PipelineKeys(pipeline)
    receiver.mode = "error"  # the first consumer reads a batch and cannot deliver it
    first = SinkLoop(settings, redis_client, consumer="first")
    await first.start()
    await _publish(redis_client, keys, "a", range(30))
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))

    async def held_by_first() -> bool:
        return (await redis_client.xpending(keys.results, sink.group))["pending"] > 0

    await until(held_by_first, timeout_s=10, what="entries pending with the first consumer")
    await cancel_and_wait([task])  # a crash: nothing acked, nothing left the group
    receiver.mode = "ok"
    async with _running(SinkLoop(settings, redis_client, consumer="second")):
        await until(lambda: len(receiver.keys()) == 30, timeout_s=20, what="all 30 delivered by the second")
        await until(lambda: _backlog_is(redis_client, keys, sink, 0), timeout_s=10, what="backlog 0")
    assert receiver.first_arrivals("a") == list(range(30))
