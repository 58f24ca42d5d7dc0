"""A burst on the cluster: Infer autoscales out onto both inference hosts and back, no frame lost.

Infer starts at one replica (one inference host) with the config's own policy
(`deployments.serve.policy.BacklogPolicy`) at a fast pace. Tensors written straight into the tensors
stream build a backlog on Infer alone; the test keeps that backlog up until Serve runs an Infer
replica on each inference host, then ends the source and waits for Infer to shrink back to one.
Each replica's host is its network namespace, the node IP Ray reports for it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest

from stream.core.codec import Message, encode_message
from stream.core.keys import FIELD
from stream.stages.ingest.frames import eos_message
from tests.faults.scenario import Harness, Replay
from tests.faults.sink import FaultSink
from tests.hosts.conftest import HOSTS, REPLICAS, ClusterStack

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

MAX_INFER = 3
FAST = {
    "min_replicas": 1,
    "max_replicas": MAX_INFER,
    "upscale_delay_s": 1,
    "downscale_delay_s": 8,
    "look_back_period_s": 2,
    "metrics_interval_s": 0.5,
}
"""Infer's autoscaling for this test: the config's policy, a faster pace, 1 to 3 replicas."""
HIGH_WATER = 1_500
"""Keep Infer's backlog about this high while waiting for the scale-out (~75 MB of tensors)."""
INFERENCE_HOSTS = [f"inference{i}" for i in range(HOSTS["inference"])]


def _tensor(source: str, seq: int, model: str, array: np.ndarray) -> bytes:
    now = time.time() * 1000.0
    meta = {"kind": "frame", "source": source, "seq": seq, "model": model}
    meta.update(capture_ms=now, ingest_ms=now)
    return encode_message(Message(meta=meta, array=array))


async def _backlog(client: Any, stream: str) -> int:
    groups = await client.xinfo_groups(stream)
    return sum(int(g["lag"] or 0) + int(g["pending"]) for g in groups)


async def test_a_burst_scales_infer_out_onto_both_inference_hosts_and_back(
    cluster_harness: Harness, cluster_stack: ClusterStack
) -> None:
    app, cluster = cluster_stack.app, cluster_stack.cluster
    h = cluster_harness
    stream = h.keys.tensors(h.model)
    rng = np.random.default_rng(7)
    arrays = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(8)]
    source = f"c5-burst-{int(time.time()) % 100000}"
    sink = await FaultSink(h.client, h.keys, f"faults-{source}", {source}).start()
    replay = Replay(source, 0, sink)
    peak: dict[str, int] = {}
    placements: list[dict[str, int]] = []

    def infer_hosts() -> dict[str, int]:
        hosts = Counter(cluster.hosts_of(app.pids("Infer")))
        placements.append(dict(hosts))
        for host, n in hosts.items():
            peak[host] = max(peak.get(host, 0), n)
        return dict(hosts)

    try:
        await asyncio.to_thread(app.scale, "Infer", 1)  # start from one replica, one host
        start_hosts = await asyncio.to_thread(infer_hosts)
        await asyncio.to_thread(app.autoscale, "Infer", FAST)
        seq, deadline = 0, time.monotonic() + 180
        on_both = False
        while not on_both:
            assert time.monotonic() < deadline, f"Infer not on both inference hosts: {placements[-3:]}"
            if await _backlog(h.client, stream) < HIGH_WATER:
                async with h.client.pipeline(transaction=False) as pipe:
                    for _ in range(200):
                        pipe.xadd(stream, {FIELD: _tensor(source, seq, h.model, arrays[seq % 8])})
                        seq += 1
                    await pipe.execute()
            await replay.sink.poll(block_ms=10)
            hosts = await asyncio.to_thread(infer_hosts)
            on_both = all(hosts.get(name, 0) >= 1 for name in INFERENCE_HOSTS)
        at_peak = dict(placements[-1])
        await h.client.xadd(stream, {FIELD: eos_message(source, seq)})
        replay.frames = seq
        finished = await h.follow(replay, timeout_s=180)
        deadline = time.monotonic() + 120
        while sum((await asyncio.to_thread(infer_hosts)).values()) > 1 or app.running().get("Infer") != 1:
            assert time.monotonic() < deadline, f"Infer did not scale back to 1: {placements[-3:]}"
            await asyncio.sleep(0.5)
        after = placements[-1]
        pending = await h.settle(replay)
        at = {name: app.host_address(name) for name in INFERENCE_HOSTS}
        note = (
            f"Infer 1 -> {sum(at_peak.values())} -> 1 replicas; at the peak "
            + ", ".join(f"{name} ({at[name]}) {at_peak.get(name, 0)}" for name in INFERENCE_HOSTS)
            + f"; after: {', '.join(f'{k} {v}' for k, v in sorted(after.items()))}; {seq} tensors"
        )
        outcome = await h.outcome("c5 autoscale burst", replay, pending=pending, note=note)
        await h.record(
            outcome, replay, runner="ray-cluster", start=start_hosts, at_peak=at_peak, after=after, peak=peak
        )
    finally:
        await h.close(replay)
        await asyncio.to_thread(app.fix, "Infer", REPLICAS["Infer"])
    assert start_hosts and sum(start_hosts.values()) == 1, start_hosts
    assert all(at_peak.get(name, 0) >= 1 for name in INFERENCE_HOSTS), at_peak
    assert sum(after.values()) == 1, after
    assert finished, f"{replay.sink.distinct}/{seq} results"
    assert (outcome.lost, outcome.pending) == (0, 0), outcome
