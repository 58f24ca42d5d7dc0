"""Scenarios 1 and 3: no fault, and undecodable frames; plus the MAXLEN negative control.

Every scenario plays a folder of 160x120 JPEG frames through the real ingest stage of the Serve
application (local Ray, real redis-server) and checks what reaches the sink.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.faults.conftest import Stack
from tests.faults.scenario import Harness
from tests.faults.sink import dead_letters
from tests.waiting import poll

pytestmark = [
    pytest.mark.faults,
    pytest.mark.ray,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

FRAMES = 10_000
BAD = 10


async def test_no_fault_every_frame_exactly_one_result(harness: Harness) -> None:
    replay = await harness.replay("1-no-fault", FRAMES)
    assert await harness.follow(replay, timeout_s=150), f"only {replay.sink.distinct}/{FRAMES} results"
    pending = await harness.settle(replay)
    outcome = await harness.outcome("1 no fault", replay, pending=pending, note="Ray")
    await harness.record(outcome, replay, runner="ray")
    await harness.close(replay)
    assert (outcome.results, outcome.lost, outcome.duplicates, outcome.pending) == (FRAMES, 0, 0, 0)
    assert replay.sink.eos[replay.source]["frames"] == FRAMES


async def test_undecodable_frames_are_dead_lettered_with_reasons(harness: Harness) -> None:
    bad = {FRAMES * (i + 1) // (BAD + 1) for i in range(BAD)}
    replay = await harness.replay("3-bad-frames", FRAMES, corrupt=bad)
    assert await harness.follow(replay, timeout_s=150), f"only {replay.sink.distinct} results"
    pending = await harness.settle(replay)
    outcome = await harness.outcome(
        "3 undecodable frames", replay, pending=pending, note=f"Ray; {BAD} corrupt JPEGs"
    )
    await harness.record(outcome, replay, runner="ray")
    await harness.close(replay)
    letters = await dead_letters(harness.client, harness.keys, {replay.source})
    assert {d["seq"] for d in letters} == bad and len(letters) == BAD
    assert all(d["stage"] == "preprocess" and "JPEG" in d["reason"].upper() for d in letters), letters[:2]
    assert (outcome.results, outcome.dead_lettered, outcome.lost, outcome.pending) == (
        FRAMES - BAD,
        BAD,
        0,
        0,
    )
    assert outcome.duplicates == 0


async def test_negative_control_a_maxlen_trim_loses_frames_and_the_checker_says_so(
    harness: Harness, stack: Stack
) -> None:
    """`XTRIM MAXLEN` while inference is behind deletes tensors its group has not read yet (what
    framestream's MINID trim never does): the checker must report them lost. (Inference's hop,
    which every frame takes: the frames ingest makes to the model's input skip preprocess.)"""
    frames = 2_000
    replay = await harness.replay("1c-maxlen-trim", frames)
    assert await harness.follow(replay, timeout_s=60, until=lambda: replay.sink.distinct >= 200)
    group = harness.keys.group("infer", harness.model)
    stream = harness.keys.tensors(harness.model)
    paused = stack.app.pids("Infer")
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:

        async def behind() -> bool:
            # unread tensors to trim: ingest stops at its window (at least 64 frames once no drain
            # is measured), of which the stopped replicas hold some as pending (40 here), not lag
            stats = {g["name"]: g for g in await harness.client.xinfo_groups(stream)}
            return int(stats[group.encode()]["lag"] or 0) >= 32

        assert await poll(behind, timeout_s=20)
        trimmed = await harness.client.xtrim(stream, maxlen=0, approximate=False)
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    await harness.follow(replay, timeout_s=40, until=lambda: replay.source in replay.sink.eos, stall_s=15)
    pending = await harness.settle(replay)
    outcome = await harness.outcome(
        "1c control: MAXLEN trim",
        replay,
        pending=pending,
        note=f"negative control; {trimmed} entries trimmed",
    )
    await harness.record(outcome, replay, runner="ray", control=True)
    await harness.close(replay)
    # repair the group's read counter (Redis 7.0 counts the trimmed entries as unread forever)
    added = (await harness.client.xinfo_stream(stream))["entries-added"]
    last = {g["name"]: g for g in await harness.client.xinfo_groups(stream)}[group.encode()]
    await harness.client.xgroup_setid(stream, group, last["last-delivered-id"], entries_read=added)
    assert trimmed > 0 and outcome.lost > 0, outcome
