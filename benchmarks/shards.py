"""What one Redis shard carries, and what partitions cost: CPU time per frame from /proc.

    .venv/bin/python -m benchmarks.shards [--frames 1500] [--rounds 3] [--batch 16]

A frame's Redis work is the pipeline's four writes on its partition: ingest publishes the JPEG
frame, preprocess forwards the tensor, infer the scores (1,001 float32), postprocess the result,
each forward reading its input through a consumer group and committing outputs + acks in one
MULTI/EXEC (`StreamTransport`, as the stages do). This replays exactly that Redis traffic with
payloads of the real sizes, no decoding or inference, so the figures are Redis' share alone.

1. Per shard: one redis-server, v1 (128x128x3 tensors) and v2 (224x224x3), alternating rounds.
   Redis CPU ms per frame is the server's CPU time over the frames; a shard is saturated when
   its one thread is busy all the time, so 1000 / (CPU ms per frame) is the frames/s one shard
   can carry. Wall-clock frames/s is printed too but bounded by this one Python client.
2. Partitions: a 3-master + 3-replica local Redis Cluster, the same frames through P = 1 and
   P = 3 partitions (one publish batch per source, sources spread over partitions as ingest does),
   alternating rounds. CPU per frame (client + every redis-server) must be the same: a partition
   is a set of keys, not a coordination protocol.

CPU time is what a busy machine does not inflate (wall time it does), and each comparison runs
its settings interleaved in one run, so the ratios hold under load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass

import numpy as np

from benchmarks.procs import descendants, own
from stream.adapters.media.jpeg import encode_jpeg
from stream.adapters.redis.client import connect
from stream.adapters.redis.entries import Entry, Output
from stream.adapters.redis.server import LocalCluster, RedisServer
from stream.adapters.redis.streams import StreamTransport
from stream.core.keys import PipelineKeys, partition_of

SIZES = {"v1 (128x128)": 128, "v2 (224x224)": 224}
SCORES_BYTES = 1001 * 4
RESULT_BYTES = 200
SOURCES = 12


@dataclass(frozen=True)
class Payloads:
    frame: bytes
    tensor: bytes

    @classmethod
    def for_side(cls, side: int) -> Payloads:
        """A JPEG of a natural-looking frame at the model's short side (ingest's `auto` size) and the
        uint8 tensor preprocess makes of it."""
        rng = np.random.default_rng(side)
        y, x = np.mgrid[0:side, 0 : side * 4 // 3]
        image = (
            (x[..., None] + y[..., None] * 2 + rng.integers(0, 40, (side, side * 4 // 3, 3))) % 256
        ).astype(np.uint8)
        return cls(encode_jpeg(image, quality=90), os.urandom(side * side * 3))


@dataclass(frozen=True)
class Round:
    label: str
    frames: int
    wall_s: float
    client_cpu_s: float
    redis_cpu_s: float

    @property
    def redis_ms(self) -> float:
        return 1000 * self.redis_cpu_s / self.frames

    @property
    def total_ms(self) -> float:
        return 1000 * (self.client_cpu_s + self.redis_cpu_s) / self.frames


def _cpu_s() -> tuple[float, float]:
    me = own(os.getpid())
    return (me.cpu_s if me else 0.0), sum(
        p.cpu_s for p in descendants(os.getpid()) if p.role == "redis-server"
    )


async def _hop(transport: StreamTransport, src: str, dst: str, data: bytes, n: int, batch: int) -> None:
    """Read `n` entries of `src` through a group and forward each as `data` into `dst`."""
    await transport.ensure_group(src, "g")
    done = 0
    while done < n:
        entries: list[Entry] = await transport.read(src, "g", "c", count=batch, block_ms=100)
        await transport.forward([Output(dst, data)] * len(entries), "g", entries)
        done += len(entries)


async def run_frames(client, label: str, keys: PipelineKeys, p: Payloads, frames: int, batch: int) -> Round:
    """`frames` frames of `SOURCES` sources through the four writes of each one's partition."""
    transport = StreamTransport(client, keys, stage="bench")
    parts = keys.all_partitions
    per_part = [0] * len(parts)
    for i in range(SOURCES):
        per_part[partition_of(f"cam-{i}", len(parts))] += 1
    share = [frames * k // SOURCES for k in per_part]
    me0, redis0 = _cpu_s()
    start = time.perf_counter()
    for part, n in zip(parts, share, strict=True):
        for i in range(0, n, batch):
            await transport.publish([Output(part.frames, p.frame)] * min(batch, n - i))
    for part, n in zip(parts, share, strict=True):
        if n:
            await _hop(transport, part.frames, part.tensors("m"), p.tensor, n, batch)
            await _hop(transport, part.tensors("m"), part.scores("m"), b"s" * SCORES_BYTES, n, batch)
            await _hop(transport, part.scores("m"), part.results, b"r" * RESULT_BYTES, n, batch)
    wall = time.perf_counter() - start
    me1, redis1 = _cpu_s()
    for part in parts:
        await client.delete(part.frames, part.tensors("m"), part.scores("m"), part.results)
    return Round(label, sum(share), wall, me1 - me0, redis1 - redis0)


def _median(rounds: list[Round], label: str, attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in rounds if r.label == label)


async def per_shard(frames: int, rounds: int, batch: int) -> None:
    payloads = {label: Payloads.for_side(side) for label, side in SIZES.items()}
    with RedisServer() as server:
        client = await connect(server.url)
        keys = PipelineKeys("shard")
        await run_frames(client, "warm-up", keys, payloads["v1 (128x128)"], 200, batch)
        runs = [await run_frames(client, label, keys, payloads[label], frames, batch)
                for _ in range(rounds) for label in SIZES]  # fmt: skip
        await client.aclose()
    print(f"\nOne shard (one redis-server), {rounds} alternating rounds of {frames} frames, batch {batch}:")
    print("| tensor | frame JPEG | redis CPU ms/frame | one shard's ceiling (frames/s) "
          "| client-bound wall frames/s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for label in SIZES:
        ms = _median(runs, label, "redis_ms")
        fps = statistics.median(r.frames / r.wall_s for r in runs if r.label == label)
        print(f"| {label} | {len(payloads[label].frame):,} B | {ms:.3f} | {1000 / ms:,.0f} | {fps:,.0f} |")


async def partitions(frames: int, rounds: int, batch: int) -> None:
    payload = Payloads.for_side(128)
    with LocalCluster(masters=3, replicas=1) as cluster:
        client = await connect(cluster.url)
        layouts = {"P = 1": PipelineKeys("parts1", 1), "P = 3": PipelineKeys("parts3", 3)}
        await run_frames(client, "warm-up", layouts["P = 3"], payload, 200, batch)
        runs = [await run_frames(client, label, keys, payload, frames, batch)
                for _ in range(rounds) for label, keys in layouts.items()]  # fmt: skip
        await client.aclose()
    print(f"\nPartitions on a 3+3 Redis Cluster, v1 sizes, {rounds} alternating rounds of {frames} frames:")
    print("| layout | redis CPU ms/frame (all nodes) | client + redis CPU ms/frame | each round's total |")
    print("|---|---:|---:|---|")
    for label in layouts:
        each = ", ".join(f"{r.total_ms:.3f}" for r in runs if r.label == label)
        redis_ms, total_ms = _median(runs, label, "redis_ms"), _median(runs, label, "total_ms")
        print(f"| {label} | {redis_ms:.3f} | {total_ms:.3f} | {each} |")
    ratio = _median(runs, "P = 3", "total_ms") / _median(runs, "P = 1", "total_ms")
    print(f"P = 3 / P = 1 CPU per frame: {ratio:.2f}x")


async def main(frames: int, rounds: int, batch: int, only: str | None) -> None:
    if only in (None, "shard"):
        await per_shard(frames, rounds, batch)
    if only in (None, "partitions"):
        await partitions(frames, rounds, batch)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--only", choices=("shard", "partitions"))
    args = parser.parse_args()
    asyncio.run(main(args.frames, args.rounds, args.batch, args.only))
