"""The head host dies mid-stream (every process in its namespace SIGKILLed: the GCS, the Serve
controller, the head's proxy) and comes back. With GCS fault tolerance (the prod overlay's
`gcsFaultToleranceOptions`: the GCS tables live in Redis) the replicas on the workers keep the
frames flowing meanwhile, the new head picks the cluster up again, and no frame is lost."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.scenario import Harness, Replay
from tests.hosts.conftest import ClusterStack
from tests.hosts.play import play_with_fault

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

HEAD_DOWN_S = 10.0
FRAMES = 20_000
"""About three times what flows while the head is down and coming back."""


async def test_the_head_host_killed_and_back_loses_nothing(
    cluster_harness: Harness, cluster_stack: ClusterStack
) -> None:
    cluster, app = cluster_stack.cluster, cluster_stack.app
    if not cluster.gcs_fault_tolerance:
        pytest.skip("the prod overlay has no gcsFaultToleranceOptions: a lost head takes the cluster")
    before = {d: app.pids(d) for d in app.replicas}
    facts: dict = {}

    async def kill(replay: Replay) -> dict:
        killed = cluster.kill_host("head")
        replay.fault()
        start = replay.sink.distinct
        await cluster_harness.follow(replay, timeout_s=HEAD_DOWN_S, until=lambda: False, stall_s=None)
        facts["during"] = replay.sink.distinct - start
        started = time.monotonic()
        back = asyncio.create_task(asyncio.to_thread(_head_back, cluster_stack))
        await cluster_harness.follow(replay, timeout_s=300, until=back.done, stall_s=None)
        await back  # raises what the restart raised
        facts["back_s"] = round(time.monotonic() - started, 1)
        return {
            "processes_killed": killed,
            "head_back_s": facts["back_s"],
            "results_while_down": facts["during"],
            "note": (
                f"head SIGKILLed ({killed} processes), down {HEAD_DOWN_S:.0f} s "
                f"({facts['during']} results meanwhile), cluster back {facts['back_s']} s after restart"
            ),
        }

    played = await play_with_fault(cluster_harness, "c4 head loss", FRAMES, kill)
    after = {d: app.pids(d) for d in app.replicas}
    kept = sorted(d for d in before if before[d] == after[d])
    print(f"{played.outcome}; replicas kept: {kept}; {facts}")
    outcome = played.outcome
    assert played.finished, f"{played.distinct}/{FRAMES} results"
    assert (outcome.lost, outcome.pending) == (0, 0), outcome
    assert played.deduped, "the product's result reader did not hold every frame once"
    assert facts["during"] > 0, "no frame flowed while the head was down"
    assert app.running() == app.replicas, app.running()  # Serve's controller is back and sees them


def _head_back(stack: ClusterStack) -> None:
    stack.cluster.restart_head()
    stack.app.wait_replicas(timeout_s=180)
