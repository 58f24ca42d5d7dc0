"""Redis Streams transport with framestream's delivery rules (asyncio, redis-py).

- every stage reads through a consumer group;
- `forward` XADDs outputs and XACKs the inputs they came from in one MULTI/EXEC (one per
  partition: every key of a partition shares its hash tag, so on a Redis Cluster the
  transaction runs on the one node serving that slot);
- a `Fenced` forward (postprocess, which owns partitions) runs as one script instead
  (`stream.adapters.redis.fenced_commit`): only while the partition's lease holds the committer's
  value, and writes the committer's state hash with the outputs and acks;
- `reclaim` takes over entries a dead or stuck consumer left pending (XAUTOCLAIM);
- an entry delivered more than `max_deliveries` times, or one that does not decode, goes to the
  dead-letter stream (`stream.adapters.redis.dead_letter_writer`: stage, reason, the stream, group and
  id it came from and its bytes; `stream.adapters.redis.dead_letters` lists, retries and trims them),
  and is acked;
- with `replica_acks` N > 0, each of those transactions waits (WAIT) until N replicas of its
  master hold it, or `replica_ack_timeout_ms`; a shortfall is logged and counted, not raised;
- `trim` never deletes an entry that some group has not acked or not yet read
  (`stream.adapters.redis.trim`); `group_stats` reports lag and pending
  (`stream.adapters.redis.group_stats`).

Entries, outputs, dead letters and stream ids are `stream.adapters.redis.entries`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from stream.adapters.metrics import metrics
from stream.adapters.redis import group_stats as _group_stats
from stream.adapters.redis import replica_acks as _replica_acks
from stream.adapters.redis import trim as _trim
from stream.adapters.redis.client import connect
from stream.adapters.redis.dead_letter_writer import dead_stream, letter_fields, write_dead_letters
from stream.adapters.redis.entries import DeadLetter, Entry, Output, entry_of, hash_tag, last_id, text
from stream.adapters.redis.fenced_commit import Fenced, FencedCommit
from stream.adapters.redis.group_stats import GroupStats
from stream.core.codec import Message, PayloadError, decode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.errors import CodecError, ConfigError, LeaseLost

__all__ = [
    "DeadLetter",
    "Entry",
    "Fenced",
    "GroupStats",
    "Output",
    "StreamTransport",
    "hash_tag",
    "connect",  # re-exported: the factory lives in stream.adapters.redis.client
    "last_id",
]
"""The names stages and tools import from here; each lives in the module its import names."""

log = logging.getLogger("framestream.redis")

_SHORTFALL_LOG_EVERY_S = 10.0


class StreamTransport:
    """The delivery rules, for one stage, over an asyncio Redis client."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: PipelineKeys,
        *,
        stage: str,
        max_deliveries: int = 5,
        claim_idle_ms: int = 5_000,
        replica_acks: int = 0,
        replica_ack_timeout_ms: int = 200,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be >= 1, got {max_deliveries}")
        if claim_idle_ms < 0:
            raise ValueError(f"claim_idle_ms must be >= 0, got {claim_idle_ms}")
        self.client = client
        self.keys = keys
        self.stage = stage
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms
        self.on_dead: Callable[[Sequence[DeadLetter]], None] | None = None
        """Called with the letters of every `dead_letter` once written (also those `reclaim`
        writes for entries past `max_deliveries`): the stage counts them there."""
        self._init_replica_acks(replica_acks, replica_ack_timeout_ms)
        self._fenced_commit = FencedCommit(client)

    def _init_replica_acks(self, replicas: int, timeout_ms: int) -> None:
        if replicas < 0 or timeout_ms < 1:
            raise ValueError(
                f"replica_acks must be >= 0 and replica_ack_timeout_ms >= 1, got {replicas} and {timeout_ms}"
            )
        if replicas and not _replica_acks.supported(self.client.pipeline(transaction=True)):
            raise ConfigError(
                f"streams.replica_acks={replicas} needs redis-py 8.x (WAIT on the pipeline's own "
                "connection); install the redis version pyproject.toml names or set replica_acks to 0"
            )
        self.replica_acks = replicas
        self.replica_ack_timeout_ms = timeout_ms
        self.replica_shortfalls = 0
        """Transactions that returned with fewer than `replica_acks` replicas holding them."""
        self._shortfall_logged_s = -_SHORTFALL_LOG_EVERY_S

    async def _execute(self, pipe: Any) -> list[Any]:
        """EXEC `pipe`; with `replica_acks`, then WAIT for that many replicas (see the module doc)."""
        if not self.replica_acks:
            return list(await pipe.execute())
        want, timeout_ms = self.replica_acks, self.replica_ack_timeout_ms
        replies, acked = await _replica_acks.execute_waiting(pipe, want, timeout_ms)
        if acked < want:
            self.replica_shortfalls += 1
            metrics.replica_shortfalls(self.stage)
            now = time.monotonic()
            if now - self._shortfall_logged_s >= _SHORTFALL_LOG_EVERY_S:
                self._shortfall_logged_s = now
                log.warning(
                    "%s: a write reached %d of %d replicas within %d ms (%d such writes so far); "
                    "it is on its master only until replication catches up",
                    self.stage, acked, want, timeout_ms, self.replica_shortfalls,
                )  # fmt: skip
        return replies

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """Create `stream` and `group` if missing (a group made now reads from `start_id`)."""
        try:
            await self.client.xgroup_create(stream, group, id=start_id, mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def read(
        self, stream: str, group: str, consumer: str, *, count: int, block_ms: int | None
    ) -> list[Entry]:
        """New entries for `consumer` (up to `count`, waiting at most `block_ms`).

        A blocked read whose stream was deleted meanwhile ends empty: on a Redis Cluster that is a
        slot migration moving the stream to another master (MIGRATE deletes it here and Redis
        answers ``UNBLOCKED the stream key no longer exists``); the next read follows it there.
        """
        try:
            reply: Any = await self.client.xreadgroup(
                group, consumer, {stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as e:
            if str(e).startswith("UNBLOCKED"):
                return []
            raise
        return [entry_of(stream, i, fields) for _, items in reply or [] for i, fields in items]

    async def read_after(
        self, stream: str, after_id: str, *, count: int, block_ms: int | None
    ) -> list[Entry]:
        """Entries of `stream` after `after_id`, without a group: takes nothing away from anybody."""
        reply: Any = await self.client.xread({stream: after_id}, count=count, block=block_ms)
        return [entry_of(stream, i, fields) for _, items in reply or [] for i, fields in items]

    async def read_own_pending(self, stream: str, group: str, consumer: str, *, count: int) -> list[Entry]:
        """Entries already delivered to `consumer` but not acked (after a restart with the same name)."""
        reply: Any = await self.client.xreadgroup(group, consumer, {stream: "0"}, count=count)
        return [entry_of(stream, i, fields, deliveries=2) for _, items in reply or [] for i, fields in items]

    async def forward(
        self,
        outputs: Sequence[Output],
        group: str,
        acks: Iterable[Entry],
        fenced: Sequence[Fenced] = (),
        *,
        dead: Sequence[DeadLetter] = (),
    ) -> list[str]:
        """XADD `outputs` and XACK `acks` in `group`, atomically per partition. Returns new ids.

        Outputs and acks of one partition (one hash tag, one Redis Cluster slot) go in one
        MULTI/EXEC; a batch that spans partitions is one transaction per partition, each atomic
        on its own (a stage's outputs always stay in their input's partition). A partition with a
        `Fenced` entry is committed by one script instead, only while its lease holds the token,
        with its state; partitions whose lease was lost write nothing and raise `LeaseLost` (after
        the other partitions are committed). `dead` letters are written (and their entries acked)
        in their partition's commit, under its lease check when it is fenced; `on_dead` gets
        those written.
        """
        acks = list(acks)
        fences = {hash_tag(f.lease): f for f in fenced}
        tags = list(
            dict.fromkeys(
                [hash_tag(o.stream) for o in outputs]
                + [hash_tag(e.stream) for e in acks]
                + [hash_tag(d.entry.stream) for d in dead]
                + list(fences)
            )
        )
        ids: dict[int, str] = {}
        lost: list[str] = []
        written: list[DeadLetter] = []
        for tag in tags:
            mine = [(i, o) for i, o in enumerate(outputs) if hash_tag(o.stream) == tag]
            letters = [d for d in dead if hash_tag(d.entry.stream) == tag]
            acked = [e for e in acks if hash_tag(e.stream) == tag]
            replies = await self._commit(tag, [o for _, o in mine], group, acked, letters, fences.get(tag))
            if replies is None:
                lost.append(fences[tag].lease)
                continue
            ids.update((i, text(r)) for (i, _), r in zip(mine, replies, strict=False))
            written += letters
        if written and self.on_dead is not None:
            self.on_dead(written)
        if lost:
            raise LeaseLost(lost)
        return [ids[i] for i in range(len(outputs))]

    async def _commit(
        self,
        tag: str,
        outputs: list[Output],
        group: str,
        acks: list[Entry],
        letters: list[DeadLetter],
        fence: Fenced | None,
    ) -> list[Any] | None:
        """One partition's part of `forward`: its replies, or None when its fence's lease is lost."""
        by_stream: dict[str, list[str]] = {}
        for entry in [*acks, *(d.entry for d in letters)]:
            by_stream.setdefault(entry.stream, []).append(entry.id)
        dead_fields = [
            (dead_stream(self.keys, d.entry.stream), letter_fields(d, self.stage, group)) for d in letters
        ]
        counted = None  # the per-stage dead-letter count in the partition's counters hash
        if letters:
            counted = (self.keys.of_key(dead_fields[0][0]).counters, f"dead:{self.stage}")
        if fence is not None:
            return await self._fenced_commit(
                fence, outputs, group, by_stream, dead_fields, counted,
                in_transaction=self._execute if self.replica_acks else None,
            )  # fmt: skip
        async with self.client.pipeline(transaction=True) as pipe:
            for out in outputs:
                pipe.xadd(out.stream, {FIELD: out.data})
            for stream, entry_ids in by_stream.items():
                pipe.xack(stream, group, *entry_ids)
            for stream, fields in dead_fields:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            if counted is not None:
                pipe.hincrby(*counted, len(letters))
            return await self._execute(pipe)

    async def publish(self, outputs: Sequence[Output]) -> list[str]:
        """XADD without acking anything (ingest, the first stage)."""
        return await self.forward(outputs, group="", acks=())

    def decode(self, entries: Sequence[Entry]) -> tuple[list[tuple[Entry, Message]], list[DeadLetter]]:
        """Split entries into decoded messages and dead letters (undecodable or deleted)."""
        good: list[tuple[Entry, Message]] = []
        bad: list[DeadLetter] = []
        for entry in entries:
            if entry.data is None:
                bad.append(DeadLetter(entry, "entry was deleted before it was processed"))
                continue
            try:
                good.append((entry, decode_message(entry.data)))
            except CodecError as e:
                meta = e.meta if isinstance(e, PayloadError) else None
                bad.append(DeadLetter(entry, f"undecodable: {e}", meta=meta))
        return good, bad

    async def dead_letter(self, letters: Sequence[DeadLetter], group: str) -> None:
        """Write each letter to its partition's dead-letter stream and ack its entry, atomically
        (one MULTI/EXEC per partition)."""
        await write_dead_letters(self.client, self.keys, self.stage, letters, group)
        if letters and self.on_dead is not None:
            self.on_dead(letters)

    async def reclaim(self, stream: str, group: str, consumer: str, *, count: int = 100) -> list[Entry]:
        """Take over entries of consumers silent for `claim_idle_ms`; dead-letter those past `max_deliveries`.

        Only consumers that have not talked to Redis for `claim_idle_ms` (crashed, stopped, cut
        off) lose their entries: a live consumer that is merely slow on a big batch keeps
        reading, so its entries are left alone (XAUTOCLAIM alone would take them and cause
        duplicates), and so are this consumer's own pending entries. Returns the claimed
        entries that may still be processed.
        """
        rows: list[dict[str, Any]] = []
        for silent in await self._silent_consumers(stream, group, consumer):
            rows += await self.client.xpending_range(
                stream, group, min="-", max="+", count=count - len(rows),
                consumername=silent, idle=self.claim_idle_ms,
            )  # fmt: skip
            if len(rows) >= count:
                break
        return await self._claim(stream, group, consumer, rows, min_idle_ms=self.claim_idle_ms)

    async def take_over(
        self, stream: str, group: str, consumer: str, *, count: int = 100, include_own: bool = False
    ) -> list[Entry]:
        """Claim for `consumer` up to `count` entries of `group` that other consumers hold on
        `stream` (and its own too with `include_own`), however briefly they have held them: for
        the owner of a partition (lease), where anything another consumer holds was left behind
        by a previous owner, whose commits its lease check now refuses. Those past
        `max_deliveries` are dead-lettered."""
        rows: list[dict[str, Any]] = []
        start = "-"
        while len(rows) < count:
            page: Any = await self.client.xpending_range(stream, group, min=start, max="+", count=count)
            rows += [r for r in page if include_own or text(r["consumer"]) != consumer][: count - len(rows)]
            if len(page) < count:
                break
            start = f"({text(page[-1]['message_id'])}"
        return await self._claim(stream, group, consumer, rows, min_idle_ms=0)

    async def _claim(
        self, stream: str, group: str, consumer: str, rows: list[dict[str, Any]], *, min_idle_ms: int
    ) -> list[Entry]:
        """XCLAIM the XPENDING `rows` for `consumer`; dead-letter those past `max_deliveries`."""
        if not rows:
            return []
        deliveries = {text(r["message_id"]): int(r["times_delivered"]) + 1 for r in rows}
        got: Any = await self.client.xclaim(stream, group, consumer, min_idle_time=min_idle_ms,
                                       message_ids=list(deliveries))  # fmt: skip
        alive: list[Entry] = []
        dead: list[DeadLetter] = []
        for raw_id, fields in got:
            entry = entry_of(stream, raw_id, fields, deliveries[text(raw_id)])
            if entry.deliveries > self.max_deliveries:
                reason = f"delivered {entry.deliveries} times, more than max_deliveries={self.max_deliveries}"
                dead.append(DeadLetter(entry, reason))
            else:
                alive.append(entry)
        await self.dead_letter(dead, group)
        return alive

    async def own_idle(
        self, stream: str, group: str, consumer: str, *, count: int = 100
    ) -> list[dict[str, Any]]:
        """XPENDING rows of `consumer`'s own entries idle for `claim_idle_ms` (ids as str)."""
        rows: Any = await self.client.xpending_range(
            stream, group, min="-", max="+", count=count, consumername=consumer, idle=self.claim_idle_ms
        )
        return [{**r, "message_id": text(r["message_id"])} for r in rows]

    async def claim_rows(
        self, stream: str, group: str, consumer: str, rows: list[dict[str, Any]]
    ) -> list[Entry]:
        """XCLAIM `rows` (from `own_idle`) for `consumer` again; those past `max_deliveries` are
        dead-lettered."""
        return await self._claim(stream, group, consumer, rows, min_idle_ms=self.claim_idle_ms)

    async def recover_own(
        self, stream: str, group: str, consumer: str, *, count: int = 100, after: str | None = None
    ) -> list[Entry]:
        """This consumer's own pending entries, delivered again (call when a loop (re)starts).

        A consumer that restarts under the same name (after a crash, or a Redis outage) holds
        entries nobody else will take while it looks alive; it takes them back here, `count` at
        a time in id order: pass the last id it returned as `after` for the next page (until a
        page comes back empty). Each call counts as a delivery, so an entry that keeps crashing
        its consumer is dead-lettered after `max_deliveries`.
        """
        start = f"({after}" if after else "-"
        while True:
            rows: Any = await self.client.xpending_range(
                stream, group, min=start, max="+", count=count, consumername=consumer
            )
            if not rows:
                return []
            alive = await self._claim(stream, group, consumer, rows, min_idle_ms=0)
            if alive:
                return alive
            start = f"({text(rows[-1]['message_id'])}"  # a page of dead letters only: next page

    async def _silent_consumers(self, stream: str, group: str, consumer: str) -> list[str]:
        """Other consumers of `group` holding entries that have been idle for `claim_idle_ms`."""
        try:
            infos = await self.client.xinfo_consumers(stream, group)
        except ResponseError as e:
            if "no such key" in str(e).lower() or "nogroup" in str(e).lower():
                return []
            raise
        return [
            text(c["name"])
            for c in infos
            if text(c["name"]) != consumer and int(c["pending"]) > 0 and int(c["idle"]) >= self.claim_idle_ms
        ]

    async def group_stats(self, stream: str, group: str) -> GroupStats:
        """Lag and pending of `group` (XINFO GROUPS), for autoscaling and metrics; a missing group
        counts the whole stream as its lag."""
        return await _group_stats.group_stats(self.client, stream, group)

    async def all_group_stats(self, stream: str) -> list[GroupStats]:
        """Lag and pending of every consumer group of `stream` (an empty list when it has none)."""
        return await _group_stats.all_group_stats(self.client, stream)

    async def repair_lag(self, stream: str, group: str) -> bool:
        """Reset `group`'s read counter when Redis has visibly lost it (`group_stats.repair_lag`)."""
        return await _group_stats.repair_lag(self.client, stream, group)

    async def safe_trim_id(self, stream: str) -> str | None:
        """The lowest id some group still needs (`trim.safe_trim_id`)."""
        return await _trim.safe_trim_id(self.client, stream)

    async def trim(self, stream: str, *, keep: int = 0) -> int:
        """Delete entries every group has acked, keeping at least the newest `keep` entries;
        never one a group has pending or not read yet (`trim.trim`)."""
        return await _trim.trim(self.client, stream, keep=keep)
