"""Scenario 6: overload. A live camera (HTTP MJPEG) sends at twice the pipeline's measured capacity
(the note gives the factor reached: TCP makes the camera wait for ingest's reader)
while a file source plays too, with Redis capped (maxmemory, noeviction): Redis memory stays
under the cap, the live source drops by policy and every drop is counted (published + dropped =
frames the camera sent), and the file source waits instead of dropping (no drop, no loss, the
frames backlog held near ``ingest.high_water``)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from stream.adapters.redis.source_registry import remove_source
from stream.adapters.redis.streams import StreamTransport
from tests.faults.conftest import Stack
from tests.faults.frames import jpeg_payloads
from tests.faults.mjpeg import MjpegCamera
from tests.faults.scenario import Harness, Replay
from tests.waiting import poll

pytestmark = [
    pytest.mark.faults,
    pytest.mark.ray,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

OVERLOAD_S = float(os.environ.get("FRAMESTREAM_FAULTS_OVERLOAD_S", "60"))
"""How long the camera sends, in seconds (`FRAMESTREAM_FAULTS_OVERLOAD_S` shortens it)."""
PROBE_FRAMES = 2_000
FILE_FRAMES = 3_000
CAP_MB = 128
"""Redis maxmemory above what the pipeline held before the overload. What may grow by design:
the results and events streams up to `streams.max_len` entries each (~50 MB together when they
start near empty, as on a fresh stack) and up to `ingest.high_water` frames in each of the frames,
tensors and scores streams (~15 MB). The camera sends ~120,000 frames (~1 GB) in 60 s: a live
source that did not drop would pass the cap within seconds."""


class Sampler:
    """Samples Redis memory, the frames backlog and the sources' counters while the overload runs."""

    def __init__(self, harness: Harness, stage_group: str) -> None:
        self.h = harness
        self.group = stage_group
        self.transport = StreamTransport(harness.client, harness.keys, stage="faults")
        self.max_used = 0
        self.max_backlog = 0
        self.max_tensors = 0

    async def sample(self) -> None:
        info = await self.h.client.info("memory")
        self.max_used = max(self.max_used, int(info["used_memory"]))
        stats = await self.transport.group_stats(self.h.keys.frames, self.group)
        self.max_backlog = max(self.max_backlog, stats.backlog)
        self.max_tensors = max(
            self.max_tensors, int(await self.h.client.xlen(self.h.keys.tensors(self.h.model)))
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sample()
            await asyncio.sleep(0.1)


async def _counters(harness: Harness, source: str) -> tuple[int, int]:
    raw = await harness.client.hmget(harness.keys.counters, f"published:{source}", f"dropped:{source}")
    return int(raw[0] or 0), int(raw[1] or 0)


async def _poll(*replays: Replay) -> None:
    for r in replays:
        await r.sink.poll(block_ms=50)


async def test_overload_live_drops_are_counted_files_wait_memory_stays_capped(
    harness: Harness, stack: Stack
) -> None:
    probe = await harness.replay("6-capacity", PROBE_FRAMES)
    t0 = time.monotonic()
    assert await harness.follow(probe, timeout_s=90)
    capacity_fps = PROBE_FRAMES / (time.monotonic() - t0)
    await harness.settle(probe)
    await harness.close(probe)

    client = harness.client
    base_used = int((await client.info("memory"))["used_memory"])
    cap = base_used + CAP_MB * 2**20
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", cap)
    sampler = Sampler(harness, harness.keys.group("preprocess", harness.model))
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    live_fps = 2 * capacity_fps
    camera = MjpegCamera(jpeg_payloads(), fps=live_fps, frames=int(live_fps * OVERLOAD_S), seconds=OVERLOAD_S)
    try:
        with camera:
            files = await harness.replay("6-file", FILE_FRAMES)
            live = await harness.replay("6-live", 0, uri=camera.url, live=True)
            deadline = time.monotonic() + OVERLOAD_S * 3 + 30
            while not camera.finished.is_set() and time.monotonic() < deadline:
                await _poll(files, live)
            assert camera.finished.is_set(), (
                f"the camera sent {camera.sent} frames in {OVERLOAD_S * 3 + 30:.0f} s"
            )

            async def accounted() -> bool:
                await _poll(files, live)
                return sum(await _counters(harness, live.source)) >= camera.sent

            all_counted = await poll(accounted, timeout_s=30, every_s=0.05)
            published, dropped = await _counters(harness, live.source)
            await remove_source(client, harness.keys, live.source)
        live.frames = published

        async def both_done() -> bool:
            await _poll(files, live)
            return files.done and live.source in live.sink.eos and live.sink.distinct >= published

        finished = await poll(both_done, timeout_s=120, every_s=0.01)
    finally:
        stop.set()
        await sampling
        await client.config_set("maxmemory", 0)
    file_published, file_dropped = await _counters(harness, files.source)
    pending = await harness.settle(files)
    await _poll(live)
    high_water = stack.settings.ingest.high_water
    details: dict[str, Any] = {
        "capacity_fps": round(capacity_fps, 1),
        "live_offered_fps": round(camera.offered_fps, 1),
        "camera_sent": camera.sent,
        "live_published": published,
        "live_dropped": dropped,
        "file_dropped": file_dropped,
        "redis_cap_mb": round(cap / 2**20, 1),
        "redis_max_used_mb": round(sampler.max_used / 2**20, 1),
        "max_frames_backlog": sampler.max_backlog,
        "max_tensors_len": sampler.max_tensors,
    }
    live_outcome = await harness.outcome(
        "6 overload: live source",
        live,
        pending=pending,
        note=(
            f"Ray; {OVERLOAD_S:.0f} s at {camera.offered_fps:.0f} fps "
            f"= {camera.offered_fps / capacity_fps:.1f}x "
            f"capacity; {dropped} of {camera.sent} dropped and counted; Redis peak "
            f"{details['redis_max_used_mb']} MB, cap {details['redis_cap_mb']} MB"
        ),
    )
    file_outcome = await harness.outcome(
        "6 overload: file source",
        files,
        pending=pending,
        note=f"Ray; waited, dropped {file_dropped}; frames backlog <= {sampler.max_backlog}",
    )
    await harness.record(live_outcome, live, runner="ray", **details)
    await harness.record(file_outcome, files, runner="ray", **details)
    await harness.close(files)
    await harness.close(live)
    assert finished, f"file {files.sink.distinct}/{FILE_FRAMES}, live {live.sink.distinct}/{published}"
    assert sampler.max_used < cap, details
    assert all_counted and published + dropped == camera.sent and dropped > 0, details
    assert (live_outcome.lost, file_outcome.lost, pending) == (0, 0, 0), (live_outcome, file_outcome)
    assert file_dropped == 0 and file_published == FILE_FRAMES, details
    assert sampler.max_backlog <= high_water + 100, details
