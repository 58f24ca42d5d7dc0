"""Scenario 7: scale-down mid-stream. Serve stops the removed replicas gracefully (the stage
deployment's drain: stop reading, finish and ack what it holds, leave the group), so nothing is
lost, nothing is duplicated and nothing stays pending."""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.conftest import REPLICAS, Stack
from tests.faults.scenario import Harness

pytestmark = [
    pytest.mark.faults,
    pytest.mark.ray,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

FRAMES = 6_000


async def test_scale_down_mid_stream_drains_without_loss_or_duplicates(
    harness: Harness, stack: Stack
) -> None:
    replay = await harness.replay("7-scale-down", FRAMES)
    assert await harness.follow(replay, timeout_s=60, until=lambda: replay.sink.distinct >= FRAMES // 4)
    before = {d: len(stack.app.pids(d)) for d in ("Preprocess", "Infer")}
    replay.fault()
    try:
        for deployment in ("Preprocess", "Infer"):
            await asyncio.to_thread(stack.app.scale, deployment, 1, wait=False)
        drained = await harness.follow(
            replay,
            timeout_s=90,
            until=lambda: len(stack.app.pids("Infer")) == len(stack.app.pids("Preprocess")) == 1,
        )
        finished = await harness.follow(replay, timeout_s=120)
        pending = await harness.settle(replay)
        outcome = await harness.outcome(
            "7 scale-down (drain)",
            replay,
            pending=pending,
            note=f"Ray; Preprocess {before['Preprocess']}->1 and Infer {before['Infer']}->1 mid-stream",
        )
        harness.record(outcome, replay, runner="ray")
        await harness.close(replay)
    finally:
        for deployment in ("Preprocess", "Infer"):
            await asyncio.to_thread(stack.app.scale, deployment, REPLICAS[deployment], wait=False)
        await asyncio.to_thread(stack.app.wait_replicas, timeout_s=120)
    assert drained, "Serve did not remove the replicas"
    assert finished, f"{replay.sink.distinct}/{FRAMES} results"
    assert (outcome.lost, outcome.duplicates, outcome.pending) == (0, 0, 0), outcome
