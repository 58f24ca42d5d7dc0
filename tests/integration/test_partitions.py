"""Partitioned pipelines on a real Redis Cluster (3 masters + 3 replicas, `LocalCluster`): the four
stage loops in this process, as in test_stages (the processes runner and Ray run these loops)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from stream.adapters.redis_partitions import ensure_layout
from stream.adapters.redis_server import LocalCluster
from stream.adapters.source_registry import SourceSpec, add_source
from stream.adapters.video import write_demo_clip
from stream.core.keys import PipelineKeys, partition_of
from stream.errors import ConfigError
from stream.results import ResultReader
from stream.runners.processes import create_groups
from stream.settings import Settings
from tests.integration.test_stages import Pipeline, make_settings

V1 = "mobilenet-v1-0.25-128-quant"
PIPELINE = "fleet"  # its 3 partitions' slots (14574, 4412, 8543) are on 3 different masters
SOURCES = ["cam-3", "cam-4", "cam-1", "cam-2", "cam-0", "cam-6"]  # crc32 % 3: 0, 0, 1, 1, 2, 2
FRAMES = 40


@contextlib.asynccontextmanager
async def stages(url: str, settings: Settings, model: str) -> AsyncIterator[Pipeline]:
    p = Pipeline(url, settings)
    try:
        await p.start("preprocess", model)
        await p.start("infer", model)
        await p.start("postprocess", model)
        await p.start("ingest")
        yield p
    finally:
        await p.close()
        for task in p.tasks:
            if task.done() and task.exception():
                raise task.exception()  # type: ignore[misc]


async def collect(reader: ResultReader, pairs: set[tuple[str, str]], timeout_s: float) -> None:
    """Poll every partition's results until each pair has its end-of-stream and all its frames."""
    deadline = time.monotonic() + timeout_s
    while not reader.ledger.complete(pairs):
        await reader.poll(block_ms=20)
        got = {p: (t.results, t.eos) for p, t in reader.ledger.tracks.items()}
        assert time.monotonic() < deadline, f"after {timeout_s} s: {got}"


@pytest.fixture
def weights(shared_dir: Path) -> Path:
    return shared_dir / "models"


async def test_six_sources_over_three_partitions_every_frame_exactly_once_on_several_masters(
    redis_cluster: LocalCluster, cluster_client, tmp_path: Path, weights: Path
) -> None:
    base = make_settings(tmp_path, weights)
    streams = base.streams.model_copy(update={"partitions": 3, "pipeline": PIPELINE})
    settings = base.model_copy(update={"streams": streams})
    keys = PipelineKeys(PIPELINE, 3)
    assert sorted(partition_of(s, 3) for s in SOURCES) == [0, 0, 1, 1, 2, 2]
    clip = write_demo_clip(tmp_path / "demo.mp4", frames=FRAMES)
    await create_groups(cluster_client, keys, [V1])
    reader = await ResultReader(cluster_client, keys, group="sink:test", start_id="0").start()
    async with stages(redis_cluster.url, settings, V1):
        for source in SOURCES:
            await add_source(cluster_client, keys, source, SourceSpec(uri=str(clip)))
        await collect(reader, {(s, V1) for s in SOURCES}, timeout_s=120)

    for source in SOURCES:  # one reader, every partition: every frame exactly once
        track = reader.ledger.track(source, V1)
        assert (track.results, track.seqs.floor, track.duplicates) == (FRAMES, FRAMES - 1, 0), source
        assert track.eos is not None and track.eos["frames"] == FRAMES
        assert track.eos["results"] == FRAMES
    masters = {redis_cluster.master_for_slot(key_slot(k.results.encode())).port for k in keys.all_partitions}
    assert len(masters) >= 2, masters
    for k in keys.all_partitions:  # each partition's streams are on its own slot and hold its results
        assert await cluster_client.xlen(k.results) == 2 * (FRAMES + 1)
        assert await cluster_client.xlen(k.dead) == 0
        for stream in (k.frames, k.tensors(V1), k.scores(V1)):
            for g in await cluster_client.xinfo_groups(stream):
                assert g["pending"] == 0, (stream, g)


async def test_a_different_partition_count_on_an_existing_pipeline_fails_clearly(redis_client) -> None:
    await ensure_layout(redis_client, PipelineKeys("layout", 3))
    await ensure_layout(redis_client, PipelineKeys("layout", 3))  # the same count: fine
    with pytest.raises(ConfigError, match="created with 3 partition.*asks for 2.*set it to 3"):
        await ensure_layout(redis_client, PipelineKeys("layout", 2))
    await redis_client.xadd(PipelineKeys("old").frames, {"d": b"x"})  # made before counts were recorded
    with pytest.raises(ConfigError, match="created with 1 partition"):
        await ensure_layout(redis_client, PipelineKeys("old", 4))
    await ensure_layout(redis_client, PipelineKeys("old", 1))
