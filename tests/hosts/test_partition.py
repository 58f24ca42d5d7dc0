"""Partitions: a worker host cut off the network for 15 s (its cable pulled: the veth on the
bridge down) and plugged back in; and Redis out of reach from one worker host only for 10 s.
Entries the cut-off replicas hold are reclaimed by replicas elsewhere after `claim_idle_ms`; what
the returning replicas write twice is counted (and dropped by the product's reader); nothing is lost."""

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

LINK_DOWN_S = 15.0
REDIS_CUT_S = 10.0
METRICS_PORT = 8080
"""Every worker listens there (the prod groups' metrics-export-port): how the test sees a cut."""
FRAMES_PER_S = 600
"""About what the cluster delivers here: each replay lasts well past its fault, so the replicas
that come back have frames to work on (and to get wrong, if they would)."""


def _replicas_on(stack: ClusterStack, host: str) -> dict[str, list[int]]:
    app = stack.app
    return {d: [p for p in app.pids(d) if stack.cluster.hosts_of([p]) == [host]] for d in app.replicas}


def _kept(stack: ClusterStack, host: str, before: dict[str, list[int]]) -> dict:
    """Which of `host`'s replicas are still the same processes (rode the fault out)."""
    now = _replicas_on(stack, host)
    kept = {d: sorted(set(pids) & set(now[d])) == sorted(pids) for d, pids in before.items() if pids}
    same = sorted(d for d, ok in kept.items() if ok)
    new = sorted(d for d, ok in kept.items() if not ok)
    return {
        "replicas_kept": kept,
        "note": f"replicas on {host}: kept {', '.join(same) or 'none'}; replaced {', '.join(new) or 'none'}",
    }


SINGLE = ("Ingest", "Postprocess")
"""Deployments with one replica: while their host is cut off, nothing flows (Serve does not
replace a replica it cannot reach within these faults' length)."""


def _infer_host(stack: ClusterStack) -> str:
    """A worker host that runs an Infer replica, preferably one without a single-replica stage
    (then the others must carry on meanwhile, which the test checks)."""
    placement = stack.app.placement()
    hosts = placement["Infer"]
    alone = [h for h in hosts if not any(h in placement[d] for d in SINGLE)]
    return (alone or hosts)[0]


def _holds_single(stack: ClusterStack, host: str) -> bool:
    placement = stack.app.placement()
    return any(host in placement[d] for d in SINGLE)


async def _hold(harness: Harness, replay: Replay, seconds: float) -> int:
    """Keep reading results for `seconds` (the fault's length); returns how many distinct came."""
    before = replay.sink.distinct
    await harness.follow(replay, timeout_s=seconds, until=lambda: False, stall_s=None)
    return replay.sink.distinct - before


async def test_a_worker_host_off_the_network_for_15_s_loses_nothing(
    cluster_harness: Harness, cluster_stack: ClusterStack
) -> None:
    cluster, app = cluster_stack.cluster, cluster_stack.app
    victim = _infer_host(cluster_stack)
    before = app.placement()
    flows_meanwhile = not _holds_single(cluster_stack, victim)
    on_victim = _replicas_on(cluster_stack, victim)
    frames = int(FRAMES_PER_S * LINK_DOWN_S * 2)
    facts: dict = {}

    async def cut(replay: Replay) -> dict:
        host = cluster.nodes[victim].host
        assert cluster.network.reachable(host, METRICS_PORT), f"{victim} unreachable before the cut"
        host.link(False)
        replay.fault()
        assert not cluster.network.reachable(host, METRICS_PORT), f"{victim} still reachable: no cut"
        try:
            during = await _hold(cluster_harness, replay, LINK_DOWN_S)
        finally:
            host.link(True)
        facts["during"] = during
        return {
            "victim": victim,
            "placement_before": before,
            "results_while_cut": during,
            "note": f"{victim} link down {LINK_DOWN_S:.0f} s ({during} results meanwhile)",
        }

    try:
        played = await play_with_fault(
            cluster_harness,
            f"c2 link down {victim}",
            frames,
            cut,
            settled=lambda: _kept(cluster_stack, victim, on_victim),
        )
    finally:
        restarted = await asyncio.to_thread(cluster.revive, victim)
    outcome = played.outcome
    print(f"{victim} restarted by the harness after the cut: {restarted}; {outcome}")
    assert played.finished, f"{played.distinct}/{frames} results"
    assert (outcome.lost, outcome.pending) == (0, 0), outcome
    assert played.deduped, "the product's result reader did not hold every frame once"
    if flows_meanwhile:  # the other hosts reclaimed the cut-off replicas' entries and went on
        assert facts["during"] > 0, "nothing flowed while one host was cut off"


async def test_redis_out_of_reach_from_one_worker_host_for_10_s_loses_nothing(
    cluster_harness: Harness, cluster_stack: ClusterStack
) -> None:
    """Also the entries a cut-off read delivered after its connection was given up: the stage
    takes them back (`StageBase._take_back_orphans`); without that they stayed pending for good
    under the cut host's live consumer (8 and 32 frames lost in two runs)."""
    cluster = cluster_stack.cluster
    assert cluster.redis is not None
    victim = _infer_host(cluster_stack)
    host = cluster.nodes[victim].host
    on_victim = _replicas_on(cluster_stack, victim)
    frames = int(FRAMES_PER_S * REDIS_CUT_S * 2)

    async def cut(replay: Replay) -> dict:
        redis_at = (cluster.redis.bind, cluster.redis.port)
        assert host.can_reach(*redis_at), f"Redis unreachable from {victim} before the cut"
        host.blackhole(cluster.redis.bind, True)
        replay.fault()
        assert not host.can_reach(*redis_at), f"Redis still reachable from {victim}: no cut"
        try:
            during = await _hold(cluster_harness, replay, REDIS_CUT_S)
        finally:
            host.blackhole(cluster.redis.bind, False)
        return {
            "victim": victim,
            "results_while_cut": during,
            "note": f"Redis unreachable from {victim} for {REDIS_CUT_S:.0f} s ({during} results meanwhile)",
        }

    try:
        played = await play_with_fault(
            cluster_harness,
            f"c3 redis cut from {victim}",
            frames,
            cut,
            settled=lambda: _kept(cluster_stack, victim, on_victim),
        )
    finally:
        await asyncio.to_thread(cluster.revive, victim)
    outcome = played.outcome
    print(f"{outcome}; {played.extra}")
    assert played.finished, f"{played.distinct}/{frames} results"
    assert (outcome.lost, outcome.pending) == (0, 0), outcome
    assert played.deduped, "the product's result reader did not hold every frame once"
