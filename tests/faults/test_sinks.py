"""Sinks in a real pipeline (processes runner, real redis-server, a real HTTP receiver on 127.0.0.1).

- the runner starts the sinks process and `run` ends only once the webhook has every result;
- the webhook goes down for 30 s mid-run, then answers 500 for 10 s, then is slow: every result
  still arrives (by idempotency key exactly the frame count, in order per source); a variant that
  acks before the destination confirms loses results under the same faults, and the checker sees it;
- a sink that stays down past `max_backlog`: with ``drop`` the oldest become counted dead letters
  and the rest waits; with ``pause`` the file source waits; either way nothing else is lost and
  the pipeline's own results are complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from stream.adapters.redis.client import connect
from stream.adapters.redis.dead_letters import DeadLetters
from stream.adapters.redis.server import RedisServer, find_free_port
from stream.adapters.redis.sink_backlog import sink_backlog
from stream.core.keys import PipelineKeys
from stream.core.sources.ids import source_id
from stream.readers.watch import read_counters
from stream.runners.processes import run_processes
from stream.settings import Settings
from stream.sinks.delivery import SinkDelivery
from stream.sinks.destination import DeliveryError, Destination
from stream.sinks.loop import SinkLoop
from stream.sinks.settings import SinkSettings
from tests.faults.checker import check
from tests.faults.conftest import MODEL, fault_settings
from tests.faults.frames import write_frame_folder
from tests.faults.webhook_receiver import WebhookReceiver
from tests.waiting import until

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SECRET = "sink-test-secret-0123456789"
DOWN_S, ERRORS_S, SLOW_DELAY_S = 30.0, 10.0, 0.3
"""The fault the issue names: down 30 s, then 500s for 10 s, then slow replies."""


def _settings(model_cache: Path, **sink: Any) -> Settings:
    base = fault_settings(model_cache)
    streams = base.streams.model_copy(update={"pipeline": f"sk{secrets.token_hex(3)}"})
    fields = {"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:1/", "secret": SECRET,
              "max_items": 25, "max_wait_ms": 50, "backoff_initial_s": 0.2, "backoff_max_s": 2.0,
              "max_attempts": 1000, **sink}  # fmt: skip
    return base.model_copy(update={"streams": streams, "sinks": [SinkSettings(**fields)]})


@contextlib.asynccontextmanager
async def _receiver(**kw: Any) -> AsyncIterator[WebhookReceiver]:
    hook = WebhookReceiver(secret=SECRET, **kw).up()
    try:
        yield hook
    finally:
        hook.down()


async def test_run_ends_once_the_webhook_has_every_result(
    redis_server: RedisServer, model_cache: Path, tmp_path: Path
) -> None:
    frames = 200
    folder = write_frame_folder(tmp_path / "clip", frames)
    async with _receiver() as hook:
        settings = _settings(model_cache, url=hook.url)
        report = await asyncio.wait_for(
            run_processes(settings, redis_url=redis_server.url, sources=[str(folder)], models=[MODEL],
                          timeout_s=120),
            timeout=240,
        )  # fmt: skip
        # no waiting here: the run itself waited for the sink
        assert len(hook.keys()) == frames and hook.bad_signatures == 0
    [row] = report.rows
    assert (row.frames, row.results) == (frames, frames)
    assert report.sinks["hook"]["delivered"] >= frames
    assert (report.sinks["hook"]["backlog"], report.sinks["hook"]["dead_letters"]) == (0, 0)
    assert hook.first_arrivals(source_id(str(folder))) == list(range(frames))


class AcksFirst(SinkDelivery):
    """The negative control: acks an entry before its destination confirmed it and sends once
    (what a client that drops messages while reconnecting does)."""

    async def _send_with_retries(self, keys: PipelineKeys, batch: Any, stop: asyncio.Event) -> bool:
        await self._ack(keys, [entry for entry, _ in batch], delivered=0)
        with contextlib.suppress(DeliveryError):
            await self._send([item for _, item in batch])
        return True


def _acks_first(
    settings: Settings, client: Any, sink: SinkSettings, destination: Destination, consumer: str
) -> SinkDelivery:
    return AcksFirst(settings, client, sink, destination, consumer=consumer)


def _faults(hook: WebhookReceiver, started: threading.Event) -> None:
    """Down for DOWN_S once the first batch arrived, then 500s for ERRORS_S, then slow replies."""
    started.wait()
    hook.down()
    time.sleep(DOWN_S)
    hook.mode = "error"
    hook.up()
    time.sleep(ERRORS_S)
    hook.delay_s, hook.mode = SLOW_DELAY_S, "slow"


@pytest.mark.parametrize("variant", ["acks-after-confirm", "acks-first"])
async def test_every_result_arrives_through_outage_errors_and_slowness(
    redis_server: RedisServer, model_cache: Path, tmp_path: Path, variant: str
) -> None:
    frames = 600
    folder = write_frame_folder(tmp_path / "clip", frames)
    source = source_id(str(folder))
    started = threading.Event()
    async with _receiver(on_batch=lambda _: started.set()) as hook:
        settings = _settings(model_cache, url=hook.url)
        pipeline_only = settings.model_copy(update={"sinks": []})  # the sink runs here, below
        keys = PipelineKeys(settings.streams.pipeline)
        client = await connect(redis_server.url)
        make = _acks_first if variant == "acks-first" else None
        loop = SinkLoop(settings, client, consumer="t", **({"make": make} if make else {}))
        await loop.start()
        stop = asyncio.Event()
        delivering = asyncio.create_task(loop.run(stop))
        faults = threading.Thread(target=_faults, args=(hook, started), daemon=True)
        faults.start()
        try:
            report = await asyncio.wait_for(
                run_processes(pipeline_only, redis_url=redis_server.url, sources=[str(folder)],
                              models=[MODEL], timeout_s=120),
                timeout=240,
            )  # fmt: skip
            [row] = report.rows
            assert (row.frames, row.results) == (frames, frames)  # the pipeline's own results
            await asyncio.to_thread(faults.join, DOWN_S + ERRORS_S + 30)
            await until(lambda: _backlog_at_most(client, keys, settings.sinks[0], 0), timeout_s=180,
                        what="the sink's backlog at 0")  # fmt: skip
        finally:
            stop.set()
            await asyncio.wait_for(delivering, 30)
            await client.aclose()
        assert hook.requests > 0 and hook.bad_signatures == 0
    outcome = check("webhook down, 500s, slow", [(source, s) for s in range(frames)],
                    [(r.source, int(r.seq or 0)) for r in hook.items])  # fmt: skip
    if variant == "acks-first":
        assert outcome.lost > 0, f"the negative control lost nothing: {outcome}"
        return
    assert outcome.lost == 0, outcome
    assert len(hook.keys()) == frames
    assert hook.first_arrivals(source) == list(range(frames))


async def test_on_full_drop_counts_and_dead_letters_what_it_drops(
    redis_server: RedisServer, model_cache: Path, tmp_path: Path
) -> None:
    frames, max_backlog = 400, 60
    folder = write_frame_folder(tmp_path / "clip", frames)
    source = source_id(str(folder))
    hook = WebhookReceiver(secret=SECRET)  # down: not listening yet
    hook.port = _free_port()
    settings = _settings(model_cache, url=hook.url, max_backlog=max_backlog, on_full="drop")
    sink = settings.sinks[0]
    keys = PipelineKeys(settings.streams.pipeline)
    client = await connect(redis_server.url)
    stop = asyncio.Event()
    loop = SinkLoop(settings, client, consumer="t")
    await loop.start()
    delivering = asyncio.create_task(loop.run(stop))
    try:
        report = await asyncio.wait_for(
            run_processes(settings.model_copy(update={"sinks": []}), redis_url=redis_server.url,
                          sources=[str(folder)], models=[MODEL], timeout_s=120),
            timeout=240,
        )  # fmt: skip
        [row] = report.rows
        assert (row.frames, row.results) == (frames, frames)  # the pipeline is not held up
        await until(lambda: _backlog_at_most(client, keys, sink, max_backlog), timeout_s=30,
                    what=f"the sink's backlog down to {max_backlog}")  # fmt: skip
        dropped = (await read_counters(client, keys))["sink:hook:dropped"]
        letters = [r async for r in DeadLetters(client, keys).each(stage="sink:hook")]
        assert dropped == len(letters) >= frames - max_backlog - 5
        assert all("on_full: drop" in r.reason for r in letters)
        hook.up()  # the rest is delivered
        await until(lambda: _backlog_at_most(client, keys, sink, 0), timeout_s=60, what="backlog 0")
    finally:
        stop.set()
        await asyncio.wait_for(delivering, 30)
        await client.aclose()
        hook.down()
    delivered = {int(r.seq or 0) for r in hook.items if r.source == source}
    dead = {r.seq for r in letters if r.seq is not None}  # the end-of-stream has none
    assert delivered.isdisjoint(dead) and delivered | dead == set(range(frames))  # nothing else lost


async def _backlog_at_most(client: Any, keys: PipelineKeys, sink: SinkSettings, n: int) -> bool:
    return await sink_backlog(client, keys, sink) <= n


def _free_port() -> int:
    return find_free_port()


async def test_on_full_pause_holds_the_file_source_until_the_sink_is_back(
    redis_server: RedisServer, model_cache: Path, tmp_path: Path
) -> None:
    frames, max_backlog = 1000, 60
    folder = write_frame_folder(tmp_path / "clip", frames)
    source = source_id(str(folder))
    hook = WebhookReceiver(secret=SECRET)
    hook.port = _free_port()
    settings = _settings(model_cache, url=hook.url, max_backlog=max_backlog, on_full="pause")
    sink = settings.sinks[0]
    keys = PipelineKeys(settings.streams.pipeline)
    client = await connect(redis_server.url)
    run = asyncio.create_task(
        run_processes(
            settings, redis_url=redis_server.url, sources=[str(folder)], models=[MODEL], timeout_s=180
        )
    )
    try:

        async def held() -> bool:  # everything published reached the sink, and ingest waits
            published = (await read_counters(client, keys)).get(f"published:{source}", 0)
            return max_backlog < published == await sink_backlog(client, keys, sink)

        await until(held, timeout_s=120, what="the file source paused behind the full sink")
        published = (await read_counters(client, keys))[f"published:{source}"]
        assert published < frames
        hook.up()
        report = await asyncio.wait_for(run, timeout=240)
    finally:
        if not run.done():
            run.cancel()
            with contextlib.suppress(BaseException):
                await run
        await client.aclose()
        hook.down()
    [row] = report.rows
    assert (row.frames, row.results) == (frames, frames)
    assert len({r.key for r in hook.items}) == frames
    assert (report.sinks["hook"]["dropped"], report.sinks["hook"]["backlog"]) == (0, 0)
