"""The private redis-server adapter: start, password, persistence across a crash."""

from __future__ import annotations

import time

import pytest

from stream.adapters.redis.client import connect
from stream.adapters.redis.server import RedisServer
from stream.errors import TransportError


async def test_wrong_password_fails_fast_with_a_clear_error():
    with RedisServer(password="s3cret") as server:
        start = time.monotonic()
        with pytest.raises(TransportError, match="refused the credentials|needs a password"):
            await connect(f"redis://:wrong@127.0.0.1:{server.port}/0")
        with pytest.raises(TransportError, match="needs a password|refused"):
            await connect(f"redis://127.0.0.1:{server.port}/0")
        assert time.monotonic() - start < 5
        client = await connect(server.url)
        assert await client.ping()
        await client.aclose()


async def test_unreachable_redis_is_a_clear_error():
    with RedisServer() as server:
        port = server.port
    with pytest.raises(TransportError, match="cannot reach Redis"):
        await connect(f"redis://127.0.0.1:{port}/0", timeout_s=1)


@pytest.mark.parametrize("aof", [True, False])
async def test_kill_and_restart_keeps_data_only_with_aof(aof):
    with RedisServer(aof=aof) as server:
        client = await connect(server.url)
        await client.xadd("s", {"d": b"1"})
        await client.aclose()
        # No wait needed: Redis write()s the AOF before replying; SIGKILL keeps the page cache.
        server.kill()
        server.start()
        client = await connect(server.url)
        assert await client.xlen("s") == (1 if aof else 0)
        await client.aclose()
