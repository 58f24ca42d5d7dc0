"""A commit to one partition that holds only while the partition's lease is the committer's.

Postprocess owns partitions (`stream.adapters.redis.partition_leases`); a replica that lost a lease
must write nothing more to that partition. `FencedCommit` runs one script that checks the lease
and, only if it holds the committer's token, adds the outputs, acks the entries they came from,
sets the committer's state fields (`Fenced.state`) in the partition's state hash and writes its
dead letters, all in one atomic step. Every key shares the partition's hash tag (one Redis Cluster slot).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from stream.adapters.redis.entries import Output
from stream.core.keys import FIELD

__all__ = ["Fenced", "FencedCommit"]


@dataclass(frozen=True)
class Fenced:
    """The condition and state of a commit to one partition: it is written only while the
    string key `lease` holds `token`, and sets `state` (field -> text) in the hash `state_key`
    in the same atomic step. Every key shares the partition's hash tag."""

    lease: str
    token: str
    state_key: str
    state: dict[str, str]


_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local group = ARGV[2]
local n_out, n_ack = tonumber(ARGV[3]), tonumber(ARGV[4])
local n_state, n_dead = tonumber(ARGV[5]), tonumber(ARGV[6])
local k, a = 2, 6
local ids = {}
for i = 1, n_out do
  ids[i] = redis.call('XADD', KEYS[k + i], '*', '%FIELD%', ARGV[a + i])
end
k, a = k + n_out, a + n_out
for i = 1, n_ack do
  redis.call('XACK', KEYS[k + i], group, ARGV[a + i])
end
k, a = k + n_ack, a + n_ack
if n_state > 0 then
  local fields = {}
  for i = 1, 2 * n_state do fields[i] = ARGV[a + i] end
  redis.call('HSET', KEYS[2], unpack(fields))
end
a = a + 2 * n_state
for i = 1, n_dead do
  local n, fields = tonumber(ARGV[a + 1]), {}
  for j = 1, 2 * n do fields[j] = ARGV[a + 1 + j] end
  redis.call('XADD', KEYS[k + i], '*', unpack(fields))
  a = a + 1 + 2 * n
end
if n_dead > 0 then redis.call('HINCRBY', KEYS[#KEYS], ARGV[#ARGV], n_dead) end
return ids
""".replace("%FIELD%", FIELD)
"""KEYS: lease, state hash, one stream per output, one per ack, one dead-letter stream per letter;
ARGV: token, group, the four counts, the outputs' data, the acked ids, the state's field/value
pairs, then per letter its number of fields and their field/value pairs; with dead letters, last
the counters hash (KEYS) and the field (ARGV) that counts them. Nil when the lease is not ours
(nothing written)."""

Execute = Callable[[Any], Awaitable[list[Any]]]
"""Runs a MULTI/EXEC pipeline and returns its replies (the transport's, which may WAIT)."""


class FencedCommit:
    """The fenced commit script, registered on one client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._script: Any = None  # registered on first use: most transports never commit fenced

    async def __call__(
        self,
        fence: Fenced,
        outputs: list[Output],
        group: str,
        acks: dict[str, list[str]],
        dead: Sequence[tuple[str, dict[str, Any]]] = (),
        dead_count: tuple[str, str] | None = None,
        *,
        in_transaction: Execute | None = None,
    ) -> list[Any] | None:
        """One partition's outputs, acks, state and dead letters ((dead-letter stream, fields):
        their entries go in `acks` too; `dead_count` = (hash, field) counts them there), if
        `fence.lease` holds its token: the new outputs' ids,
        or None when the lease is not the committer's (nothing was written).

        With `in_transaction`, the script runs inside a MULTI/EXEC given to it (a WAIT for
        replicas needs the script's own connection)."""
        acked = [(stream, i) for stream, entry_ids in acks.items() for i in entry_ids]
        state = [x for kv in fence.state.items() for x in kv]
        keys = [fence.lease, fence.state_key, *(o.stream for o in outputs), *(s for s, _ in acked)]
        keys += [stream for stream, _ in dead]
        args: list[Any] = [fence.token, group, len(outputs), len(acked), len(fence.state), len(dead)]
        args += [o.data for o in outputs] + [i for _, i in acked] + state
        for _, fields in dead:
            args += [len(fields), *(x for kv in fields.items() for x in kv)]
        if dead:
            if dead_count is None:
                raise ValueError("dead letters in a fenced commit need dead_count (hash, field)")
            keys.append(dead_count[0])
            args.append(dead_count[1])
        if in_transaction is not None:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.eval(_SCRIPT, len(keys), *keys, *args)
                reply: Any = (await in_transaction(pipe))[0]
        else:
            if self._script is None:
                self._script = self.client.register_script(_SCRIPT)
            reply = await self._script(keys=keys, args=args)
        return None if reply is None else list(reply)
