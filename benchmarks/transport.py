"""Transport throughput on loopback: plain pipelined XADD vs. the batched read + atomic forward.

    .venv/bin/python -m benchmarks.transport [--entries 3000]

Prints entries/s and MB/s for 49,152-byte (128x128x3) and 150,528-byte (224x224x3) payloads,
and the forward path as a ratio of the plain XADD yardstick measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from rich.console import Console
from rich.table import Table

from stream.adapters.redis.client import connect
from stream.adapters.redis.entries import Output
from stream.adapters.redis.server import RedisServer
from stream.adapters.redis.streams import StreamTransport
from stream.core.keys import PipelineKeys

KEYS = PipelineKeys("bench")
SIZES = {"128x128x3": 128 * 128 * 3, "224x224x3": 224 * 224 * 3}


async def _plain_xadd(client, payload: bytes, n: int, batch: int) -> float:
    await client.delete("plain")
    start = time.perf_counter()
    for i in range(0, n, batch):
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(min(batch, n - i)):
                pipe.xadd("plain", {"d": payload})
            await pipe.execute()
    rate = n / (time.perf_counter() - start)
    await client.delete("plain")
    return rate


async def _forward(transport: StreamTransport, payload: bytes, n: int, batch: int) -> float:
    src, dst = KEYS.frames, KEYS.tensors("bench")
    await transport.client.delete(src, dst)
    await transport.ensure_group(src, "g")
    for i in range(0, n, batch):
        await transport.publish([Output(src, payload)] * min(batch, n - i))
    start = time.perf_counter()
    done = 0
    while done < n:
        entries = await transport.read(src, "g", "c", count=batch, block_ms=100)
        await transport.forward([Output(dst, e.data or b"") for e in entries], "g", entries)
        done += len(entries)
    rate = n / (time.perf_counter() - start)
    await transport.client.delete(src, dst)
    return rate


async def main(entries: int, batch: int, repeat: int) -> None:
    table = Table(title=f"Redis Streams transport, {entries} entries, batch {batch}, loopback")
    for col in ("payload", "plain XADD /s", "forward /s", "forward MB/s", "forward / plain"):
        table.add_column(col, justify="right")
    with RedisServer() as server:
        client = await connect(server.url)
        transport = StreamTransport(client, KEYS, stage="bench")
        for name, size in SIZES.items():
            payload = os.urandom(size)
            # best of `repeat` alternating runs: the machine is shared, noise only ever slows a run down
            plain = fwd = 0.0
            for _ in range(repeat):
                plain = max(plain, await _plain_xadd(client, payload, entries, batch))
                fwd = max(fwd, await _forward(transport, payload, entries, batch))
            table.add_row(
                f"{name} ({size} B)",
                f"{plain:,.0f}",
                f"{fwd:,.0f}",
                f"{fwd * size / 1e6:,.0f}",
                f"{fwd / plain:.2f}x",
            )
            await client.flushall()
        await client.aclose()
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.entries, args.batch, args.repeat))
