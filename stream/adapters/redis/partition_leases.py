"""Partition ownership for one consumer group: leases in Redis, a fair share each.

Every replica of the group heartbeats into ``keys.members(group)`` and owns partitions by holding
their lease ``keys.partition(k).owner_lease(group)`` (value: its consumer name plus a random
part, new at every take, so a commit can tell this ownership from an earlier one). `plan` asks
`stream.core.ownership.rebalance` what to take and give up; the stage drops what it gives up
before `give_up` releases it, and loads what `take` got. A replica that dies stops renewing: its
leases expire after `ttl_ms`, and it drops out of the members after `ttl_ms` too.
"""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis

from stream.adapters.redis.leases import Leases, Members
from stream.core.keys import PipelineKeys
from stream.core.ownership import Rebalance, rebalance

__all__ = ["PartitionLeases"]


class PartitionLeases:
    """The partitions `member` owns in `group`, each under a lease of `ttl_ms`."""

    def __init__(
        self, client: aioredis.Redis, keys: PipelineKeys, group: str, member: str, ttl_ms: int
    ) -> None:
        self.keys, self.group, self.member = keys, group, member
        self.leases = Leases(client, ttl_ms)
        self.members = Members(client, keys.members(group), ttl_ms)
        self.client = client
        self.owned: dict[int, str] = {}
        """Partition -> the lease value this replica holds it with."""
        self._earlier: dict[int, str] = {}
        """Lease values of partitions forgotten without being released (a loop restart): taken
        back under the same value while the lease has not expired."""

    def lease(self, partition: int) -> str:
        return self.keys.partition(partition).owner_lease(self.group)

    async def renew(self) -> list[int]:
        """Renew every owned lease; returns (and forgets) the partitions whose lease was lost."""
        lost = [k for k, token in self.owned.items() if not await self.leases.renew(self.lease(k), token)]
        for k in lost:
            del self.owned[k]
        return lost

    async def plan(self) -> Rebalance:
        """Heartbeat, then what to take and give up to reach a fair share of the live members."""
        members = await self.members.heartbeat(self.member)
        free = [
            k
            for k in range(self.keys.partitions)
            if k not in self.owned and not await self.client.exists(self.lease(k))
        ]
        for k, token in list(self._earlier.items()):  # held before a restart: ours while not expired
            if await self.leases.holder(self.lease(k)) == token:
                free.append(k)
            else:
                del self._earlier[k]
        return rebalance(range(self.keys.partitions), members, self.member, set(self.owned), free)

    async def take(self, partition: int) -> bool:
        """Take `partition`'s lease (or keep the one held before a restart); True when owned."""
        earlier = self._earlier.pop(partition, None)
        if earlier is not None and await self.leases.renew(self.lease(partition), earlier):
            self.owned[partition] = earlier
            return True
        token = f"{self.member}/{secrets.token_hex(4)}"
        if await self.leases.acquire(self.lease(partition), token):
            self.owned[partition] = token
            return True
        return False

    async def give_up(self, partition: int) -> None:
        token = self.owned.pop(partition, None)
        if token is not None:
            await self.leases.release(self.lease(partition), token)

    def forget(self, partition: int) -> None:
        """Stop owning `partition` here without releasing it (its lease was lost)."""
        self.owned.pop(partition, None)

    def suspend(self) -> None:
        """Stop owning every partition here without releasing them (the loop restarts): `take`
        gets each back under the same value while its lease has not expired."""
        self._earlier.update(self.owned)
        self.owned.clear()

    async def leave(self) -> None:
        """Release every lease and leave the members (a replica stopping)."""
        for k in list(self.owned):
            await self.give_up(k)
        await self.members.leave(self.member)
