"""A stage replica on a pipeline of several partitions: the lag it reports, and what it leaves in
Redis when Serve scales it down.

The replica here is `deployments.serve.stage.StageDeployment` without Ray: its loop is a real preprocess
stage on a real redis-server; Serve's autoscaler calls ``record_autoscaling_stats``, and
scale-down is the ``__del__`` Serve awaits (stop, drain, leave).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from stream.adapters.metrics import metrics
from stream.adapters.redis.client import connect
from stream.adapters.redis.group_stats import leave_group
from stream.adapters.redis.server import RedisServer
from stream.core.keys import PipelineKeys
from stream.settings import Settings
from stream.stages import build_stage
from stream.stages.base import run_resilient
from tests.waiting import poll

P = 4
MODEL = "mobilenet-v1-0.25-128-quant"
GROUP = f"preprocess:{MODEL}"


def _settings(tmp_path: Path, pipeline: str) -> Settings:
    return Settings(
        streams={"pipeline": pipeline, "partitions": P, "block_ms": 50, "drain_timeout_s": 5},
        models={"weights_dir": None, "cache_dir": tmp_path / "cache"},
    )


async def _replica(settings: Settings, client: Any, consumer: str, *, run: bool = True) -> Any:
    """A preprocess replica as Serve's constructor makes it, on `client` (its loop task on this
    event loop, unless not `run`)."""
    from deployments.serve.stage import StageDeployment

    replica = object.__new__(StageDeployment.func_or_class)
    replica.stage, replica.consumer, replica.settings = "preprocess", consumer, settings
    replica.client = client
    replica.loop = build_stage("preprocess", settings, replica.client, consumer=consumer, model=MODEL)
    replica._stop = asyncio.Event()
    replica._task = (
        asyncio.get_running_loop().create_task(run_resilient(replica.loop, replica._stop, replica.client))
        if run
        else None
    )
    replica._last_count, replica._last_backlog, replica._rate_fps = (0.0, 0), 0, 0.0
    replica._last_cpu, replica._cpu_cores = (0.0, 0.0), 0.0
    return replica


async def _consumers(client: Any, stream: str) -> list[str]:
    return [c["name"].decode() for c in await client.xinfo_consumers(stream, GROUP)]


# Serve awaits the replica's `async def __del__` at shutdown; Python's own GC only creates it
@pytest.mark.filterwarnings("ignore:coroutine 'StageDeployment.__del__' was never awaited")
async def test_a_replica_scaled_down_leaves_no_consumer_on_any_partition(
    redis_server: RedisServer, redis_client: Any, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, "drain")
    keys = PipelineKeys("drain", P)
    replica = await _replica(settings, await connect(redis_server.url), "replica-1")  # closed by __del__
    streams = [k.frames for k in keys.all_partitions]

    async def groups_made() -> bool:
        return all([await redis_client.exists(s) for s in streams])

    assert await poll(groups_made, timeout_s=30), "the replica's loop did not start"
    for stream in streams:  # undecodable entries: read, dead-lettered and acked on every partition
        await redis_client.xadd(stream, {"d": b"not a frame"})

    async def all_read() -> bool:
        stats = [await replica.loop.transport.group_stats(s, GROUP) for s in streams]
        return all(s.backlog == 0 for s in stats) and replica.loop.processed == P

    assert await poll(all_read, timeout_s=30), "the replica did not read every partition"
    assert [await _consumers(redis_client, s) for s in streams] == [["replica-1"]] * P

    await replica.__del__()  # scale-down: Serve stops the replica

    left = {s: await _consumers(redis_client, s) for s in streams}
    assert left == {s: [] for s in streams}, f"consumers left behind after scale-down: {left}"


async def test_a_consumer_that_still_holds_entries_stays_in_its_group_for_the_others_to_reclaim(
    redis_client: Any,
) -> None:
    stream = "fs:{held}:frames"
    await redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await redis_client.xadd(stream, {"d": b"x"})
    await redis_client.xreadgroup(GROUP, "holder", {stream: ">"}, count=1)
    await redis_client.xgroup_createconsumer(stream, GROUP, "idle")
    assert sorted(await _consumers(redis_client, stream)) == ["holder", "idle"]

    assert not await leave_group(redis_client, stream, GROUP, "holder")
    assert await leave_group(redis_client, stream, GROUP, "idle")
    assert not await leave_group(redis_client, "fs:{nothing}:frames", GROUP, "idle")  # no stream: no error
    assert await _consumers(redis_client, stream) == ["holder"]
    assert len(await redis_client.xpending_range(stream, GROUP, min="-", max="+", count=10)) == 1


@pytest.mark.filterwarnings("ignore:coroutine 'StageDeployment.__del__' was never awaited")
async def test_the_lag_metric_of_each_partition_is_labelled_with_that_partition(
    redis_client: Any, tmp_path: Path
) -> None:
    keys = PipelineKeys("laglabel", P)
    replica = await _replica(_settings(tmp_path, "laglabel"), redis_client, "replica-1", run=False)
    await replica.loop.start()  # the group on every partition; nothing read yet
    waiting = dict(zip([k.frames for k in keys.all_partitions], [1, 0, 3, 0], strict=True))
    for stream, n in waiting.items():
        for _ in range(n):
            await redis_client.xadd(stream, {"d": b"x"})

    stats = await replica.record_autoscaling_stats()  # what Serve's autoscaler asks every few seconds

    assert stats["backlog"] == 4  # the autoscaler sizes the stage on all of it
    lag = {s: metrics.gauge("stream_lag", stream=s, group=GROUP) for s in waiting}
    assert lag == waiting, "framestream_stream_lag must give each partition's stream its own lag"
