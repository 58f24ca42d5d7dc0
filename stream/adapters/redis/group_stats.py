"""Backlog of consumer groups (XINFO GROUPS), the mend for a read counter Redis lost, and a
consumer leaving its group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from stream.adapters.redis.entries import text

__all__ = [
    "GroupStats",
    "all_group_stats",
    "group_infos",
    "group_stats",
    "info_stats",
    "leave_group",
    "repair_lag",
]

_COUNT_AFTER = "return #redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])"
"""Entries after an id, counted inside Redis (the payloads, up to 150 KB each, stay there)."""

_REPAIR_LAG = """
local function fields(flat)
  local out = {}
  for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  return out
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local stream = fields(redis.call('XINFO', 'STREAM', KEYS[1]))
if not stream['entries-added'] then return 0 end  -- Redis < 7.0 keeps no read counters
for _, raw in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local g = fields(raw)
  if g['name'] == ARGV[1] and g['last-delivered-id'] == stream['last-generated-id']
      and g['lag'] ~= 0 then
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], g['last-delivered-id'],
               'ENTRIESREAD', stream['entries-added'])
    return 1
  end
end
return 0
"""
"""Set a caught-up group's entries-read to the stream's entries-added (see `repair_lag`)."""

_LEAVE_GROUP = """
local ok, held = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if not ok or #held > 0 then return 0 end  -- no such stream or group, or it still holds entries
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])  -- replies the entries it held: 0
return 1
"""
"""Remove a consumer that holds nothing: the check and the removal in one step (see `leave_group`)."""


@dataclass(frozen=True)
class GroupStats:
    """Backlog of one consumer group: `lag` = not yet delivered, `pending` = delivered, not acked."""

    stream: str
    group: str
    lag: int
    pending: int
    consumers: int

    @property
    def backlog(self) -> int:
        return self.lag + self.pending


async def group_infos(client: aioredis.Redis, stream: str) -> list[dict[str, Any]]:
    """XINFO GROUPS of `stream` with str keys (an empty list when the stream is missing)."""
    try:
        groups = await client.xinfo_groups(stream)
    except ResponseError as e:
        if "no such key" in str(e).lower():
            return []
        raise
    return [{text(k): v for k, v in g.items()} for g in groups]


async def group_stats(client: aioredis.Redis, stream: str, group: str) -> GroupStats:
    """Lag and pending of `group`; a missing group counts the whole stream as its lag."""
    for info in await group_infos(client, stream):
        if text(info["name"]) == group:
            return await info_stats(client, stream, info)
    return GroupStats(stream, group, lag=int(await client.xlen(stream)), pending=0, consumers=0)


async def all_group_stats(client: aioredis.Redis, stream: str) -> list[GroupStats]:
    """Lag and pending of every consumer group of `stream` (an empty list when it has none)."""
    return [await info_stats(client, stream, info) for info in await group_infos(client, stream)]


async def info_stats(client: aioredis.Redis, stream: str, info: dict[str, Any]) -> GroupStats:
    """Lag and pending of the group `info` describes (one item of `group_infos`): the lag Redis
    reports, counted when it cannot tell and capped by the stream's length when it counts too
    many. Every reader of a group's lag goes through here."""
    lag = info.get("lag")
    if lag is None:  # Redis cannot tell after some deletions: count instead
        last = text(info["last-delivered-id"])
        lag = int(await client.eval(_COUNT_AFTER, 1, stream, f"({last}", 100_000))
    elif int(lag) > 0:
        # Redis 7.0 keeps counting entries an XTRIM deleted unread (lag = added - read),
        # so the lag never falls back; without a cap ingest would wait on it forever
        lag = min(int(lag), int(await client.xlen(stream)))
    return GroupStats(stream, text(info["name"]), int(lag), int(info["pending"]), int(info["consumers"]))


async def repair_lag(client: aioredis.Redis, stream: str, group: str) -> bool:
    """Reset `group`'s read counter when Redis has visibly lost it; True when it did.

    Redis 7.0 replays XREADGROUP from its AOF as ``XCLAIM ... LASTID``, which moves the group's
    cursor but not its entries-read counter: after a restart the counter keeps the value of the
    last AOF rewrite, and the group's lag stays too high by every entry read since, for good
    (measured: lag ~2,000 with nothing unread; ingest then paused on its high-water mark and
    throughput fell to ~256 frames per trim interval). When the group has read the stream's
    newest entry its true lag is 0, so the counter must equal the stream's entries-added; the
    check and the reset run in one script, so no read can come in between.
    """
    return bool(await client.eval(_REPAIR_LAG, 1, stream, group))


async def leave_group(client: aioredis.Redis, stream: str, group: str, consumer: str) -> bool:
    """Remove `consumer` from `group` of `stream` if it holds no entry; True when it was removed.

    XGROUP DELCONSUMER drops what a consumer holds from the group's pending list, so one that
    still holds entries stays, for the others to reclaim. The check and the removal run in one
    script: nothing can be delivered to it in between.
    """
    return bool(await client.eval(_LEAVE_GROUP, 1, stream, group, consumer))
