"""Rewriting a redis-server's AOF on demand, as Redis does by itself as the file grows."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from tests.waiting import poll

__all__ = ["rewrite_aof"]


async def rewrite_aof(client: Any, timeout_s: float = 30.0) -> None:
    """Run an AOF rewrite to its end (joining one Redis started by itself, if any)."""

    async def done() -> bool:
        info = await client.info("persistence")
        return not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]

    try:
        await client.bgrewriteaof()
    except ResponseError as e:
        if "already in progress" not in str(e):
            raise
    assert await poll(done, timeout_s=timeout_s, every_s=0.05), "the AOF rewrite did not finish"
