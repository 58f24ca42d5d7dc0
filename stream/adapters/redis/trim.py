"""Trimming a stream without deleting what a consumer group still needs.

A plain MAXLEN trim silently deletes delivered-but-unacked entries; `trim` deletes only below
the oldest id some group has pending or has not read yet (MINID).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from stream.adapters.redis.entries import id_tuple, next_id, text
from stream.adapters.redis.group_stats import group_infos

__all__ = ["safe_trim_id", "trim", "trim_output"]


async def safe_trim_id(client: aioredis.Redis, stream: str) -> str | None:
    """The lowest id some group still needs (oldest pending, or first not yet read).

    None means no group needs anything of `stream`, or `stream` has no group at all.
    """
    needed: list[str] = []
    for g in await group_infos(client, stream):
        name = text(g["name"])
        if int(g["pending"]) > 0:
            summary = await client.xpending(stream, name)
            if summary["min"] is not None:  # None: acked since XINFO; fall back to the read cursor
                needed.append(text(summary["min"]))
                continue
        needed.append(next_id(text(g["last-delivered-id"])))
    return min(needed, key=id_tuple) if needed else None


async def trim(client: aioredis.Redis, stream: str, *, keep: int = 0) -> int:
    """Delete entries every group has acked, keeping at least the newest `keep` entries.

    Never deletes an entry a group has pending or has not read yet. A stream without any
    group is left alone. Returns how many entries were deleted.
    """
    boundary = await safe_trim_id(client, stream)
    if boundary is None:
        return 0
    if keep > 0:
        newest: Any = await client.xrevrange(stream, max="+", min="-", count=keep)
        if len(newest) < keep:
            return 0
        boundary = min(boundary, text(newest[-1][0]), key=id_tuple)
    return int(await client.xtrim(stream, minid=boundary, approximate=False))


async def trim_output(client: aioredis.Redis, stream: str, *, keep: int) -> None:
    """An output stream (results, events): keep about `keep` entries, never deleting what a
    consumer group still needs (`trim`); one without groups is cut to about `keep` (MAXLEN)."""
    try:
        groups = await client.xinfo_groups(stream)
    except ResponseError:
        return
    if groups:
        await trim(client, stream, keep=keep)
    else:
        await client.xtrim(stream, maxlen=keep, approximate=True)
