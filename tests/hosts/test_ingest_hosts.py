"""Ingest scales out across hosts on its decode load, and a host's loss moves its sources.

Twelve H.264 file sources play at once. Ingest autoscales with the config's own policy
(`deployments.serve.policy.LoadPolicy`, on the cores its replicas use) and one replica per node,
with `cores_per_replica` scaled down the way the hosts are (a namespace host's cores are the
machine's, shared): these twelve sources need more than one replica's share, so Serve starts a
second Ingest replica on another host and the replicas split the sources by their leases. Then
the host of one Ingest replica is SIGKILLed mid-stream: its leases expire, the survivor takes its
sources on from where their progress was recorded, and every frame of every source still gets
exactly one result in the product's reader.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from stream.adapters.redis.entries import text
from tests.clips import scene_frames, write_clip
from tests.faults.scenario import Harness, Replay
from tests.hosts.conftest import ClusterStack
from tests.waiting import until

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

SOURCES = 12
FRAMES = 600
"""Frames per source: enough that every source still plays when the second replica has its share."""
INGEST = {
    "min_replicas": 1,
    "max_replicas": 2,
    "upscale_delay_s": 1,
    "downscale_delay_s": 600,  # stays at two while the sources play (the kill decides the rest)
    "look_back_period_s": 2,
    "metrics_interval_s": 0.5,
    "policy": {
        "policy_function": "deployments.serve.policy:LoadPolicy",
        # the prod config's 2 cores per replica, scaled like the hosts' CPUs (x 0.25) and again for
        # twelve small clips on one shared machine: a replica is "full" at 0.05 cores
        "policy_kwargs": {"cores_per_replica": 0.05, "target_utilization": 0.7},
    },
}


def _clip(folder: Path) -> Path:
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return write_clip(folder / "twelve.mp4", scene_frames(photo, FRAMES, (320, 240)))


async def _holders(h: Harness, replays: list[Replay]) -> dict[str, str]:
    """The ingest replica (consumer name) holding each unfinished source's lease."""
    values = await h.client.mget([h.keys.source_lease(r.source) for r in replays])
    return {r.source: text(v) for r, v in zip(replays, values, strict=True) if v is not None}


async def _follow_all(h: Harness, replays: list[Replay], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for r in replays:
            if not r.done:
                await r.sink.poll(block_ms=20)
        if all(r.done for r in replays):
            return True
    return False


async def test_ingest_spreads_twelve_sources_over_two_hosts_and_a_hosts_loss_loses_no_frame(
    cluster_harness: Harness, cluster_stack: ClusterStack
) -> None:
    app, cluster, h = cluster_stack.app, cluster_stack.cluster, cluster_harness
    clip = _clip(h.tmp)
    await asyncio.to_thread(app.autoscale, "Ingest", INGEST)
    victim = ""
    replays: list[Replay] = []
    try:
        replays = [await h.replay(f"c7-{i}", FRAMES, uri=str(clip)) for i in range(SOURCES)]
        seen: dict[str, object] = {}

        async def spread() -> bool:
            for r in replays:
                await r.sink.poll(block_ms=5)
            hosts = cluster.hosts_of(app.pids("Ingest"))
            holders = await _holders(h, replays)
            seen.update(hosts=hosts, holders=sorted(set(holders.values())), held=len(holders))
            return len(set(hosts) - {"?"}) >= 2 and len(set(holders.values())) >= 2

        try:
            await until(spread, timeout_s=240, what="Ingest on two hosts with the sources split")
        finally:
            print(f"Ingest placement and source leases: {seen}")
        assert not any(r.done for r in replays), "a source ended before the sources were spread"
        ingest_hosts = cluster.hosts_of(app.pids("Ingest"))
        # the replica beyond the cpu host's one (one per node) runs on an inference host
        victim = max(ingest_hosts, key=lambda host: host.startswith("inference"))
        killed = cluster.kill_host(victim)
        for r in replays:
            r.fault()
        print(
            f"Ingest on {ingest_hosts}, sources held by {seen['holders']}; "
            f"killed {victim} ({killed} processes)"
        )

        finished = await _follow_all(h, replays, timeout_s=600)
        lost = {}
        for r in replays:
            pending = await h.settle(r, extra_s=30)
            outcome = await h.outcome("c7 ingest host loss", r, pending=pending)
            if (outcome.lost, outcome.pending) != (0, 0):
                lost[r.source] = outcome
        assert finished, [(r.source, r.sink.distinct) for r in replays]
        assert not lost, lost
        for r in replays:  # every frame once in the product's reader
            track = r.sink.track(r.source, h.model)
            assert (track.results, track.seqs.floor) == (FRAMES, FRAMES - 1), (r.source, track)
    finally:
        for r in replays:
            await h.close(r)
        if victim:
            await asyncio.to_thread(cluster.revive, victim)
        await asyncio.to_thread(app.fix, "Ingest", 1)
