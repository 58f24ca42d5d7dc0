"""Scenario 2: SIGKILL replicas of one stage every few seconds while frames flow, for each stage in
turn (Ray Serve replaces them; survivors or replacements reclaim the dead consumer's entries).
The source's segments come out whole too: each once, in seq order, the last closed by its end.
Negative control: a dead consumer removed together with its pending entries loses frames."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import pytest

from stream.readers.results import decode_fields
from tests.faults.conftest import Stack
from tests.faults.scenario import Harness, Replay

pytestmark = [
    pytest.mark.faults,
    pytest.mark.ray,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

FRAMES = int(os.environ.get("FRAMESTREAM_FAULTS_KILL_FRAMES", "20000"))
"""Frames per stage (`FRAMESTREAM_FAULTS_KILL_FRAMES` scales it down). At ~1,000 frames/s they
last long enough for every kill (`MAX_KILLS`, one each `KILL_EVERY_S`); 6,000 would be over
before the third."""
KILL_EVERY_S = 3.0
MAX_KILLS = 3
"""Per stage. A killed single replica (Ingest, Postprocess) takes Serve several seconds to replace,
and the new Ingest waits for the dead one's source lease to expire (5 s), so more kills mostly
add wall time."""
PROGRESS_BETWEEN_KILLS = 200
STAGES = ("Ingest", "Preprocess", "Infer", "Postprocess")


async def _killer(stack: Stack, deployment: str, replay: Replay, kills: list[int]) -> None:
    """Every KILL_EVERY_S, SIGKILL one replica of `deployment`, once all its replicas run again and
    results moved on since the last kill (so every kill hits a working pipeline)."""
    rng = random.Random(7)
    want = stack.app.replicas[deployment]
    last_kill, results_then = time.monotonic(), 0
    while not replay.done and len(kills) < MAX_KILLS:
        await asyncio.sleep(0.2)
        pids = [p for p in stack.app.pids(deployment) if p not in kills]
        moved = replay.sink.distinct - results_then >= PROGRESS_BETWEEN_KILLS
        if time.monotonic() - last_kill < KILL_EVERY_S or len(pids) < want or not moved:
            continue
        victim = rng.choice(pids)
        os.kill(victim, signal.SIGKILL)
        replay.fault()
        kills.append(victim)
        last_kill, results_then = time.monotonic(), replay.sink.distinct


@pytest.mark.parametrize("deployment", STAGES)
async def test_sigkill_replicas_of_a_stage_loses_nothing(
    harness: Harness, stack: Stack, deployment: str
) -> None:
    replay = await harness.replay(f"2-kill-{deployment.lower()}", FRAMES)
    kills: list[int] = []
    killer = asyncio.create_task(_killer(stack, deployment, replay, kills))
    try:
        finished = await harness.follow(replay, timeout_s=240)
    finally:
        killer.cancel()
    pending = await harness.settle(replay)
    replicas = stack.app.replicas[deployment]
    outcome = await harness.outcome(
        f"2 SIGKILL {deployment}",
        replay,
        pending=pending,
        note=f"Ray; {len(kills)} kills of {replicas} replica(s); {FRAMES} frames",
    )
    await harness.record(outcome, replay, runner="ray", kills=len(kills), replicas=replicas)
    await harness.close(replay)
    assert finished, f"{replay.sink.distinct}/{FRAMES} results after 240 s"
    assert len(kills) >= 2
    assert (outcome.lost, outcome.pending) == (0, 0), outcome
    batch = max(stack.settings.streams.read_count, stack.settings.infer.max_batch_size)
    assert outcome.duplicates <= batch * len(kills), outcome
    # the product's own sink drops the duplicates (and counts them): one result per frame
    track = replay.sink.track(replay.source, harness.model)
    assert (track.results, track.seqs.floor) == (FRAMES, FRAMES - 1)
    assert track.duplicates == outcome.duplicates
    check_segments(await _segments(harness, replay.source), replay.sink.eos[replay.source])


async def _segments(harness: Harness, source: str) -> list[dict]:
    rows = await harness.client.xrange(harness.keys.for_source(source).segments)
    return [m for _, f in rows if (m := decode_fields(f)) is not None and m.get("source") == source]


def check_segments(segments: list[dict], eos: dict) -> None:
    """A source's closed segments after its end: each written once, one after the other in seq
    order, the last closed by the end, and together every frame smoothing took (its results less
    the late ones, which smoothing skips)."""
    assert segments and len({s["id"] for s in segments}) == len(segments), [s["id"] for s in segments]
    assert all(b["first_seq"] > a["last_seq"] for a, b in zip(segments, segments[1:], strict=False))
    assert [s["closed_by"] for s in segments] == ["label_change"] * (len(segments) - 1) + ["eos"]
    assert sum(s["frames"] for s in segments) == eos["results"] - eos["late"], eos


async def test_negative_control_a_dead_consumer_deleted_with_its_pending_entries_loses_frames(
    harness: Harness, stack: Stack
) -> None:
    """Reclaim defeated on purpose: a consumer of the infer group reads tensors and dies before
    acking them, and a careless cleanup deletes it from the group (XGROUP DELCONSUMER) before
    anyone can claim its entries. Those frames are gone and the checker must say so. (Inference's
    hop, which every frame takes: the frames ingest makes to the model's input skip preprocess.)

    The dead consumer is one of the test's own: it surely holds entries when it "dies". (Killing
    a replica instead left entries behind only when the kill landed mid-batch, which eight tries
    sometimes missed: the control then failed for want of a loss to detect.)"""
    frames = 12_000
    replay = await harness.replay("2c-delconsumer", frames)
    group = harness.keys.group("infer", harness.model)
    stream = harness.keys.tensors(harness.model)
    assert await harness.follow(replay, timeout_s=60, until=lambda: replay.sink.distinct >= 300)
    doomed = "infer-doomed"
    read = await harness.client.xreadgroup(group, doomed, {stream: ">"}, count=32, block=5_000)
    held = sum(len(items) for _, items in read or [])
    dropped = await harness.client.xgroup_delconsumer(stream, group, doomed)
    assert held > 0 and dropped == held, (held, dropped)
    await harness.follow(replay, timeout_s=60, until=lambda: replay.source in replay.sink.eos)
    pending = await harness.settle(replay)
    outcome = await harness.outcome(
        "2c control: reclaim defeated",
        replay,
        pending=pending,
        note=f"negative control; {dropped} entries dropped",
    )
    await harness.record(outcome, replay, runner="ray", control=True)
    await harness.close(replay)
    assert outcome.lost == dropped, outcome  # exactly the deleted entries, nothing else
