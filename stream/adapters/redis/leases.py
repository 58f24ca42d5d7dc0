"""Leases and live members in Redis: who holds what, for how long.

A *lease* is a string key holding its holder's value, with an expiry: taken with SET NX PX,
renewed and released only by the holder (a script compares the value first), so a holder that
died loses it within its time to live. Ingest holds one per source it plays; postprocess one per
partition it owns (`stream.adapters.redis.partition_leases`), whose value its commits check
(`Fenced` in `stream.adapters.redis.fenced_commit`).

`Members` counts the live replicas of one role: each one heartbeats into a sorted set scored by
its expiry on Redis's own clock (``TIME`` inside the script), so hosts with skewed clocks agree.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from stream.adapters.redis.entries import text

__all__ = ["Leases", "Members"]

_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
"""Forget expired members, refresh ARGV[1] (if any) for ARGV[2] ms; returns every live member."""


class Leases:
    """Leases of `ttl_ms` on string keys (SET NX PX; renew and release only by the holder)."""

    def __init__(self, client: aioredis.Redis, ttl_ms: int) -> None:
        if ttl_ms < 1:
            raise ValueError(f"lease ttl_ms must be >= 1, got {ttl_ms}")
        self.client = client
        self.ttl_ms = ttl_ms

    async def acquire(self, key: str, value: str) -> bool:
        """Take `key` for `value` if nobody holds it; True when taken."""
        return bool(await self.client.set(key, value, nx=True, px=self.ttl_ms))

    async def renew(self, key: str, value: str) -> bool:
        """Extend the lease by `ttl_ms` if `value` still holds it; False when it was lost."""
        return bool(await self.client.eval(_RENEW, 1, key, value, self.ttl_ms))

    async def release(self, key: str, value: str) -> bool:
        """Give the lease up if `value` holds it (a lease lost meanwhile is left to its new holder)."""
        return bool(await self.client.eval(_RELEASE, 1, key, value))

    async def holder(self, key: str) -> str | None:
        raw: Any = await self.client.get(key)
        return text(raw)


class Members:
    """The live members of one role, in the sorted set `key`, each alive for `ttl_ms` after its
    last heartbeat."""

    def __init__(self, client: aioredis.Redis, key: str, ttl_ms: int) -> None:
        if ttl_ms < 1:
            raise ValueError(f"member ttl_ms must be >= 1, got {ttl_ms}")
        self.client, self.key, self.ttl_ms = client, key, ttl_ms

    async def heartbeat(self, member: str) -> list[str]:
        """Mark `member` alive for `ttl_ms`; returns every live member (`member` included)."""
        return _names(await self.client.eval(_HEARTBEAT, 1, self.key, member, self.ttl_ms))

    async def leave(self, member: str) -> None:
        await self.client.zrem(self.key, member)

    async def live(self) -> list[str]:
        return _names(await self.client.eval(_HEARTBEAT, 1, self.key, "", self.ttl_ms))


def _names(raw: Any) -> list[str]:
    return [text(m) for m in raw or []]
