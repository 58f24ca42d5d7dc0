"""What streams.replica_acks=1 costs against 0, on a local Redis Cluster (3 masters + 3 replicas).

    .venv/bin/python -m benchmarks.replica_acks [--frames 2000] [--rounds 4] [--batch 8]

Each round publishes `frames` 128x128x3 frames (49,152 B) into one partition in batches of
`batch` and forwards each one hop (read through a consumer group, XADD + XACK in one
transaction), once with replica_acks 0 and once with 1, alternating, so both settings see the
same machine load. CPU is process time from /proc (this client + every redis-server),
which a busy machine does not inflate the way it slows the wall clock; frames/s is wall time.
Prints per setting the median over rounds and the ratio 1 / 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass

from benchmarks.procs import descendants, own
from stream.adapters.redis.client import connect
from stream.adapters.redis.entries import Output
from stream.adapters.redis.server import LocalCluster
from stream.adapters.redis.streams import StreamTransport
from stream.core.keys import PipelineKeys

KEYS = PipelineKeys("acksbench")
FRAME_BYTES = 128 * 128 * 3


@dataclass(frozen=True)
class Round:
    replica_acks: int
    frames: int
    wall_s: float
    client_cpu_s: float
    redis_cpu_s: float

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1000 * (self.client_cpu_s + self.redis_cpu_s) / self.frames


def cpu_s() -> tuple[float, float]:
    """(this process, every redis-server below it) CPU seconds so far."""
    me = own(os.getpid())
    redis = sum(p.cpu_s for p in descendants(os.getpid()) if p.role == "redis-server")
    return (me.cpu_s if me else 0.0), redis


async def one_round(client, replica_acks: int, frames: int, batch: int) -> Round:
    transport = StreamTransport(client, KEYS, stage="bench", replica_acks=replica_acks)
    src, dst = KEYS.frames, KEYS.tensors("bench")
    await client.delete(src, dst)
    await transport.ensure_group(src, "g")
    payload = os.urandom(FRAME_BYTES)
    me0, redis0 = cpu_s()
    start = time.perf_counter()
    for i in range(0, frames, batch):
        await transport.publish([Output(src, payload)] * min(batch, frames - i))
    done = 0
    while done < frames:
        entries = await transport.read(src, "g", "c", count=batch, block_ms=100)
        await transport.forward([Output(dst, e.data or b"") for e in entries], "g", entries)
        done += len(entries)
    wall = time.perf_counter() - start
    me1, redis1 = cpu_s()
    if transport.replica_shortfalls:
        raise RuntimeError(f"{transport.replica_shortfalls} writes fell short of replicas: not a fair run")
    await client.delete(src, dst)
    return Round(replica_acks, frames, wall, me1 - me0, redis1 - redis0)


async def main(frames: int, rounds: int, batch: int) -> None:
    with LocalCluster(masters=3, replicas=1) as cluster:
        client = await connect(cluster.url)
        try:
            await one_round(client, 1, min(frames, 200), batch)  # warm up connections
            runs = [await one_round(client, acks, frames, batch) for _ in range(rounds) for acks in (0, 1)]
        finally:
            await client.aclose()
    print(f"replica_acks cost: {rounds} alternating rounds of {frames} frames ({FRAME_BYTES} B), "
          f"batch {batch}, publish + one forward hop, 3+3 local Redis Cluster")  # fmt: skip
    print("| replica_acks | frames/s (median) | CPU ms/frame, client + redis (median) |")
    print("|---:|---:|---:|")
    med = {}
    for acks in (0, 1):
        mine = [r for r in runs if r.replica_acks == acks]
        med[acks] = (
            statistics.median(r.fps for r in mine),
            statistics.median(r.cpu_ms_per_frame for r in mine),
        )
        print(f"| {acks} | {med[acks][0]:,.0f} | {med[acks][1]:.3f} |")
    print(f"| 1 / 0 | {med[1][0] / med[0][0]:.2f}x | {med[1][1] / med[0][1]:.2f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.frames, args.rounds, args.batch))
