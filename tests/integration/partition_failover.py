"""The P = 3 fault scenarios of test_partitions, run as a child process (see those tests).

``python -m tests.integration.partition_failover TMP WEIGHTS FAULT``, FAULT one of ``kill`` (SIGKILL
the master serving partition 1; its replica takes over) and ``migrate`` (move partition 1's slot
to another master). Prints one JSON line:
{"fault_at", "expected", "moved", "lost": {source: [seq...]}, "duplicates"}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

from redis.crc import key_slot

from stream.adapters.media.video import write_demo_clip
from stream.adapters.redis.client import connect, refresh_cluster_view
from stream.adapters.redis.outage import REDIS_TRANSIENT
from stream.adapters.redis.server import LocalCluster
from stream.adapters.redis.source_registry import SourceSpec, add_source
from stream.core.keys import PipelineKeys
from stream.readers.results import ResultReader
from stream.runners.processes import create_groups
from stream.stages import build_stage
from stream.stages.base import run_resilient
from tests.integration.test_partitions import PIPELINE, SOURCES, V1
from tests.integration.test_stages import make_settings

FRAMES = 300


async def _poll(reader: ResultReader, client) -> None:
    try:
        await reader.poll(block_ms=20)
    except REDIS_TRANSIENT:
        await asyncio.sleep(0.2)
        with contextlib.suppress(*REDIS_TRANSIENT):
            await refresh_cluster_view(client)


def _finished(reader: ResultReader) -> bool:
    pairs = {(source, V1) for source in SOURCES}
    return reader.ledger.finished(pairs) and all(reader.ledger.track(*p).results >= FRAMES for p in pairs)


def _inject(fault: str, cluster: LocalCluster, victim, slot: int, target) -> asyncio.Future[None] | None:
    if fault == "kill":
        victim.kill()
        return None
    # in a thread: the stages keep running on this loop while the keys move
    return asyncio.ensure_future(asyncio.to_thread(cluster.migrate_slot, slot, target))


async def _start_stages(url: str, settings, stop: asyncio.Event) -> tuple[list[asyncio.Task], list]:
    """One of each stage, each on its own client, under `run_resilient` (as `framestream stage` runs)."""
    loops, clients = [], []
    for name in ("preprocess", "infer", "postprocess", "ingest"):
        clients.append(await connect(url))
        model = None if name == "ingest" else V1
        stage = build_stage(name, settings, clients[-1], consumer=f"{name}-0", model=model)
        loops.append(asyncio.create_task(run_resilient(stage, stop, clients[-1], max_outage_s=60)))
    return loops, clients


async def scenario(tmp: Path, weights: Path, fault: str) -> dict:
    base = make_settings(tmp, weights)
    settings = base.model_copy(
        update={"streams": base.streams.model_copy(update={"partitions": 3, "pipeline": PIPELINE})}
    )
    keys = PipelineKeys(PIPELINE, 3)
    clip = write_demo_clip(tmp / "demo.mp4", frames=FRAMES)
    with LocalCluster(masters=3, replicas=1) as cluster:
        client = await connect(cluster.url)
        await create_groups(client, keys, [V1])
        reader = await ResultReader(client, keys, group="sink:test", start_id="0").start()
        stop = asyncio.Event()
        loops, clients = await _start_stages(cluster.url, settings, stop)
        slot = key_slot(keys.partition(1).frames.encode())
        victim = cluster.master_for_slot(slot)
        target = next(m for m in cluster.master_nodes() if m.port != victim.port)
        fault_at = None
        migration: asyncio.Future[None] | None = None
        try:
            for source in SOURCES:
                await add_source(client, keys, source, SourceSpec(uri=str(clip)))
            deadline = time.monotonic() + 200
            while not _finished(reader):
                await _poll(reader, client)
                got = reader.ledger.total().results
                if fault_at is None and got >= 300:
                    fault_at = got
                    migration = _inject(fault, cluster, victim, slot, target)
                for task in [t for t in loops if t.done()]:
                    task.result()  # a stage that crashed: raise its error
                if time.monotonic() > deadline:
                    raise TimeoutError(f"stuck at {got} results, fault at {fault_at}")
            if migration is not None:
                await migration
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*loops, return_exceptions=True), 60)
            for c in [client, *clients]:
                await c.aclose()
        moved = cluster.master_for_slot(slot).port != victim.port
    lost = {s: [q for q in range(FRAMES) if q not in reader.ledger.track(s, V1).seqs] for s in SOURCES}
    lost = {s: seqs for s, seqs in lost.items() if seqs}
    duplicates = reader.ledger.total().duplicates
    return {"fault_at": fault_at, "expected": len(SOURCES) * FRAMES, "moved": moved,
            "lost": lost, "duplicates": duplicates}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))))
