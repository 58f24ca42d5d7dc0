"""Frames/s and CPU per frame of the pipeline spread over the cluster's hosts (a measurement, not a
test: its figure is compared by hand with another run's, below).

    make cluster-bench      # needs root, like `make cluster`: the multi-host cluster of tests/hosts

It runs under pytest, on the fixtures of the cluster suite (``-p tests.hosts.conftest``), and
records its row with the suite's rows (``out/cluster``). The bench clip of `loadtest bench` (a
generated 640x480 H.264 file, `loadtest.bench.baselines.make_clip`) plays through the cluster's
application. Between the 10% and the 90% mark of its results (the pipeline full, ingest still
reading) it reads the CPU time of every process in every host's namespace and of Redis from
/proc, and records frames/s and CPU ms per frame by host as a row of the cluster table. Compare
with one host running the same model and clip:
``python -m benchmarks.ray_cpu --model mobilenet-v1-0.25-128`` (docs/cluster.md).

The hosts share this machine's cores, so frames/s cannot grow with them here; what must not grow is
the CPU a frame costs. That is a comparison of two runs (docs/cluster.md, "Throughput across
hosts"), each under whatever else the machine does, so it is read from the two figures rather than
asserted. What is checked is that the measured run is valid: every frame got its result, once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.procs import own
from loadtest.bench.baselines import make_clip
from tests.faults.scenario import Harness
from tests.hosts.cluster import Cluster
from tests.hosts.conftest import ClusterStack

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

FRAMES = 1_800


def cpu_by_process(cluster: Cluster) -> dict[tuple[str, int], float]:
    """CPU seconds (user + system) of every live process by (host, pid); Redis as host ``redis``."""
    out: dict[tuple[str, int], float] = {}
    hosts = {name: node.host.pids() for name, node in cluster.nodes.items()}
    redis = cluster.redis.process if cluster.redis is not None else None
    hosts["redis"] = [redis.pid] if redis is not None else []
    for name, pids in hosts.items():
        for pid in pids:
            proc = own(pid)
            if proc is not None:
                out[(name, pid)] = proc.cpu_s
    return out


def spent_by_host(
    before: dict[tuple[str, int], float], after: dict[tuple[str, int], float]
) -> dict[str, float]:
    """CPU seconds each host spent between two `cpu_by_process` readings (a process that ended in
    between is not counted: Ray's short-lived workers, a few ms)."""
    out: dict[str, float] = {}
    for (host, pid), cpu_s in after.items():
        out[host] = out.get(host, 0.0) + cpu_s - before.get((host, pid), 0.0)
    return out


async def test_frames_per_second_and_cpu_per_frame_across_hosts(
    cluster_harness: Harness, cluster_stack: ClusterStack, tmp_path: Path
) -> None:
    h, cluster = cluster_harness, cluster_stack.cluster
    clip = make_clip(tmp_path / "clip.mp4", frames=FRAMES)
    replay = await h.replay("c6-throughput", FRAMES, uri=str(clip))
    assert await h.follow(replay, timeout_s=240, until=lambda: replay.sink.distinct >= FRAMES // 10)
    t0, n0, cpu0 = time.monotonic(), replay.sink.distinct, cpu_by_process(cluster)
    assert await h.follow(replay, timeout_s=300, until=lambda: replay.sink.distinct >= FRAMES * 9 // 10)
    t1, n1, cpu1 = time.monotonic(), replay.sink.distinct, cpu_by_process(cluster)
    finished = await h.follow(replay, timeout_s=180)
    pending = await h.settle(replay)
    frames = n1 - n0
    fps = frames / (t1 - t0)
    per_host = {name: s * 1000.0 / frames for name, s in spent_by_host(cpu0, cpu1).items()}
    total_ms = sum(per_host.values())
    note = (
        f"{fps:.0f} frames/s, {total_ms:.2f} CPU ms/frame ("
        + ", ".join(f"{name} {ms:.2f}" for name, ms in per_host.items())
        + f") over results {n0}-{n1}; {(total_ms / 1000.0) * fps:.2f} cores busy"
    )
    outcome = await h.outcome("c6 throughput", replay, pending=pending, note=note)
    await h.record(
        outcome, replay, runner="ray-cluster", fps=fps, cpu_ms_per_frame=total_ms, cpu_ms_by_host=per_host
    )
    await h.close(replay)
    assert finished, f"{replay.sink.distinct}/{FRAMES} results"
    assert (outcome.lost, outcome.pending) == (0, 0), outcome
