"""The private redis-server adapter: start, password, persistence across a crash."""

from __future__ import annotations

import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

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


async def test_a_client_whose_pooled_connection_a_restart_closed_just_reconnects():
    """Redis restarted while a client was idle: the client's next call works (its pooled connection,
    which the old server closed, is opened again), so the HTTP API answers the first request after
    the restart instead of a 503 for a Redis that is back."""
    with RedisServer() as server:
        client = await connect(server.url)
        await client.set("k", "v")
        server.kill()
        server.start()  # an empty server on the same port
        assert await client.get("k") is None  # the first call after the restart
        server.kill()  # Redis gone for good: a call still fails, at once
        started = time.monotonic()
        with pytest.raises(RedisConnectionError):
            await client.get("k")
        assert time.monotonic() - started < 5
        await client.aclose()
