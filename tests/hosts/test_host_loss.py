"""A worker host dies mid-stream: every process in its namespace SIGKILLed (raylet, replicas,
everything). Serve replaces its replicas on the surviving hosts (Infer only where `inference` is
offered), the survivors reclaim the dead consumers' entries, and no frame is lost."""

from __future__ import annotations

import asyncio

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

FRAMES = 8_000


@pytest.mark.parametrize("victim", ["inference0", "cpu0"])
async def test_a_worker_host_killed_mid_stream_loses_nothing(
    cluster_harness: Harness, cluster_stack: ClusterStack, victim: str
) -> None:
    cluster, app = cluster_stack.cluster, cluster_stack.app
    before = app.placement()

    async def kill(replay: Replay) -> dict:
        on_victim = sorted(d for d, hosts in before.items() if victim in hosts)
        killed = cluster.kill_host(victim)
        replay.fault()
        return {
            "victim": victim,
            "processes_killed": killed,
            "placement_before": before,
            "note": f"host {victim} SIGKILLed ({killed} processes; replicas {', '.join(on_victim)})",
        }

    try:
        played = await play_with_fault(cluster_harness, f"c1 host loss {victim}", FRAMES, kill)
        await asyncio.to_thread(app.wait_replicas, timeout_s=180)
        after = app.placement()
    finally:
        await asyncio.to_thread(cluster.revive, victim)
    outcome = played.outcome
    assert played.finished, f"{played.distinct}/{FRAMES} results"
    assert (outcome.lost, outcome.pending) == (0, 0), outcome
    assert played.deduped, "the product's result reader did not hold every frame once"
    assert not any(victim in hosts for hosts in after.values()), after  # replaced on survivors
    assert all(h.startswith("inference") for h in after["Infer"]), after
