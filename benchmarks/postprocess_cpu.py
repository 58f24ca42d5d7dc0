"""CPU per frame of the postprocess stage alone, and of the redis-server serving it.

    .venv/bin/python -m benchmarks.postprocess_cpu [--frames 6000] [--sources 8] [--partitions 3]

A private redis-server is filled with `--frames` score messages (1,000 float16 classes, as infer
emits them; each source's leading class changes every 40 frames, so smoothing works) over
`--sources` sources, then one postprocess loop (reading `--read-count` entries at a time, so
committing about that many frames at once) runs in this process until every frame has its
result. CPU of this process (user + system) and of redis-server is read before and after that
run only (publishing is not counted). Postprocess gets its 1,000 labels in code: no model is
loaded. Linux only (redis-server's CPU comes from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import numpy as np

from benchmarks.procs import descendants
from stream.adapters.redis.client import connect
from stream.adapters.redis.entries import Output
from stream.adapters.redis.server import RedisServer
from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import Message, encode_message
from stream.core.keys import PipelineKeys
from stream.settings import Settings
from stream.stages.postprocess.stage import PostprocessStage

MODEL = "bench"
CLASSES = 1000


def _scores(frames: int, sources: int, seed: int = 0) -> list[tuple[str, int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(frames):
        source, seq = f"cam-{i % sources}", i // sources
        p = rng.random(CLASSES).astype(np.float32) * 0.01
        p[(seq // 40 * 37 + i % sources) % CLASSES] += 1.0
        out.append((source, seq, (p / p.sum()).astype(np.float16)))
    return out


def _cpu_s(pid: int) -> float:
    return next(p.cpu_s for p in descendants(os.getpid()) if p.pid == pid)


async def measure(frames: int, sources: int, partitions: int, read_count: int = 64) -> dict[str, float]:
    streams = {"pipeline": "ppcpu", "partitions": partitions, "block_ms": 20, "read_count": read_count}
    settings = Settings(streams=streams)
    keys = PipelineKeys("ppcpu", partitions)
    with RedisServer() as server:
        client = await connect(server.url)
        redis_pid = next(p.pid for p in descendants(os.getpid()) if "redis-server" in p.cmd)
        transport = StreamTransport(client, keys, stage="bench")
        group = PipelineKeys.group("postprocess", MODEL)
        for k in keys.all_partitions:
            await transport.ensure_group(k.scores(MODEL), group)
        rows = _scores(frames, sources)
        for start in range(0, len(rows), 256):
            await transport.publish([
                Output(keys.for_source(s).scores(MODEL),
                       encode_message(Message({"kind": "frame", "source": s, "seq": q, "model": MODEL}, p)))
                for s, q, p in rows[start : start + 256]
            ])  # fmt: skip
        stage = PostprocessStage(
            settings, client, consumer="bench", model=MODEL, labels=[f"c{i}" for i in range(CLASSES)]
        )
        stop = asyncio.Event()
        me, redis_before, wall = os.times(), _cpu_s(redis_pid), time.monotonic()
        task = asyncio.create_task(stage.run(stop))
        while stage.processed < frames:
            await asyncio.sleep(0.01)
            if task.done():
                task.result()
        after, redis_after, wall = os.times(), _cpu_s(redis_pid), time.monotonic() - wall
        stop.set()
        await task
        results = sum([int(await client.xlen(k.results)) for k in keys.all_partitions])
        await client.aclose()
    return {
        "frames": frames,
        "results": results,
        "wall_s": wall,
        "postprocess_ms_per_frame": 1000 * (after.user + after.system - me.user - me.system) / frames,
        "redis_ms_per_frame": 1000 * (redis_after - redis_before) / frames,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=6000)
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--read-count", type=int, default=64, help="entries per read (per partition): frames per commit"
    )
    args = parser.parse_args()
    for _ in range(args.repeat):
        m = asyncio.run(measure(args.frames, args.sources, args.partitions, args.read_count))
        print(
            f"{m['results']} results in {m['wall_s']:.2f} s: postprocess {m['postprocess_ms_per_frame']:.3f} "
            f"ms/frame, redis-server {m['redis_ms_per_frame']:.3f} ms/frame"
        )


if __name__ == "__main__":
    main()
