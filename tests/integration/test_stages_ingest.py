"""ingest against a real redis-server: one player per source across replicas, takeover after a
crash without loss, backpressure for files, counted drops for live sources."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stream.adapters.media.video import Frame, register_source_kind, write_demo_clip
from stream.adapters.redis.client import connect
from stream.adapters.redis.group_stats import group_stats
from stream.adapters.redis.server import RedisServer
from stream.adapters.redis.source_registry import add_source, list_sources, remove_source
from stream.core.codec import decode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.settings import Settings
from stream.stages.ingest.frames import eos_message
from stream.stages.ingest.stage import IngestStage
from stream.waiting import cancel_and_wait
from tests.waiting import until

KEYS = PipelineKeys()


async def frames_published(client) -> list[dict]:
    return [decode_message(f[FIELD.encode()]).meta for _, f in await client.xrange(KEYS.frames)]


async def wait_for(predicate, timeout_s: float = 30, what: str = "condition"):
    await until(predicate, timeout_s=timeout_s, what=what)


async def _backlog_reads(client) -> int:
    """XINFO calls Redis has served: ingest reads the pipeline's backlog with them while it waits."""
    stats = await client.info("commandstats")
    return sum(int(v.get("calls", 0)) for k, v in stats.items() if k.startswith("cmdstat_xinfo"))


async def ingest_paused(client, step=None, times: int = 10) -> None:
    """Wait until ingest has looked at the backlog `times` times more (calling `step` in between,
    the stages that keep up): as many chances to publish past the high-water mark."""
    start = await _backlog_reads(client)

    async def looked() -> bool:
        if step is not None:
            await step()
        return await _backlog_reads(client) >= start + times

    await wait_for(looked, what=f"ingest to check the backlog {times} times")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_clip(tmp_path_factory.mktemp("ingest") / "demo.mp4", frames=60, size=(160, 120))


async def test_two_replicas_play_each_source_exactly_once(
    redis_server: RedisServer, redis_client, clip
) -> None:
    settings = Settings()
    stop = asyncio.Event()
    clients = [await connect(redis_server.url) for _ in range(2)]
    replicas = [IngestStage(settings, c, consumer=f"ingest-{i}") for i, c in enumerate(clients)]
    tasks = [asyncio.create_task(r.run(stop)) for r in replicas]
    for i in range(4):
        await add_source(redis_client, KEYS, f"cam{i}", {"uri": str(clip), "every_nth": 2})

    async def all_done() -> bool:
        return (
            all(s.done for s in await list_sources(redis_client, KEYS))
            and len(await list_sources(redis_client, KEYS)) == 4
        )

    await wait_for(all_done, what="all sources done")
    stop.set()
    await asyncio.gather(*tasks)
    for c in clients:
        await c.aclose()
    metas = await frames_published(redis_client)
    for i in range(4):
        mine = [m for m in metas if m["source"] == f"cam{i}"]
        assert [m["seq"] for m in mine] == list(range(31))  # 30 frames then end-of-stream
        assert mine[-1]["kind"] == "eos" and all(m["kind"] == "frame" for m in mine[:-1])
        assert all(m["capture_ms"] <= m["ingest_ms"] for m in mine[:-1])
    assert sum(r.processed for r in replicas) == 4 * 31


@pytest.mark.slow
async def test_replicas_share_the_sources_and_a_moved_source_loses_and_repeats_no_frame(
    redis_server: RedisServer, redis_client, tmp_path: Path
) -> None:
    """A replica that joins takes half the sources from the one playing them all, one that leaves
    hands its sources back; each moved source goes on after the last frame published."""
    clip = write_demo_clip(tmp_path / "long.mp4", frames=150, size=(160, 120))  # 5 s in real time
    settings = Settings(ingest={"high_water": 10_000})  # nothing reads the frames here
    clients = [await connect(redis_server.url) for _ in range(2)]
    stops = [asyncio.Event(), asyncio.Event()]
    a, b = (
        IngestStage(settings, c, consumer=f"ingest-{i}", scan_interval_s=0.05) for i, c in enumerate(clients)
    )
    sources = [f"cam{i}" for i in range(6)]
    for name in sources:
        await add_source(redis_client, KEYS, name, {"uri": str(clip), "realtime": True})
    task_a = asyncio.create_task(a.run(stops[0]))
    task_b = None
    try:
        await wait_for(lambda: a.playing == sources, what="one replica playing every source")
        task_b = asyncio.create_task(b.run(stops[1]))
        await wait_for(lambda: len(a.playing) == len(b.playing) == 3, what="the sources shared 3 and 3")
        moved = set(b.playing)
        await wait_for(lambda: b.processed > 0, what="the joiner publishing its sources' frames")
        stops[1].set()  # b leaves: a takes its sources back
        await task_b
        await wait_for(lambda: a.playing == sources, what="the leaver's sources back on the other")

        async def all_done() -> bool:
            return all(s.done for s in await list_sources(redis_client, KEYS))

        await wait_for(all_done, what="all sources done")
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(task_a, *([task_b] if task_b else []))
        for c in clients:
            await c.aclose()
    metas = await frames_published(redis_client)
    for name in sources:
        mine = [m for m in metas if m["source"] == name]
        assert [m["seq"] for m in mine] == list(range(151)), name  # 150 frames, then end-of-stream
        captured = [m["capture_ms"] for m in mine[:-1]]
        assert captured == sorted(set(captured)), f"{name}: a frame repeated or out of order"
    assert b.processed > 0 and moved


@pytest.mark.slow
async def test_killed_replica_is_taken_over_and_nothing_is_lost(
    redis_server: RedisServer, redis_client, clip, tmp_path: Path
) -> None:
    await add_source(redis_client, KEYS, "slow", {"uri": str(clip), "realtime": True})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "stage",
            "ingest",
            "--redis",
            redis_server.url,
            "--consumer",
            "victim",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:

        async def some_published() -> bool:
            return await redis_client.xlen(KEYS.frames) >= 20

        await wait_for(some_published, what="the first frames")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert await redis_client.get(KEYS.source_lease("slow")) == b"victim"  # the dead replica still holds it
    client = await connect(redis_server.url)
    stop = asyncio.Event()
    heir = IngestStage(Settings(), client, consumer="heir")
    task = asyncio.create_task(heir.run(stop))

    async def done() -> bool:
        return (await list_sources(redis_client, KEYS))[0].done

    await wait_for(done, timeout_s=40, what="the heir to finish the source")
    stop.set()
    await task
    await client.aclose()
    seqs = [m["seq"] for m in await frames_published(redis_client)]
    assert sorted(set(seqs)) == list(range(61))  # no frame lost across the takeover
    assert len(seqs) - len(set(seqs)) == 0  # progress is recorded with each publish: no duplicates either


async def test_file_source_pauses_at_high_water(redis_server: RedisServer, redis_client, clip) -> None:
    settings = Settings(ingest={"high_water": 12})
    await redis_client.xgroup_create(KEYS.frames, "preprocess:slow", id="0", mkstream=True)
    client = await connect(redis_server.url)
    stop = asyncio.Event()
    task = asyncio.create_task(IngestStage(settings, client, consumer="i").run(stop))
    await add_source(redis_client, KEYS, "file", {"uri": str(clip)})

    async def stalled() -> bool:
        return await redis_client.xlen(KEYS.frames) >= 12

    await wait_for(stalled, what="frames up to high water")
    await ingest_paused(redis_client)  # every chance to overshoot
    assert 12 <= await redis_client.xlen(KEYS.frames) <= 12 + 8  # at most one chunk past the mark
    assert not (await list_sources(redis_client, KEYS))[0].done

    async def caught_up() -> bool:  # a consumer catches up: the source resumes and finishes
        reply = await redis_client.xreadgroup("preprocess:slow", "c", {KEYS.frames: ">"}, count=10, block=100)
        ids = [i for _, items in reply or [] for i, _ in items]
        if ids:
            await redis_client.xack(KEYS.frames, "preprocess:slow", *ids)
        return (await list_sources(redis_client, KEYS))[0].done

    await wait_for(caught_up, what="the source to finish once the consumer caught up")
    stop.set()
    await task
    await client.aclose()
    assert [m["seq"] for m in await frames_published(redis_client)][-1] == 60


@pytest.mark.parametrize("queue_ms", [1_000, 0])
async def test_file_source_keeps_about_queue_ms_of_the_drain_rate_waiting(
    redis_server: RedisServer, redis_client, clip, queue_ms: int
) -> None:
    """A consumer takes 80 frames/s; with ``queue_ms`` ingest keeps about 80 frames waiting for
    it (its window, the floor being 4 x 1 + 32 = 36), far under ``high_water``; with it off,
    ingest keeps ``high_water`` frames waiting."""
    high_water = 300
    settings = Settings(
        ingest={"high_water": high_water, "queue_ms": queue_ms}, infer={"max_batch_size": 4, "inflight": 1}
    )
    group = "preprocess:slow"
    await redis_client.xgroup_create(KEYS.frames, group, id="0", mkstream=True)
    backlogs: list[int] = []  # the group's backlog before each take

    async def consume() -> None:  # a slow stage: 8 frames every 0.1 s at most
        while True:
            backlogs.append((await group_stats(redis_client, KEYS.frames, group)).backlog)
            reply = await redis_client.xreadgroup(group, "c", {KEYS.frames: ">"}, count=8)
            ids = [i for _, items in reply or [] for i, _ in items]
            if ids:
                await redis_client.xack(KEYS.frames, group, *ids)
            await asyncio.sleep(0.1)  # the consumer's pace, not a wait for ingest

    client = await connect(redis_server.url)
    stop = asyncio.Event()
    task = asyncio.create_task(IngestStage(settings, client, consumer="i").run(stop))
    consumer = asyncio.create_task(consume())
    await add_source(redis_client, KEYS, "file", {"uri": str(clip), "loop": True})
    try:
        # Until a rate is measured, the window is high_water: the backlog first rises towards it.
        await wait_for(
            lambda: backlogs and max(backlogs) >= high_water / 2, what="the first frames to pile up"
        )
        if queue_ms:
            await wait_for(lambda: backlogs[-1] <= high_water / 3, what="the backlog down to the window")
            settled = len(backlogs)
            await wait_for(lambda: len(backlogs) >= settled + 40, what="40 more takes (4 s at the pace)")
            kept = backlogs[settled:]
            assert max(kept) < high_water / 2  # 80/s x 1 s + a chunk past the window, not 300
            assert min(kept) > 0  # and yet the consumer always had frames waiting
        else:
            await wait_for(lambda: backlogs[-1] >= high_water, what="the backlog up to high_water")
    finally:
        stop.set()
        await cancel_and_wait([consumer])
        await task
        await client.aclose()


@pytest.mark.parametrize("lagging", ["infer", "postprocess"])
async def test_file_source_also_pauses_while_a_later_stage_lags_behind(
    redis_server: RedisServer, redis_client, clip, lagging: str
) -> None:
    """Preprocess keeps up, but inference (tensors pile up) or postprocess (scores pile up) does not.
    This test plays preprocess itself, so every frame goes through the frames stream."""
    model = "mobilenet-v1-0.25-128"
    pre, slow = f"preprocess:{model}", f"{lagging}:{model}"
    piled = KEYS.tensors(model) if lagging == "infer" else KEYS.scores(model)
    await redis_client.xgroup_create(KEYS.frames, pre, id="0", mkstream=True)
    await redis_client.xgroup_create(piled, slow, id="0", mkstream=True)
    client = await connect(redis_server.url)
    stop = asyncio.Event()
    settings = Settings(ingest={"high_water": 12, "straight_to_tensors": False})
    ingest = IngestStage(settings, client, consumer="i")
    task = asyncio.create_task(ingest.run(stop))
    await add_source(redis_client, KEYS, "file", {"uri": str(clip)})

    async def fast_stages_step() -> None:  # the stages before the slow one: never behind
        reply = await redis_client.xreadgroup(pre, "p", {KEYS.frames: ">"}, count=50, block=20)
        for _, items in reply or []:
            for entry_id, _ in items:
                await redis_client.xadd(piled, {"d": b"entry"})
                await redis_client.xack(KEYS.frames, pre, entry_id)

    async def piled_up() -> bool:
        await fast_stages_step()
        return await redis_client.xlen(piled) >= 12

    await wait_for(piled_up, what=f"{piled} up to high water")
    await ingest_paused(redis_client, fast_stages_step)  # every chance to overshoot, fast stages keeping up
    assert 12 <= await redis_client.xlen(piled) <= 12 + 8  # the frames stream alone never filled up
    assert not (await list_sources(redis_client, KEYS))[0].done

    async def caught_up() -> bool:  # the slow stage catches up: the source resumes and finishes
        await fast_stages_step()
        reply = await redis_client.xreadgroup(slow, "c", {piled: ">"}, count=10, block=20)
        ids = [i for _, items in reply or [] for i, _ in items]
        if ids:
            await redis_client.xack(piled, slow, *ids)
        return (await list_sources(redis_client, KEYS))[0].done

    await wait_for(caught_up, what="the source to finish once the slow stage caught up")
    stop.set()
    await task
    await client.aclose()
    assert [m["seq"] for m in await frames_published(redis_client)] == list(range(61))


async def test_frames_skip_preprocess_only_once_it_has_none_of_theirs_left(
    redis_server: RedisServer, redis_client, clip
) -> None:
    """Frames ingest made to the one model's input go straight into its tensors stream, but never
    ahead of a frame still in the frames stream: while preprocess has entries left there, frames
    queue behind them; once it took them all, the rest go straight. The end of the source goes
    through the frames stream, so preprocess passes it on behind every frame."""
    model = "mobilenet-v1-0.25-128"
    pre = f"preprocess:{model}"
    await redis_client.xgroup_create(KEYS.frames, pre, id="0", mkstream=True)
    await redis_client.xadd(KEYS.frames, {FIELD: eos_message("earlier", 0)})  # not taken yet
    client = await connect(redis_server.url)
    stop = asyncio.Event()
    ingest = IngestStage(Settings(ingest={"high_water": 12, "queue_ms": 0}), client, consumer="i")
    task = asyncio.create_task(ingest.run(stop))

    async def held_back() -> bool:
        return len([m for m in await frames_published(redis_client) if m["source"] == "file"]) >= 11

    async def done() -> bool:
        return (await list_sources(redis_client, KEYS))[0].done

    try:
        await add_source(redis_client, KEYS, "file", {"uri": str(clip)})
        await wait_for(held_back, what="frames queued behind the entry preprocess has not taken")
        await ingest_paused(redis_client)
        reply = await redis_client.xreadgroup(pre, "p", {KEYS.frames: ">"})  # preprocess takes them all
        await redis_client.xack(KEYS.frames, pre, *[entry_id for _, items in reply for entry_id, _ in items])
        await wait_for(done, what="the source to finish")
    finally:
        stop.set()
        await task
        await client.aclose()
    queued = [m for m in await frames_published(redis_client) if m["source"] == "file"]
    straight = [
        decode_message(f[FIELD.encode()]).meta for _, f in await redis_client.xrange(KEYS.tensors(model))
    ]
    *queued, eos = queued
    assert [m["seq"] for m in queued] == list(range(len(queued))) and 11 <= len(queued) < 60
    assert [m["seq"] for m in straight] == list(range(len(queued), 60))
    assert all(m["model"] == model and m["kind"] == "frame" and m["fit"] for m in straight)
    assert (eos["kind"], eos["seq"]) == ("eos", 60)


class _FastLive:
    """A live source that produces frames faster than anyone reads them."""

    live = True

    def __init__(self, rest: str) -> None:
        self.uri = f"fastlive:{rest}"
        self._closed = False

    reads = 0  # frames handed to ingest, across instances

    def read(self) -> Frame | None:
        if self._closed:
            return None
        time.sleep(0.002)
        _FastLive.reads += 1
        return Frame(rgb=np.full((48, 64, 3), 128, np.uint8), capture_ms=time.time() * 1000)

    def close(self) -> None:
        self._closed = True


async def test_live_source_drops_and_counts_every_drop(redis_server: RedisServer, redis_client) -> None:
    register_source_kind("fastlive", _FastLive)
    _FastLive.reads = 0
    settings = Settings(ingest={"high_water": 10, "live_queue": 4})
    await redis_client.xgroup_create(KEYS.frames, "preprocess:none", id="0", mkstream=True)
    client = await connect(redis_server.url)
    stop = asyncio.Event()
    ingest = IngestStage(settings, client, consumer="i")
    task = asyncio.create_task(ingest.run(stop))
    await add_source(redis_client, KEYS, "cam", {"uri": "fastlive:x"})

    async def dropping() -> bool:
        return int(await redis_client.hget(KEYS.counters, "dropped:cam") or 0) >= 50

    await wait_for(dropping, what="drops")
    assert await redis_client.xlen(KEYS.frames) <= 10 + 8  # live frames never pile up past high water
    assert await remove_source(redis_client, KEYS, "cam")

    async def ended() -> bool:
        return any(m["kind"] == "eos" for m in await frames_published(redis_client))

    await wait_for(ended, what="end-of-stream after removal")
    stop.set()
    await task
    await client.aclose()
    metas = await frames_published(redis_client)
    assert metas[-1]["reason"] == "removed"
    published = int(await redis_client.hget(KEYS.counters, "published:cam"))
    dropped = int(await redis_client.hget(KEYS.counters, "dropped:cam"))
    assert published == len(metas) - 1 and dropped == ingest.dropped > 0
    # every frame the camera gave is published or counted as dropped, buffered ones at removal too
    assert published + dropped == _FastLive.reads
    state = json.loads(await redis_client.hget(KEYS.source_state, "cam"))
    assert state["done"] and state["next_seq"] == published + 1
