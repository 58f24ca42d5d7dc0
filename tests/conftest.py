"""Shared fixtures: a private redis-server (and a Redis Cluster) per test session, paths to ../shared
when present."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from stream.adapters.redis.client import connect, is_cluster
from stream.adapters.redis.server import LocalCluster, RedisServer
from stream.errors import ConfigError
from tests.servers import MosquittoServer, PostgresServer, mosquitto_or_skip, postgres_or_skip

pytest_plugins = ["tests.leftovers"]  # the suite fails if anything it started outlives it

# Hypothesis's per-example deadline (200 ms) is a wall-clock threshold: on a busy 2-core machine a
# correct example can take longer. What the property tests assert is behaviour, never speed.
settings.register_profile("framestream", deadline=None)
settings.load_profile("framestream")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED = Path(os.environ.get("FRAMESTREAM_SHARED_DIR", SHARED))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` (models, photos); tests that need it skip when a clone lacks it."""
    if not (SHARED / "models").is_dir():
        pytest.skip(f"{SHARED} is absent (only the project's own checkout has it)")
    return SHARED


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server on a free loopback port for the whole session."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator:
    """An asyncio client on a freshly flushed database."""
    client = await connect(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A Redis Cluster (3 masters, 3 replicas) on loopback for the session; skipped, with the
    reason, where redis-server or redis-cli cannot run one."""
    try:
        cluster = LocalCluster(masters=3, replicas=1).start()
    except ConfigError as e:
        pytest.skip(f"no local Redis Cluster: {e}")
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
async def cluster_client(redis_cluster: LocalCluster) -> AsyncIterator:
    """A cluster client on a freshly flushed, healthy cluster (a test may have failed a master over)."""
    await asyncio.to_thread(redis_cluster.wait_healthy, 60)
    client = await connect(redis_cluster.url)
    assert is_cluster(client)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def mosquitto_server() -> Iterator[MosquittoServer]:
    """A private Mosquitto for the session (one user, persistence on); a test that stops it starts
    it again. Skipped, with the reason, where mosquitto is not installed."""
    with mosquitto_or_skip() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL 15 for the session; a test that stops it starts it again. Skipped, with
    the reason, where Debian's postgresql package is not installed."""
    with postgres_or_skip() as server:
        yield server
