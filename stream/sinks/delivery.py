"""The delivery loop of one sink: its own consumer group (``sink:<name>``) on each partition's
results / events / segments stream and its retry stream; items sent in batches, in stream order,
and acked only once the destination confirmed them.

Per partition one *lane* reads (up to ``max_items``, waiting ``max_wait_ms`` for a batch to fill),
sends and acks, one batch after the other, so a source's items (all in its partition) arrive in
order. A delivery runs lanes only for the partitions in `SinkDelivery.owned` (all of them unless
`stream.sinks.loop.SinkLoop` hands them out by lease): `stop_partitions` stops a lane before its
partition goes to another replica, whose lane takes what this one left unacked.
A failed send is tried again with capped, jittered exponential backoff (tenacity); after
``max_attempts`` sends, for items older than ``max_age_s``, or at once when the destination says
sending again cannot succeed, the items become dead letters (stage ``sink:<name>``) that
`framestream dead retry` re-drives into the sink's own retry stream, so only this sink sees them
again. Entries a stopped or crashed consumer of the group held are taken back (XPENDING/XCLAIM,
`StreamTransport.reclaim`). Redis errors end `run` (the runner's `run_resilient` waits for Redis
and runs it again; what was not acked is delivered again).

Every second the sink's backlog (entries its group has not acked) is published; past
``max_backlog`` with ``on_full: drop``, the oldest entries not yet read become dead letters
(``on_full: pause`` is ingest's part: `stream.adapters.redis.sink_backlog.SinkPause`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from stream.adapters.metrics import metrics
from stream.adapters.redis.dead_letter_writer import write_dead_letters
from stream.adapters.redis.entries import DeadLetter, Entry, entry_of, id_tuple, text
from stream.adapters.redis.sink_backlog import sink_backlog, sink_streams
from stream.adapters.redis.streams import StreamTransport
from stream.adapters.redis.trim import trim
from stream.core.codec import decode_message
from stream.core.keys import PipelineKeys
from stream.errors import CodecError
from stream.settings import Settings
from stream.sinks.destination import DeliveryError, Destination, SinkItem
from stream.sinks.filters import sink_item
from stream.sinks.lanes import Lanes
from stream.sinks.settings import SinkSettings
from stream.waiting import pause

__all__ = ["SinkDelivery", "SinkStats"]

log = logging.getLogger("framestream.sinks")

_WATCH_S = 1.0
"""How often the backlog is read (and published, and acted on) and the retry stream trimmed."""
_NEVER_DEAD_BY_COUNT = 2**31
"""The transport's max_deliveries: a sink dead-letters by its own rules (attempts, age), into
its retry stream, never the transport's way (which would re-drive to every consumer)."""

Pending = list[tuple[Entry, SinkItem]]


@dataclass
class SinkStats:
    """What one sink did in this process (the run's summary reads Redis counters instead)."""

    delivered: int = 0
    retries: int = 0
    dead_letters: int = 0
    dropped: int = 0
    backlog: int = 0
    last_error: str | None = None


class SinkDelivery:
    """Delivers sink `sink` through `destination`; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        sink: SinkSettings,
        destination: Destination,
        *,
        consumer: str,
    ) -> None:
        self.settings = settings
        self.client = client
        self.sink = sink
        self.destination = destination
        self.consumer = consumer
        self.group = sink.group
        self.stage = sink.group
        self.keys = PipelineKeys(settings.streams.pipeline, settings.streams.partitions)
        self.transport = StreamTransport(
            client,
            self.keys,
            stage=self.stage,
            max_deliveries=_NEVER_DEAD_BY_COUNT,
            claim_idle_ms=settings.streams.claim_idle_ms,
        )
        self.stats = SinkStats()
        self._retries_counted = 0  # of stats.retries, those added to Redis's counters
        self.on_handled: Callable[[int], None] | None = None
        """Called with how many entries were delivered or dead-lettered, each time some were."""
        self.last_progress_s = time.monotonic()
        self._send_lock = asyncio.Lock()  # a destination's `send` never runs concurrently with itself
        self.lanes = Lanes(lambda k, stop: self._lane(self.keys.partition(k), stop), self.keys.partitions)

    @property
    def name(self) -> str:
        return self.sink.name

    async def start(self) -> None:
        """The sink's groups on every stream it reads: new ones start at the stream's end (what
        was there before the sink existed is not its to send), the retry stream's at its start."""
        for keys in self.keys.all_partitions:
            *streams, retry = sink_streams(keys, self.sink)
            for stream in streams:
                await self.transport.ensure_group(stream, self.group, start_id="$")
            await self.transport.ensure_group(retry, self.group, start_id="0")
        try:
            await self.destination.start()
        except DeliveryError as e:  # a destination down at start is like one down later: sends retry
            await self._note_failure(e)

    @property
    def owned(self) -> set[int]:
        """The partitions this delivery runs lanes for (all unless `SinkLoop` hands them out)."""
        return self.lanes.owned

    @owned.setter
    def owned(self, partitions: set[int]) -> None:
        self.lanes.owned = set(partitions)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver the `owned` partitions until `stop` (each lane finishes the batch it holds); a
        Redis error ends it (and every lane) for the runner to rerun."""
        await self.start()
        await self.lanes.run(stop, beside=self._watch(stop))

    def deliver_partitions(self, partitions: Collection[int]) -> None:
        """Own `partitions` too: their lanes start now while `run` runs (else when it does)."""
        self.lanes.add(partitions)

    async def stop_partitions(self, partitions: Collection[int], *, wait_s: float) -> None:
        """Stop delivering `partitions`: each lane finishes the send it is in, for up to `wait_s`
        (then it is cancelled). What a lane read and did not ack stays pending for the partition's
        next lane, which sends it before anything newer."""
        await self.lanes.remove(partitions, wait_s=wait_s)

    async def close(self) -> None:
        await self.destination.close()

    # --- reading ----------------------------------------------------------------------------

    async def _lane(self, keys: PipelineKeys, stop: asyncio.Event) -> None:
        streams = sink_streams(keys, self.sink)
        count = self.sink.max_items
        for stream in streams:  # what this consumer held before (a restart under its name) first
            after: str | None = None
            while not stop.is_set():
                own = await self.transport.recover_own(
                    stream, self.group, self.consumer, count=count, after=after
                )
                if not own:
                    break
                after = own[-1].id
                await self._deliver(keys, own, stop)
        next_reclaim_s = 0.0
        while not stop.is_set():
            self.last_progress_s = time.monotonic()
            entries: list[Entry] = []
            held = await self._held_by_others(streams)
            if held or time.monotonic() >= next_reclaim_s:  # a consumer that stopped or crashed
                next_reclaim_s = time.monotonic() + self.settings.streams.claim_idle_ms / 2000.0
                for stream in streams:
                    entries += await self.transport.reclaim(stream, self.group, self.consumer, count=count)
            if not entries and held:
                # older entries another consumer holds go first (in order), once it has been silent
                # for claim_idle_ms: newer ones wait for them
                await pause(stop, min(0.1, self.settings.streams.claim_idle_ms / 4000.0))
                continue
            if not entries:
                entries = await self._read_batch(streams)
            if entries:
                await self._deliver(keys, entries, stop)

    async def _held_by_others(self, streams: list[str]) -> bool:
        """Whether another consumer of the group holds entries of `streams` (the partition's
        earlier owner, stopped or crashed: one replica at a time delivers a partition, so those
        are older than what is unread)."""
        for stream in streams:
            try:
                summary: Any = await self.client.xpending(stream, self.group)
            except ResponseError as e:
                if "NOGROUP" in str(e):  # gone (Redis restarted empty, the sink deleted): `_read` sees to it
                    return False
                raise
            if any(text(c["name"]) != self.consumer and int(c["pending"]) > 0 for c in summary["consumers"]):
                return True
        return False

    async def _read_batch(self, streams: list[str]) -> list[Entry]:
        """Up to `max_items` new entries: the first read waits up to ``streams.block_ms``, then the
        batch fills for up to `max_wait_ms` more."""
        got = await self._read(streams, self.sink.max_items, self.settings.streams.block_ms)
        deadline = time.monotonic() + self.sink.max_wait_ms / 1000.0
        while got and len(got) < self.sink.max_items:
            left_ms = int((deadline - time.monotonic()) * 1000.0)
            if left_ms <= 0:
                break
            more = await self._read(streams, self.sink.max_items - len(got), left_ms)
            if not more:
                break
            got += more
        return got

    async def _read(self, streams: list[str], count: int, block_ms: int) -> list[Entry]:
        """XREADGROUP of a partition's streams at once (one hash tag: one slot of a cluster)."""
        try:
            reply: Any = await self.client.xreadgroup(
                self.group, self.consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms
            )
        except ResponseError as e:
            if str(e).startswith("UNBLOCKED"):  # the stream moved to another master (cluster)
                return []
            if "NOGROUP" in str(e):  # Redis came back without the group: make it again, read on
                await self.start()
                return []
            raise
        return [entry_of(text(stream), i, f) for stream, items in reply or [] for i, f in items]

    # --- delivering -------------------------------------------------------------------------

    async def _deliver(self, keys: PipelineKeys, entries: Sequence[Entry], stop: asyncio.Event) -> None:
        """Send the items of `entries` (batches of `max_items`, in order) and ack them; entries that
        are no item for this sink are acked unsent, undecodable ones dead-lettered. Returns early
        at `stop`, leaving what is unsent pending for this consumer."""
        items: Pending = []
        unsent: list[Entry] = []
        bad: list[DeadLetter] = []
        for entry in entries:
            if entry.data is None:
                bad.append(self._letter(keys, entry, "entry was deleted before the sink delivered it"))
                continue
            try:
                meta = decode_message(entry.data).meta
            except CodecError as e:
                bad.append(self._letter(keys, entry, f"undecodable: {e}"))
                continue
            item = sink_item(meta, self.sink)
            if item is None:
                unsent.append(entry)
            else:
                items.append((entry, item))
        await self._dead_letter(keys, bad, "failed")
        await self._ack(keys, unsent, delivered=0)
        for start in range(0, len(items), self.sink.max_items):
            if not await self._send_with_retries(keys, items[start : start + self.sink.max_items], stop):
                return

    async def _send_with_retries(self, keys: PipelineKeys, batch: Pending, stop: asyncio.Event) -> bool:
        """Send `batch` until confirmed (then ack it) or dead-lettered; False when `stop` came first
        (the batch stays pending, to be delivered again)."""
        pending = list(batch)
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, DeliveryError) and e.retryable),
            wait=wait_random_exponential(multiplier=self.sink.backoff_initial_s, max=self.sink.backoff_max_s),
            stop=lambda state: state.attempt_number >= self.sink.max_attempts or stop.is_set(),
            sleep=lambda seconds: pause(stop, seconds),
            before_sleep=self._retrying,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        pending = await self._expire(keys, pending)
                    if pending:
                        await self._send([item for _, item in pending])
        except DeliveryError as e:
            if stop.is_set() and e.retryable:
                return False
            if not e.retryable and len(pending) > 1:  # find the item the destination refuses
                for one in pending:
                    if not await self._send_with_retries(keys, [one], stop):
                        return False
                return True
            reason = (
                f"refused by the destination: {e.reason}"
                if not e.retryable
                else f"not delivered after {self.sink.max_attempts} attempts; last error: {e.reason}"
            )
            letters = [self._letter(keys, entry, reason) for entry, _ in pending]
            await self._dead_letter(keys, letters, "failed")
            return True
        await self._ack(keys, [entry for entry, _ in pending], delivered=len(pending))
        return True

    async def _send(self, items: list[SinkItem]) -> None:
        """One send, bounded by `timeout_s` (plus a margin for the destination's own timeout); any
        failure is a `DeliveryError` (one the destination did not name is retryable)."""
        async with self._send_lock:
            try:
                async with asyncio.timeout(self.sink.timeout_s + 5.0):
                    await self.destination.send(items)
                return
            except DeliveryError as e:
                error = e
            except TimeoutError as e:
                error = DeliveryError(f"no confirmation within timeout_s={self.sink.timeout_s} s")
                error.__cause__ = e
            except Exception as e:
                error = DeliveryError(f"{type(e).__name__}: {e}")
                error.__cause__ = e
        await self._note_failure(error)
        raise error

    async def _expire(self, keys: PipelineKeys, pending: Pending) -> Pending:
        """Dead-letter the items older than `max_age_s` (by their entry id); the others."""
        oldest_ms = time.time() * 1000.0 - self.sink.max_age_s * 1000.0
        old = [p for p in pending if id_tuple(p[0].id)[0] < oldest_ms]
        if old:
            reason = (
                f"not delivered within max_age_s={self.sink.max_age_s:g} s; "
                f"last error: {self.stats.last_error}"
            )
            await self._dead_letter(keys, [self._letter(keys, entry, reason) for entry, _ in old], "failed")
        return [p for p in pending if p not in old]

    def _retrying(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        metrics.sink_retries(self.name)
        log.warning(
            "sink %s: send %d failed (%s); trying again",
            self.name, state.attempt_number, self.stats.last_error,
        )  # fmt: skip

    async def _note_failure(self, error: DeliveryError) -> None:
        """Keep `error` as this sink's last one: here, in the metrics and in Redis (the console
        shows it, `stream.readers.sink_status`)."""
        now = time.time()
        self.stats.last_error = error.reason
        metrics.sink_last_error(self.name, now)
        last = json.dumps({"error": error.reason, "time_ms": round(now * 1000.0)})
        await self.client.hset(self.keys.sink_errors, self.name, last)

    # --- acks and dead letters --------------------------------------------------------------

    def _letter(self, keys: PipelineKeys, entry: Entry, reason: str) -> DeadLetter:
        """A dead letter of this sink: a retry re-drives it into the sink's own retry stream."""
        return DeadLetter(entry, f"sink {self.name}: {reason}", redrive_to=keys.sink_retry(self.name))

    async def _ack(self, keys: PipelineKeys, entries: Sequence[Entry], *, delivered: int) -> None:
        if not entries:
            return
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.id)
        async with self.client.pipeline(transaction=True) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, self.group, *ids)
            if delivered:
                pipe.hincrby(keys.counters, f"sink:{self.name}:delivered", delivered)
            await pipe.execute()
        if delivered:
            self.stats.delivered += delivered
            metrics.sink_delivered(self.name, delivered)
            if self.on_handled is not None:
                self.on_handled(delivered)

    async def _dead_letter(self, keys: PipelineKeys, letters: list[DeadLetter], why: str) -> None:
        """Write `letters` (acking their entries); `why`: failed (not delivered) or backlog."""
        if not letters:
            return
        await write_dead_letters(self.client, self.keys, self.stage, letters, self.group)
        if why == "backlog":
            await self.client.hincrby(keys.counters, f"sink:{self.name}:dropped", len(letters))
            self.stats.dropped += len(letters)
        else:
            self.stats.dead_letters += len(letters)
        metrics.sink_dead_letters(self.name, why, len(letters))
        if self.on_handled is not None:
            self.on_handled(len(letters))
        log.warning("sink %s: %d dead letters: %s", self.name, len(letters), letters[0].reason)

    # --- backlog ----------------------------------------------------------------------------

    async def _watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            parts = [await sink_backlog(self.client, keys, self.sink) for keys in self.keys.all_partitions]
            total = sum(parts)
            self.stats.backlog = total
            metrics.sink_backlog(self.name, total)
            # each replica drops its share of the excess from the partitions it owns
            if self.sink.on_full == "drop" and total > self.sink.max_backlog:
                excess = total - self.sink.max_backlog
                for keys, part in zip(self.keys.all_partitions, parts, strict=True):
                    if part and keys.index in self.owned:
                        await self._drop_oldest(keys, math.ceil(excess * part / total), total)
            for keys in self.keys.all_partitions:
                if keys.index in self.owned:
                    await trim(self.client, keys.sink_retry(self.name))
            await self._count_retries()
            await pause(stop, _WATCH_S)
        await self._count_retries()

    async def _count_retries(self) -> None:
        """Add the retries since the last call to the counters (partition 0's hash: the run's
        summary sums every partition's)."""
        new = self.stats.retries - self._retries_counted
        if new:
            await self.client.hincrby(self.keys.counters, f"sink:{self.name}:retries", new)
            self._retries_counted += new

    async def _drop_oldest(self, keys: PipelineKeys, count: int, backlog: int) -> None:
        """Dead-letter up to `count` of the oldest entries of partition `keys` this sink has not
        read yet (``on_full: drop``), stream by stream in the order of `send`."""
        reason = f"backlog of {backlog} entries over max_backlog={self.sink.max_backlog} (on_full: drop)"
        for stream in sink_streams(keys, self.sink)[:-1]:
            if count <= 0:
                return
            taken = await self._read_now(stream, count)
            await self._dead_letter(keys, [self._letter(keys, e, reason) for e in taken], "backlog")
            count -= len(taken)

    async def _read_now(self, stream: str, count: int) -> list[Entry]:
        """Up to `count` entries of `stream` not yet read by the group, without waiting."""
        reply: Any = await self.client.xreadgroup(self.group, self.consumer, {stream: ">"}, count=count)
        return [entry_of(stream, i, f) for _, items in reply or [] for i, f in items]
