"""Fixtures of the fault suite: one AOF redis-server, one local Ray and one deployment of the
framestream Serve application for the whole package (Ray and the application take ~30 s to start
on 2 cores), and a per-test `Harness` that checks the pipeline is idle and healthy first.

Scenarios keep apart by source id (each plays its own source and reads results through its own
consumer group), so nothing is flushed between them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream.adapters.redis.server import RedisServer, find_free_port
from stream.core.keys import PipelineKeys
from stream.settings import Settings
from tests.faults.rayapp import FaultApp, start_local_ray
from tests.faults.scenario import Harness, settled_harness
from tests.leftovers import stop_ray

MODEL = "mobilenet-v1-0.25-128"
"""The synthetic stand-in (random weights, the real architecture): the fastest full model path,
and present on every machine. Labels do not matter here; delivery does."""
CLAIM_IDLE_MS = 3_000
"""Low, so reclaim after a kill is quick; not lower: on a busy 2-core machine a live replica can
hold a read batch for over a second, and a sibling would then reclaim (and duplicate) it."""
REPLICAS = {"Ingest": 1, "Preprocess": 2, "Infer": 2, "Postprocess": 1}
"""Fixed replica counts (autoscaling off), as in deployments/serve/serve_config.yaml except that the two
scalable stages run two replicas, so a killed one has a live sibling."""


@dataclass
class Stack:
    redis: RedisServer
    app: FaultApp
    settings: Settings
    keys: PipelineKeys
    model: str


def fault_settings(cache_dir: Path) -> Settings:
    return Settings(
        streams={
            "claim_idle_ms": CLAIM_IDLE_MS,
            "block_ms": 50,
            "read_count": 32,
            "drain_timeout_s": 5,
            "max_deliveries": 10,
        },
        ingest={"high_water": 256},
        infer={"max_batch_size": 16, "max_wait_ms": 5, "inflight": 2},
        postprocess={"reorder_max_wait_ms": 1_000},
        models={"cache_dir": cache_dir, "weights_dir": None},
    )


@pytest.fixture(scope="package")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache holding the synthetic stand-in, built once (replicas load it from here)."""
    from stream.zoo.repository import load_spec
    from stream.zoo.store import locate_model

    cache = tmp_path_factory.mktemp("fault-models")
    locate_model(load_spec(MODEL), weights_dir=None, cache_dir=cache, allow_synthetic=True)
    return cache


@pytest.fixture(scope="package")
def stack(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """redis-server (AOF everysec) + local Ray + the Serve application, for the whole package."""
    pytest.importorskip("ray")
    from ray import serve

    settings = fault_settings(model_cache)
    server = RedisServer(aof=True, data_dir=tmp_path_factory.mktemp("fault-redis")).start()
    start_local_ray()
    try:
        app = FaultApp(settings, server.url, MODEL, REPLICAS, ingress={"rate_per_s": 2, "burst": 5})
        app.deploy(find_free_port())
        yield Stack(server, app, settings, PipelineKeys(settings.streams.pipeline), MODEL)
    finally:
        try:
            serve.shutdown()
        finally:
            stop_ray()  # and what ray.shutdown leaves running
            server.close()


@pytest.fixture
async def harness(stack: Stack, tmp_path: Path) -> AsyncIterator[Harness]:
    """A client on the stack's Redis, after every replica runs and nothing is pending."""
    if stack.redis.process is None or stack.redis.process.poll() is not None:
        stack.redis.start()  # an earlier scenario failed while its server was down
    stack.app.wait_replicas(timeout_s=120)
    async with settled_harness(stack.redis.url, stack.keys, stack.model, tmp_path, CLAIM_IDLE_MS) as h:
        yield h
