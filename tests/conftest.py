"""Shared fixtures: a private redis-server per test session, paths to ../shared when present."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from stream.adapters.redis_server import RedisServer
from stream.adapters.redis_streams import connect

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
