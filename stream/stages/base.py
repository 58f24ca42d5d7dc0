"""What every stage loop shares: the transport, reclaiming, safe trimming, stamps and metrics.

A stage reads its input stream through its consumer group, handles a batch of entries, and then,
in one MULTI/EXEC, adds its outputs and acks the inputs they came from. Bad input (undecodable,
wrong shape, unknown model, ...) is dead-lettered with a reason and acked; the loop keeps going.
A message whose frame had to be dead-lettered is followed downstream by a ``kind="skip"`` marker
(same source and seq) so the postprocess reorder buffer need not wait for it. An exception
while handling a batch is narrowed down to the entries it belongs to: each such entry becomes a
dead letter with the exception as its reason (`ConsumerStage.handle_each_apart_on_error`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from stream.adapters.metrics import metrics
from stream.adapters.redis.client import refresh_cluster_view
from stream.adapters.redis.dead_letters import DeadLetters
from stream.adapters.redis.entries import DeadLetter, Entry, Output
from stream.adapters.redis.fenced_commit import Fenced
from stream.adapters.redis.group_stats import GroupStats, leave_group
from stream.adapters.redis.outage import RedisOutage, is_redis_outage, ride_out
from stream.adapters.redis.partitions import FanInReader, ensure_layout
from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import Message, encode_message
from stream.core.keys import PipelineKeys
from stream.core.messages import FRAME, SKIP
from stream.errors import TransportError
from stream.settings import Settings

__all__ = [
    "ConsumerStage",
    "Handled",
    "StageBase",
    "StageLoop",
    "now_ms",
    "run_resilient",
    "skip_marker",
    "undecoded_frame",
]

log = logging.getLogger(__name__)

_TRIM_INTERVAL_S = 1.0
_LAG_INTERVAL_S = 2.0
_DEAD_TRIM_INTERVAL_S = 30.0
"""How often old dead letters are deleted (`dead_letters.max_age_s`)."""
_DEAD_TRIM_AFTER_S = 1.0
"""After new dead letters, the length bound (`dead_letters.max_len`) holds again within this."""


def now_ms() -> float:
    """Wall-clock epoch milliseconds (message stamps; durations use time.monotonic)."""
    return time.time() * 1000.0


@runtime_checkable
class StageLoop(Protocol):
    name: str
    processed: int
    last_progress_s: float

    async def run(self, stop: asyncio.Event) -> None: ...

    async def backlog(self) -> GroupStats: ...

    async def leave_groups(self) -> list[str]: ...


@dataclass
class Handled:
    """What handling a batch produced: outputs to add, entries to ack with them, dead letters, and
    (a stage owning partitions) each partition's lease check and state, committed with them."""

    outputs: list[Output] = field(default_factory=list)
    acks: list[Entry] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    fenced: list[Fenced] = field(default_factory=list)


def undecoded_frame(letter: DeadLetter) -> dict[str, Any] | None:
    """What an undecodable entry's header said when it names a frame (kind, source and seq): the
    frame a skip marker can stand in for; None otherwise."""
    meta = letter.meta
    if meta is None or meta.get("kind") != FRAME or "source" not in meta or "seq" not in meta:
        return None
    return meta


def skip_marker(meta: dict[str, Any], reason: str, **extra: Any) -> bytes:
    """A ``kind="skip"`` message telling later stages that this (source, seq) will not come."""
    names = ("source", "seq", "model", "capture_ms", "ingest_ms")
    keep: dict[str, Any] = {k: meta[k] for k in names if k in meta}
    return encode_message(Message(meta={**keep, **extra, "kind": SKIP, "reason": reason}))


class StageBase:
    """Transport, timers and counters for one stage reading its input stream of every partition
    (``stream_of(partition keys)``) through `group`.

    Every delivery rule holds per partition: a batch's outputs go to its inputs' partition and are
    committed with their acks in one MULTI/EXEC per partition; own pending entries, silent
    consumers' entries, trimming and the lag repair are done for each partition's stream.
    """

    name = "stage"

    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        *,
        consumer: str,
        stream_of: Callable[[PipelineKeys], str],
        group: str,
        model: str | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.consumer = consumer
        self.group = group
        self.model = model
        self.keys = PipelineKeys(settings.streams.pipeline, settings.streams.partitions)
        self._partitions = {stream_of(k): k for k in self.keys.all_partitions}
        self.all_streams = list(self._partitions)
        self.streams = list(self.all_streams)
        """The streams this loop reads (every partition's, unless it owns partitions)."""
        self.transport = StreamTransport(
            client,
            self.keys,
            stage=self.name,
            max_deliveries=settings.streams.max_deliveries,
            claim_idle_ms=settings.streams.claim_idle_ms,
            replica_acks=settings.streams.replica_acks,
            replica_ack_timeout_ms=settings.streams.replica_ack_timeout_ms,
        )
        self.processed = 0
        self.dead_lettered = 0
        self.transport.on_dead = self._dead_lettered
        self.last_progress_s = time.monotonic()
        self._next_reclaim_s = 0.0
        self._next_trim_s = time.monotonic() + _TRIM_INTERVAL_S
        self._next_lag_s = 0.0
        self.dead_letters = DeadLetters(client, self.keys)
        self._next_dead_trim_s = self._dead_trimmed_s = time.monotonic()
        self._started = False
        self._to_recover: list[str] = list(self.streams)
        self._recovered_upto: str | None = None
        self._held: set[tuple[str, str]] = set()
        """(stream, id) of every entry this loop read and has not acked or dead-lettered yet."""
        self._orphans: list[Entry] = []
        self._next_orphan_check_s = time.monotonic() + settings.streams.claim_idle_ms / 1000.0
        self.reader = FanInReader(self.transport, self.streams, group, consumer)

    def partition_keys(self, entry: Entry) -> PipelineKeys:
        """The keys of the partition `entry` was read from (its outputs go there too)."""
        return self._partitions[entry.stream]

    async def backlog(self) -> GroupStats:
        """This group's lag and pending summed over every partition (named by partition 0's
        stream); each partition's own lag is published as it is read (framestream_stream_lag)."""
        parts = [await self.transport.group_stats(s, self.group) for s in self.all_streams]
        for part in parts:
            metrics.stream_lag(part.stream, part.group, part.backlog)
        if len(parts) == 1:
            return parts[0]
        return GroupStats(
            parts[0].stream,
            self.group,
            lag=sum(p.lag for p in parts),
            pending=sum(p.pending for p in parts),
            consumers=max(p.consumers for p in parts),
        )

    async def leave_groups(self) -> list[str]:
        """Remove this consumer from its group on every partition's stream where it holds nothing,
        once the loop has stopped (a replica scaled down); the streams it left.

        Every partition, not only those read last: a replica that read them all, or owned one
        earlier, is a consumer on each, and consumers left behind pile up with every scale-down.
        Where it still holds entries it stays, for the others to reclaim (`leave_group`).
        """
        return [s for s in self.all_streams if await leave_group(self.client, s, self.group, self.consumer)]

    async def start(self) -> None:
        """Create the input group (reading from the start of the stream) if missing.

        Called at the top of every `run`; the first read after it takes back what this consumer
        already held (a rerun after a Redis outage, or a restart under the same name).
        """
        self.reader.cancel()  # a rerun after an error: what those reads got is taken back below
        self._to_recover, self._recovered_upto = list(self.streams), None
        self._held.clear()
        self._orphans.clear()
        if not self._started:
            await ensure_layout(self.client, self.keys)
            for stream in self.all_streams:
                await self.transport.ensure_group(stream, self.group, start_id="0")
            self._started = True

    def read_streams(self, streams: list[str]) -> None:
        """Read only `streams` from now on (a stage that owns partitions reads only its own).

        Reads in flight on a stream left out are dropped: what Redis delivered to them stays
        pending for this consumer, for the stream's new owner to claim.
        """
        self.streams = [s for s in self.all_streams if s in streams]
        self._to_recover = [s for s in self._to_recover if s in self.streams]
        self._held = {h for h in self._held if h[0] in self.streams}
        self._orphans = [e for e in self._orphans if e.stream in self.streams]
        self.reader.read_streams(self.streams)

    def tick(self) -> None:
        self.last_progress_s = time.monotonic()

    async def next_entries(self, count: int, block_ms: int | None) -> list[Entry]:
        """Own pending entries after a (re)start, then orphans (below), then entries of silent
        consumers when a reclaim is due and finds some, else new ones."""
        entries = await self._next_entries(count, block_ms)
        self._held.update((e.stream, e.id) for e in entries)
        return entries

    async def _next_entries(self, count: int, block_ms: int | None) -> list[Entry]:
        if self._orphans:
            orphans, self._orphans = self._orphans[:count], self._orphans[count:]
            return orphans
        while self._to_recover:  # page by page: what an earlier page took back may still be in flight
            own = await self.transport.recover_own(
                self._to_recover[0], self.group, self.consumer, count=count, after=self._recovered_upto
            )
            if own:
                self._recovered_upto = own[-1].id
                log.info("%s: took back %d entries this consumer held before", self.name, len(own))
                return own
            self._to_recover.pop(0)
            self._recovered_upto = None
        now = time.monotonic()
        if now >= self._next_reclaim_s:
            self._next_reclaim_s = now + self.settings.streams.claim_idle_ms / 2000.0
            reclaimed: list[Entry] = []
            for stream in self.streams:
                reclaimed += await self.transport.reclaim(
                    stream, self.group, self.consumer, count=count - len(reclaimed)
                )
                if len(reclaimed) >= count:
                    break
            if reclaimed:
                log.info("%s: reclaimed %d idle entries", self.name, len(reclaimed))
                return reclaimed
        if not self.streams:  # owns no partition (yet): nothing to read
            await asyncio.sleep((block_ms or 0) / 1000.0)
            return []
        return await self.reader.read(count=count, block_ms=block_ms)

    async def dead_letter(self, letters: list[DeadLetter]) -> None:
        self._held.difference_update((letter.entry.stream, letter.entry.id) for letter in letters)
        if letters:
            await self.transport.dead_letter(letters, self.group)

    def _dead_lettered(self, letters: Sequence[DeadLetter]) -> None:
        """Every dead letter the transport wrote for this stage (bad input, and entries a reclaim
        found past `max_deliveries`): logged, counted, and the dead-letter trim brought forward."""
        for letter in letters:
            log.warning("%s: dead-lettered %s: %s", self.name, letter.entry.id, letter.reason)
        self._next_dead_trim_s = min(self._next_dead_trim_s, self._dead_trimmed_s + _DEAD_TRIM_AFTER_S)
        metrics.dead_letters(self.name, len(letters))
        metrics.frames(self.name, "dead", len(letters))
        self.dead_lettered += len(letters)
        self.processed += len(letters)

    def skips_for_undecodable(self, letters: list[DeadLetter]) -> list[Output]:
        """Skip markers for entries that did not decode but whose header said which frame they
        were (`DeadLetter.meta`), so later stages need not wait for it (default: none)."""
        return []

    async def reject(self, letters: list[DeadLetter]) -> None:
        """Dead-letter undecodable entries, with the skip markers the stage sends for them."""
        if letters:
            await self.commit(Handled(outputs=self.skips_for_undecodable(letters), dead=letters))

    async def commit(self, handled: Handled) -> None:
        """Dead letters first (each acked with its letter), then outputs + acks atomically; a
        fenced commit writes the dead letters too, under the same lease check."""
        dead = handled.dead if handled.fenced else []
        if not handled.fenced:
            await self.dead_letter(handled.dead)
        if handled.outputs or handled.acks or handled.fenced:
            await self.transport.forward(handled.outputs, self.group, handled.acks, handled.fenced, dead=dead)
            self._held.difference_update((e.stream, e.id) for e in [*handled.acks, *(d.entry for d in dead)])
            self.processed += len(handled.acks)
            metrics.frames(self.name, "ok", len(handled.acks))

    async def maintain(self) -> None:
        """Periodic chores: safe-trim the input stream, mend its lag counter, publish its lag, trim
        the dead letters (by age, and by count soon after new ones)."""
        now = time.monotonic()
        if now >= self._next_trim_s:
            self._next_trim_s = now + _TRIM_INTERVAL_S
            for stream in self.streams:
                await self.transport.trim(stream)
                if await self.transport.repair_lag(stream, self.group):
                    log.warning(
                        "%s: Redis had lost the read counter of group %s on %s (restart from an AOF); "
                        "reset it, so its lag is right again",
                        self.name, self.group, stream,
                    )  # fmt: skip
        if now >= self._next_dead_trim_s:
            self._dead_trimmed_s, self._next_dead_trim_s = now, now + _DEAD_TRIM_INTERVAL_S
            cfg = self.settings.dead_letters
            await self.dead_letters.trim(max_len=cfg.max_len, max_age_s=cfg.max_age_s)
        if now >= self._next_orphan_check_s:
            self._next_orphan_check_s = now + self.settings.streams.claim_idle_ms / 1000.0
            await self._take_back_orphans()
        if now >= self._next_lag_s:
            self._next_lag_s = now + _LAG_INTERVAL_S
            for stream in self.streams:
                stats = await self.transport.group_stats(stream, self.group)
                metrics.stream_lag(stream, self.group, stats.backlog)

    async def _take_back_orphans(self) -> None:
        """Entries Redis delivered to this consumer that this loop never received: a read whose
        reply was lost (a connection dropped on a timeout while Redis was cut off, its XREADGROUP
        still carried out when the route came back, after this loop had taken back what it held).
        Nobody else takes them (this consumer talks to Redis, so it is not silent): pending idle
        for `claim_idle_ms` and not held here, they are claimed again and handled."""
        held = self._held | self.reader.delivered() | {(e.stream, e.id) for e in self._orphans}
        for stream in self.streams:
            rows = await self.transport.own_idle(stream, self.group, self.consumer, count=100)
            rows = [r for r in rows if (stream, r["message_id"]) not in held]
            if rows:
                taken = await self.transport.claim_rows(stream, self.group, self.consumer, rows)
                log.warning(
                    "%s: took back %d entries delivered to this consumer but never received "
                    "(a read whose reply was lost)", self.name, len(taken),
                )  # fmt: skip
                self._orphans += taken


class ConsumerStage(StageBase):
    """A stage that handles each read batch as a whole: read -> decode -> handle -> commit."""

    async def handle(self, items: list[tuple[Entry, Message]]) -> Handled:
        raise NotImplementedError

    async def flush(self) -> Handled:
        """Whatever the stage still holds, at shutdown (default: nothing)."""
        return Handled()

    async def on_idle(self) -> Handled:
        """Called after every read, also an empty one (timeouts of held state)."""
        return Handled()

    def read_block_ms(self) -> int:
        return self.settings.streams.block_ms

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        while not stop.is_set():
            self.tick()
            entries = await self.next_entries(self.settings.streams.read_count, self.read_block_ms())
            if entries:
                good, bad = self.transport.decode(entries)
                await self.reject(bad)
                if good:
                    started = time.monotonic()
                    await self.handle_each_apart_on_error(good)
                    metrics.stage_seconds(self.name, (time.monotonic() - started) / len(good))
            await self.commit(await self.on_idle())
            await self.maintain()
        async with asyncio.timeout(self.settings.streams.drain_timeout_s):
            await self._drain()

    async def handle_each_apart_on_error(self, items: list[tuple[Entry, Message]]) -> None:
        """Handle and commit `items`; when handling raises, handle them one by one, so that an
        exception that belongs to one entry makes that entry a dead letter (with the exception as
        its reason) and the others go on. Redis errors are the loop's (`run_resilient`)."""
        try:
            handled = await self.handle(items)
        except Exception as e:
            if is_redis_outage(e) or isinstance(e, (RedisError, TransportError)):
                raise
            if len(items) == 1:
                log.error("%s: handling %s failed", self.name, items[0][0].id, exc_info=e)
                await self.dead_letter(
                    [DeadLetter(items[0][0], f"{self.name} failed: {type(e).__name__}: {e}")]
                )
                return
            for item in items:
                await self.handle_each_apart_on_error([item])
            return
        await self.commit(handled)

    async def _drain(self) -> None:
        good, bad = self.transport.decode(await self.reader.finish())  # reads in flight (P > 1)
        await self.reject(bad)
        if good:
            await self.handle_each_apart_on_error(good)
        await self.commit(await self.flush())


async def run_resilient(
    loop: StageLoop, stop: asyncio.Event, client: aioredis.Redis, *, max_outage_s: float = 300.0
) -> None:
    """Run `loop` until `stop` is set, riding out Redis outages instead of crashing.

    When Redis goes away mid-run (killed and restarted, stalled past the socket timeout, loading
    its AOF), the loop's ``run`` ends with a transient error: wait with exponential backoff until
    Redis answers PING again, then run the loop again. Entries it held stay pending in its group
    and are taken back on the rerun (`recover_own`), so nothing is lost; a frame may be handled
    twice (the sink drops duplicates). An outage longer than `max_outage_s` re-raises, for a supervisor (Ray
    Serve, the runner) to act on.
    """
    while True:
        try:
            await loop.run(stop)
            return
        except Exception as e:
            if not is_redis_outage(e):
                raise
            if stop.is_set():
                return  # stopping anyway; what we held is reclaimed by the others
            log.warning("%s: Redis unavailable (%s: %s); reconnecting", loop.name, type(e).__name__, e)
            await _wait_for_redis(client, stop, max_outage_s)
            log.warning("%s: Redis is back; resuming", loop.name)


async def _wait_for_redis(client: aioredis.Redis, stop: asyncio.Event, max_outage_s: float) -> None:
    async def ping() -> None:
        if not stop.is_set():
            await client.ping()
            await refresh_cluster_view(client)

    await ride_out(ping, RedisOutage(max_outage_s, announce=False))  # the loop logs it
