"""Cameras that never give up, against real servers and a real redis-server: an RTSP camera
(GStreamer's RTSP server) that goes away mid-stream and comes back, and an HTTP MJPEG camera that
keeps its connection open but stops sending. Ingest reconnects, frames after the outage arrive,
and the outage shows in the source's status, its events and its metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.api.feeds import FeedHub
from deployments.api.sources import _source_json
from stream.adapters.media.video import write_demo_clip
from stream.adapters.metrics import metrics
from stream.adapters.redis.server import RedisServer
from stream.adapters.redis.source_registry import SourceStatus, add_source, list_sources, remove_source
from stream.adapters.redis.streams import connect
from stream.core.codec import decode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.readers.queries import KINDS, ResultQueries
from stream.settings import Settings
from stream.stages.ingest.stage import IngestStage
from tests.faults.frames import jpeg_payloads
from tests.faults.mjpeg import MjpegCamera
from tests.faults.rtsp import RtspCamera, rtsp_server_missing
from tests.waiting import until

KEYS = PipelineKeys()
STALL_AFTER_S = 2.0
SETTINGS = Settings(
    ingest={
        "high_water": 100_000,  # nothing consumes the frames here: never drop for backpressure
        "stall_after_s": STALL_AFTER_S,
        "reconnect_initial_backoff_s": 0.1,
        "reconnect_max_backoff_s": 0.5,
        "open_timeout_s": 3.0,
    }
)


@pytest.fixture(scope="module")
def rtsp_camera() -> Iterator[RtspCamera]:
    if (missing := rtsp_server_missing()) is not None:
        pytest.skip(missing)
    camera = RtspCamera(fps=15)
    camera.start()
    try:
        yield camera
    finally:
        camera.stop()


@pytest.fixture
async def ingest(redis_server: RedisServer, redis_client: Any) -> AsyncIterator[IngestStage]:
    client = await connect(redis_server.url)
    stage = IngestStage(SETTINGS, client, consumer="ingest-0")
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    try:
        yield stage
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await client.aclose()


async def status(client: Any, source: str) -> SourceStatus:
    (found,) = [s for s in await list_sources(client, KEYS) if s.source_id == source]
    return found


async def status_events(client: Any, source: str) -> list[dict]:
    metas = [decode_message(f[FIELD.encode()]).meta for _, f in await client.xrange(KEYS.events)]
    return [m for m in metas if m.get("type") == "source_status" and m.get("source") == source]


async def published(client: Any, source: str) -> list[dict]:
    metas = [decode_message(f[FIELD.encode()]).meta for _, f in await client.xrange(KEYS.frames)]
    return [m for m in metas if m.get("source") == source and m.get("kind") == "frame"]


async def test_an_rtsp_camera_that_goes_away_is_reconnected_and_the_outage_shows(
    redis_client: Any, ingest: IngestStage, rtsp_camera: RtspCamera
) -> None:
    source = "door-rtsp"
    await add_source(redis_client, KEYS, source, {"uri": rtsp_camera.url})

    async def playing_with(n: int) -> bool:
        s = await status(redis_client, source)
        return s.status == "playing" and s.frames >= n

    await until(lambda: playing_with(15), timeout_s=60, what="the first frames from the RTSP camera")
    before = await status(redis_client, source)
    assert before.reconnects == 0 and before.fps is not None and before.fps > 0
    assert metrics.gauge("source_up", source=source) == 1.0

    rtsp_camera.stop()  # the camera goes away mid-stream

    async def reconnecting() -> bool:
        return (await status(redis_client, source)).status == "reconnecting"

    await until(reconnecting, timeout_s=30, what="status reconnecting while the camera is down")
    down = await status(redis_client, source)
    assert down.reason and down.fps is None and down.owner == "ingest-0"
    item = json.loads(json.dumps(_source_json(down)))  # one item of GET /v1/sources
    assert {k: item[k] for k in ("id", "status", "frames", "dropped", "reconnects", "fps")} == {
        "id": source, "status": "reconnecting", "frames": down.frames, "dropped": down.dropped,
        "reconnects": down.reconnects, "fps": None,
    }  # fmt: skip
    assert item["reason"] == down.reason and isinstance(item["last_frame_age_s"], float)
    await until(lambda: metrics.gauge("source_up", source=source) == 0.0, timeout_s=10, what="source_up 0")
    await until(
        lambda: metrics.total("source_reconnects", source=source) >= 1,
        timeout_s=10,
        what="a reconnect attempt",
    )
    frames_at_outage = len(await published(redis_client, source))
    age = (await status(redis_client, source)).last_frame_age_s
    assert age is not None and age > 0

    rtsp_camera.start()  # back, on the same address

    async def recovered() -> bool:
        s = await status(redis_client, source)
        return s.status == "playing" and len(await published(redis_client, source)) >= frames_at_outage + 15

    await until(recovered, timeout_s=60, what="frames from the camera after its restart")
    after = await status(redis_client, source)
    assert after.reconnects >= 1 and after.reason is None
    assert after.last_frame_age_s is not None and after.last_frame_age_s < STALL_AFTER_S
    seqs = [m["seq"] for m in await published(redis_client, source)]
    assert seqs == list(range(len(seqs)))  # one source, one seq line, through the outage
    changes = [e["change"] for e in await status_events(redis_client, source)]
    assert "recovered" in changes and changes[-1] == "recovered", changes
    first_outage = min(changes.index(c) for c in ("reconnecting", "stalled") if c in changes)
    assert first_outage < changes.index("recovered"), changes
    assert metrics.gauge("source_up", source=source) == 1.0
    assert metrics.total("source_reconnects", source=source) == after.reconnects
    assert metrics.total("source_frames", source=source) >= len(seqs)
    assert metrics.total("source_dropped", source=source) == after.dropped


async def test_a_camera_that_stops_sending_but_stays_connected_is_marked_stalled_and_reconnected(
    redis_client: Any, ingest: IngestStage
) -> None:
    source = "door-mjpeg"
    sse: list[str] = []
    closed = asyncio.Event()

    async def follow() -> None:  # what GET /v1/events sends a client
        async def gone() -> bool:
            return closed.is_set()

        hub = FeedHub(ResultQueries(redis_client, KEYS), max_feeds=1, max_feeds_per_client=1, queue_size=1000)
        _, text = await hub.follow("c", None, source=source, kinds=set(KINDS), disconnected=gone, max_s=600)
        async for chunk in text:
            sse.append(chunk)

    feed = asyncio.create_task(follow())
    await until(lambda: bool(sse), timeout_s=10, what="the event feed to open")
    with MjpegCamera(jpeg_payloads(4), fps=20, frames=100_000, hold_after=10, serve_again=True) as camera:
        await add_source(redis_client, KEYS, source, {"uri": camera.url})
        await until(camera.holding.is_set, timeout_s=30, what="the camera holding its connection")
        held_s = time.monotonic()

        async def stalled_event() -> bool:
            return any(e["change"] == "stalled" for e in await status_events(redis_client, source))

        await until(stalled_event, timeout_s=30, what="a stalled event")
        noticed_s = time.monotonic() - held_s
        # the read was cut off at the stall limit: not earlier, and not blocked for good
        assert 0.8 * STALL_AFTER_S <= noticed_s <= STALL_AFTER_S + 5, noticed_s
        (stall,) = [e for e in await status_events(redis_client, source) if e["change"] == "stalled"]
        assert (stall["status"], stall["previous"]) == ("stalled", "playing")
        assert "no frame" in stall["reason"]

        async def playing_again() -> bool:
            s = await status(redis_client, source)
            return s.status == "playing" and len(await published(redis_client, source)) >= 20

        await until(playing_again, timeout_s=30, what="frames after the reconnect")
        assert camera.connections >= 2
        after = await status(redis_client, source)
        assert after.reconnects >= 1
        changes = [e["change"] for e in await status_events(redis_client, source)]
        assert changes[0] == "stalled" and changes[-1] == "recovered", changes
        assert metrics.total("source_reconnects", source=source) >= 1

    async def relayed() -> bool:
        return sum(t.startswith("event: source_status\n") for t in sse) >= len(changes)

    await until(relayed, timeout_s=10, what="the status events on the SSE feed")
    closed.set()
    await asyncio.wait_for(feed, 10)
    assert [json.loads(t.split("data: ", 1)[1])["change"] for t in sse if "source_status" in t] == changes


async def test_files_finish_and_a_missing_file_fails_with_its_reason_without_retrying(
    redis_client: Any, ingest: IngestStage, tmp_path: Path
) -> None:
    clip = write_demo_clip(tmp_path / "clip.mp4", frames=12, size=(64, 48))
    await add_source(redis_client, KEYS, "clip", {"uri": str(clip)})
    await add_source(redis_client, KEYS, "gone", {"uri": str(tmp_path / "gone.mp4")})

    async def both_done() -> bool:
        return all(s.done for s in await list_sources(redis_client, KEYS))

    await until(both_done, timeout_s=30, what="both sources done")
    clip_status, gone = await status(redis_client, "clip"), await status(redis_client, "gone")
    assert (clip_status.status, clip_status.reason, clip_status.frames) == ("finished", None, 12)
    assert clip_status.reconnects == 0 and clip_status.fps is None
    assert gone.status == "failed" and "no such file" in (gone.reason or "") and gone.frames == 0
    (event,) = await status_events(redis_client, "gone")
    assert event["change"] == "failed" and event["reason"] == gone.reason
    assert await status_events(redis_client, "clip") == []  # a normal end is the eos, not an event
    assert metrics.gauge("source_up", source="clip") == 0.0


async def test_an_unreachable_camera_is_tried_past_any_limit_until_it_is_removed(
    redis_client: Any, ingest: IngestStage
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"rtsp://127.0.0.1:{sock.getsockname()[1]}/cam"
    source = "door-unreachable"
    await add_source(redis_client, KEYS, source, {"uri": url})

    async def still_trying() -> bool:
        s = await status(redis_client, source)
        return s.status == "reconnecting" and s.reconnects >= 10  # no cap on attempts

    await until(still_trying, timeout_s=60, what="ten reconnect attempts")
    s = await status(redis_client, source)
    assert not s.done and s.reason and url.split("@")[-1] in s.reason and s.frames == 0
    assert s.last_frame_age_s is None and s.fps is None
    assert await status_events(redis_client, source) == []  # never played: nothing recovered or lost
    assert await remove_source(redis_client, KEYS, source)

    async def ended() -> bool:
        metas = [decode_message(f[FIELD.encode()]).meta for _, f in await redis_client.xrange(KEYS.frames)]
        return any(m["kind"] == "eos" and m["source"] == source for m in metas)

    await until(ended, timeout_s=15, what="end-of-stream after removal")
    state = json.loads(await redis_client.hget(KEYS.source_state, source))
    assert (state["status"], state["reason"], state["done"]) == ("finished", "removed", True)
