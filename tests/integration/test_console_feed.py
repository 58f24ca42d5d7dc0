"""The console's data on a real redis-server: ingest keeps a thumbnail per source about once a
second (the JPEG it publishes, with a TTL), and the console feed pushes the timeline, label
changes and a snapshot of sources (with their open segments) and stages, and the p99 latency,
over a partitioned pipeline."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from deployments.api.feeds import FeedHub
from deployments.console.feed import ConsoleFeed, read_stage_counts
from stream.adapters.media.jpeg import decode_jpeg
from stream.adapters.media.video import write_demo_clip
from stream.adapters.redis.source_registry import add_source, list_sources
from stream.core.codec import Message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.messages import LABEL_CHANGE, RESULT
from stream.core.segments import SegmentBuilder
from stream.core.smoothing import LabelSmoother
from stream.core.track_state import encode_track
from stream.readers.queries import ResultQueries
from stream.readers.watch import probe_stages
from stream.settings import Settings
from stream.stages.ingest.stage import IngestStage

KEYS = PipelineKeys("console", 3)
MODEL = "mobilenet-v1-0.25-128-quant"


async def _page_stream(
    console: ConsoleFeed, disconnected: Callable[[], Awaitable[bool]]
) -> AsyncIterator[str]:
    """What ``GET /v1/console/events`` sends one page: the console feed over a subscription to
    the replica's one reader of the streams."""
    hub = FeedHub(console.queries, max_feeds=4, max_feeds_per_client=4, queue_size=1000)
    page = await hub.subscribe("page", source=None, kinds=None)
    until_s = asyncio.get_running_loop().time() + 600
    return console.stream(page.entries(disconnected, console.interval_s / 4, until_s), page)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_clip(tmp_path_factory.mktemp("console") / "demo.mp4", frames=75, size=(320, 240))


async def _play(client: aioredis.Redis, settings: Settings, source: str, uri: str) -> float:
    """Play `uri` in real time through one ingest loop until it is done; returns the seconds."""
    keys = PipelineKeys(settings.streams.pipeline, settings.streams.partitions)
    stop = asyncio.Event()
    ingest = IngestStage(settings, client, consumer="ingest-0")
    task = asyncio.create_task(ingest.run(stop))
    started = time.monotonic()
    await add_source(client, keys, source, {"uri": uri, "realtime": True})
    deadline = started + 60
    while not all(s.done for s in await list_sources(client, keys)):
        assert time.monotonic() < deadline, "the source did not finish within 60 s"
        assert not task.done(), task
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    stop.set()
    await task
    return elapsed


async def _set_calls(client: aioredis.Redis) -> int:
    return int((await client.info("commandstats")).get("cmdstat_set", {}).get("calls", 0))


@pytest.mark.parametrize("encoding", ["jpeg", "raw"])
async def test_ingest_keeps_a_published_frame_as_jpeg_thumbnail_at_most_once_a_second(
    redis_client: aioredis.Redis, clip: Path, encoding: str
) -> None:
    """A JPEG frame's own bytes, or a raw frame encoded when its thumbnail is due."""
    settings = Settings(streams={"pipeline": "console", "partitions": 3}, ingest={"encoding": encoding})
    await redis_client.flushall()
    await redis_client.config_resetstat()
    elapsed = await _play(redis_client, settings, "cam-1", str(clip))  # 75 frames at 25/s: ~3 s
    thumbnail = await redis_client.get(KEYS.for_source("cam-1").thumbnail("cam-1"))
    assert thumbnail is not None, "no thumbnail"
    assert decode_jpeg(thumbnail).shape == (240, 320, 3)  # a real JPEG of a whole frame
    assert 0 < await redis_client.ttl(KEYS.for_source("cam-1").thumbnail("cam-1")) <= 30
    writes = await _set_calls(redis_client) - 1  # the one other SET: ingest's lease on the source
    assert 2 <= writes <= math.ceil(elapsed) + 1, (writes, elapsed)


async def test_no_thumbnail_when_turned_off(redis_client: aioredis.Redis, clip: Path) -> None:
    settings = Settings(streams={"pipeline": "console", "partitions": 3}, ingest={"thumbnail_interval_ms": 0})
    await redis_client.flushall()
    await _play(redis_client, settings, "cam-0", str(clip))
    assert await redis_client.get(KEYS.for_source("cam-0").thumbnail("cam-0")) is None


async def _publish(client: aioredis.Redis, source: str, meta: dict[str, Any]) -> None:
    keys = KEYS.for_source(source)
    stream = keys.results if meta["kind"] == RESULT else keys.events
    await client.xadd(stream, {FIELD: encode_message(Message(meta={"source": source, **meta}))})  # type: ignore[dict-item]


def _result(seq: int, label: str, score: float) -> dict[str, Any]:
    return {"kind": RESULT, "seq": seq, "model": "m", "smoothed_label": label, "smoothed_score": score}


async def _next_event(feed: Any, name: str, p99s: list[float | None] | None = None) -> dict[str, Any]:
    """The next event `name`; the ``latency_p99_ms`` of snapshots passed on the way go to `p99s`."""
    while True:
        text = await asyncio.wait_for(anext(feed), 10)
        if text.startswith(f"event: {name}\n"):
            return json.loads(text.split("\ndata: ", 1)[1])
        if p99s is not None and text.startswith("event: snapshot\n"):
            p99s.append(json.loads(text.split("\ndata: ", 1)[1])["latency_p99_ms"])


async def test_the_feed_pushes_timeline_label_changes_and_snapshots(redis_client: aioredis.Redis) -> None:
    for source in ("cam-0", "cam-1"):
        await add_source(redis_client, KEYS, source, {"uri": f"/clips/{source}.mp4", "loop": True})
    await _publish(redis_client, "cam-1", {"kind": LABEL_CHANGE, "seq": 0, "model": "m", "previous": None,
                                           "label": "cat", "result_ms": 1.0})  # fmt: skip
    await _publish(redis_client, "cam-1", _result(0, "cat", 0.4))
    await redis_client.hset(KEYS.for_source("cam-1").counters, "published:cam-1", 10)

    async def sources() -> list[dict[str, Any]]:
        return [{"id": s.source_id, **asdict(s.spec), "next_seq": s.next_seq} for s in
                await list_sources(redis_client, KEYS)]  # fmt: skip

    async def replicas() -> dict[str, dict[str, int]]:  # Serve's view; no Serve here
        return {"infer": {"RUNNING": 2}}

    gone = asyncio.Event()

    async def disconnected() -> bool:
        return gone.is_set()

    stages = ["ingest", "preprocess", "infer", "postprocess"]
    console = ConsoleFeed(ResultQueries(redis_client, KEYS), "m", stages, sources, replicas, interval_s=0.2)
    feed = await _page_stream(console, disconnected)
    timeline = await _next_event(feed, "timeline")
    assert [(e["source"], e["label"]) for e in timeline["events"]] == [("cam-1", "cat")]
    snap = await _next_event(feed, "snapshot")
    rows = {s["id"]: s for s in snap["sources"]}
    assert set(rows) == {"cam-0", "cam-1"} and rows["cam-0"]["uri"] == "/clips/cam-0.mp4"
    assert (rows["cam-1"]["label"], rows["cam-1"]["score"]) == ("cat", 0.4)  # from before the page opened
    assert rows["cam-0"]["label"] is None and rows["cam-0"]["status"] is None  # nothing yet: shown as '-'
    assert [s["stage"] for s in snap["stages"]] == stages and snap["stages"][2]["replicas"] == 2

    segments = SegmentBuilder("cam-0", "m")  # what postprocess saves of cam-0: a segment open at 7
    segments.frame(7, "dog", 0.9, 5_000.0)
    smoother = LabelSmoother(0.3, 3)
    smoother.update(np.array([0.1, 0.9], dtype=np.float32))
    state = encode_track(8, smoother, {"results": 1}, segments.open)
    await redis_client.hset(KEYS.for_source("cam-0").group_state("postprocess:m"), "cam-0", state)
    await _publish(redis_client, "cam-0", {**_result(7, "dog", 0.9), "latency_ms": 120.0})
    await _publish(redis_client, "cam-0", {"kind": LABEL_CHANGE, "seq": 7, "model": "m", "previous": None,
                                           "label": "dog", "result_ms": 2.0})  # fmt: skip
    await redis_client.hset(KEYS.for_source("cam-1").counters, "published:cam-1", 30)
    seen_p99: list[float | None] = []
    change = await _next_event(feed, "label_change", seen_p99)
    assert (change["source"], change["label"]) == ("cam-0", "dog")
    snap = await _next_event(feed, "snapshot")
    rows = {s["id"]: s for s in snap["sources"]}
    assert (rows["cam-0"]["label"], rows["cam-0"]["result_seq"]) == ("dog", 7)
    ingest = snap["stages"][0]
    assert ingest["handled"] == 30 and ingest["fps"] is not None and ingest["fps"] > 0  # 20 frames since
    opened = rows["cam-0"]["segment"]
    assert (opened["label"], opened["first_seq"], opened["start_ms"], opened["open"]) == (
        "dog",
        7,
        5000.0,
        True,
    )
    assert rows["cam-1"]["segment"] is None
    # the result's latency is in the snapshot after it was read (that one, or one before it)
    assert 120.0 in (snap["latency_p99_ms"], *seen_p99), (snap["latency_p99_ms"], seen_p99)
    gone.set()
    with pytest.raises(StopAsyncIteration):
        while True:
            await asyncio.wait_for(anext(feed), 10)


async def test_the_feed_ends_with_an_error_event_when_redis_goes_away(tmp_path: Path) -> None:
    from stream.adapters.redis.server import RedisServer
    from stream.adapters.redis.streams import connect

    server = RedisServer(data_dir=tmp_path).start()
    client = await connect(server.url)
    try:
        await add_source(client, KEYS, "cam-0", {"uri": "/clips/cam-0.mp4"})

        async def sources() -> list[dict[str, Any]]:
            return [{"id": s.source_id} for s in await list_sources(client, KEYS)]

        async def replicas() -> dict[str, dict[str, int]]:
            return {}

        async def connected() -> bool:
            return False

        feed = ConsoleFeed(ResultQueries(client, KEYS), "m", ["ingest"], sources, replicas, interval_s=0.2)
        events = await _page_stream(feed, connected)
        assert (await anext(events)).startswith("retry: ")
        await _next_event(events, "snapshot")
        server.close()
        error = await asyncio.wait_for(_next_event(events, "error"), 60)
        assert "redis unavailable" in error["error"]
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(events), 10)
    finally:
        await client.aclose()
        server.close()


async def test_progress_and_console_show_the_lag_redis_cannot_count_right(
    redis_client: aioredis.Redis,
) -> None:
    """Entries deleted unread (XDEL of a bad entry, XTRIM past a slow group) make Redis report a
    group's lag as unknown or too high; the stage rows show the entries really waiting."""
    keys = PipelineKeys("lagview", 2)
    group = f"preprocess:{MODEL}"
    deleted, trimmed = keys.partition(0).frames, keys.partition(1).frames
    for stream in (deleted, trimmed):
        await redis_client.xgroup_create(stream, group, id="0", mkstream=True)
        for i in range(1, 11):
            await redis_client.xadd(stream, {FIELD: b"x"}, id=f"{i}-1")
        await redis_client.xreadgroup(group, "c", {stream: ">"}, count=2)  # 2 pending, 8 unread
    await redis_client.xdel(deleted, "5-1")  # Redis cannot tell the lag any more: 7 unread
    await redis_client.xtrim(trimmed, maxlen=3, approximate=False)  # Redis says 8 unread: 3 are left
    raw = [(await redis_client.xinfo_groups(s))[0]["lag"] for s in (deleted, trimmed)]
    assert raw == [None, 8]  # what XINFO GROUPS says

    progress = await probe_stages(redis_client, keys, MODEL)  # `framestream run`'s progress view
    console = await read_stage_counts(redis_client, keys, MODEL, ["preprocess"])  # the console's rows

    waiting = (2 + 7) + (2 + 3)  # pending + unread on each partition
    assert progress["preprocess"].backlog == waiting
    assert console["preprocess"]["lag"] == waiting
    assert progress["preprocess"].handled == 0  # read, not acked
