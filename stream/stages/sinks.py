"""Result sinks: read ``keys.results`` through a consumer group, drop duplicates, write JSONL.

Results are idempotent by (source, model, seq): at-least-once delivery can repeat one, so the
sink keeps the first and counts the rest (never hides them).

Every reader that must see *all* results needs a consumer group of its own: consumers of one group
share its entries, so a second reader in the same group takes some of them, an end-of-stream
included (a run waiting for that end-of-stream would then wait forever).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream.adapters.redis_streams import Entry, StreamTransport
from stream.core.codec import Message
from stream.core.keys import PipelineKeys
from stream.core.messages import EOS, RESULT
from stream.stages.base import REDIS_TRANSIENT

__all__ = ["JsonlSink", "ResultCollector", "SINK_GROUP", "percentile"]

SINK_GROUP = "sink"
"""The default group; a reader that must not share results with anybody passes its own."""

_T = TypeVar("_T")


def percentile(values: list[float], q: float) -> float | None:
    """The `q`-th percentile (0..100, nearest rank) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class JsonlSink:
    """One JSON object per line; flushed after every batch so a reader can tail the file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("w", encoding="utf-8")

    def write(self, records: list[dict[str, Any]]) -> None:
        if self._file is None or not records:
            return
        self._file.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class _Track:
    seqs: set[int] = field(default_factory=set)
    duplicates: int = 0
    eos: dict[str, Any] | None = None
    latencies_ms: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)


class ResultCollector:
    """Consumes the results stream through `group`, dedupes, tracks end-of-stream per (source, model).

    `sources`, when given, limits what it tracks and writes to those sources (the results stream is
    shared by every run on the pipeline). Every Redis reply is awaited for at most the read's block
    time + `reply_timeout_s`: a connection Redis never answers on (a stalled server, a half-open TCP
    connection to a server that went away) becomes a `redis.TimeoutError` instead of a hang, also
    with redis-py < 8, whose clients have no socket timeout unless given one.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        keys: PipelineKeys,
        *,
        consumer: str = "sink",
        group: str = SINK_GROUP,
        sink: JsonlSink | None = None,
        sources: Collection[str] | None = None,
        reply_timeout_s: float = 10.0,
    ) -> None:
        self.client = client
        self.keys = keys
        self.consumer = consumer
        self.group = group
        self.sink = sink
        self.sources = frozenset(sources) if sources is not None else None
        self.reply_timeout_s = reply_timeout_s
        self.transport = StreamTransport(client, keys, stage="sink")
        self.tracks: dict[tuple[str, str], _Track] = {}
        self.regroups = 0
        """How often the group was gone (Redis came back without it) and was made again."""
        self._reread_own = False
        self._newest_id: tuple[int, int] = (0, 0)

    async def ensure_group(self, start_id: str = "$") -> None:
        """Create the group at the stream's end (results of earlier runs are not ours)."""
        await self._bounded(self.transport.ensure_group(self.keys.results, self.group, start_id=start_id))

    async def destroy_group(self) -> None:
        """Remove the group (a group left behind keeps the results stream from being trimmed)."""
        await self._bounded(self.client.xgroup_destroy(self.keys.results, self.group))

    def track(self, source: str, model: str) -> _Track:
        return self.tracks.setdefault((source, model), _Track())

    async def poll(self, block_ms: int = 200, count: int = 500) -> int:
        """Read, record and ack one batch of results; returns how many entries it read."""
        try:
            entries = await self._read(block_ms, count)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            # Redis came back without the group (no persistence, or an AOF that predates it):
            # make it again at the start of what is left, and read that again. Nothing of ours
            # is skipped; what we had already is dropped as a re-read below.
            await self.ensure_group(start_id="0")
            self.regroups += 1
            return 0
        if not entries:
            return 0
        good, bad = self.transport.decode(entries)
        await self._bounded(self.transport.dead_letter(bad, self.group))
        records = self._record(good)
        if self.sink is not None:
            self.sink.write(records)
        if good:
            try:
                await self._bounded(self.client.xack(self.keys.results, self.group, *[e.id for e, _ in good]))
            except REDIS_TRANSIENT:
                self._reread_own = True
                raise
        return len(entries)

    def _record(self, good: list[tuple[Entry, Message]]) -> list[dict[str, Any]]:
        """Track each result and end-of-stream; returns the results seen for the first time."""
        records = []
        for entry, message in good:
            meta = message.meta
            entry_id = _id_tuple(entry.id)
            reread = entry_id <= self._newest_id  # read before (a lost ack, a group made again)
            self._newest_id = max(self._newest_id, entry_id)
            if self.sources is not None and str(meta.get("source")) not in self.sources:
                continue
            track = self.track(str(meta.get("source")), str(meta.get("model")))
            if meta.get("kind") == EOS:
                track.eos = meta
            elif meta.get("kind") == RESULT:
                seq = int(meta["seq"])
                if seq in track.seqs:
                    track.duplicates += 0 if reread else 1  # a re-read is not a duplicate
                    continue
                track.seqs.add(seq)
                if isinstance(meta.get("latency_ms"), int | float):
                    track.latencies_ms.append(float(meta["latency_ms"]))
                if isinstance(meta.get("batch_size"), int):
                    track.batch_sizes.append(meta["batch_size"])
                records.append(meta)
        return records

    async def _read(self, block_ms: int, count: int) -> list[Entry]:
        """New results; but after a Redis error first this consumer's own pending ones (a read
        whose reply was lost, or an ack that failed, left them delivered to us and nobody else)."""
        try:
            if self._reread_own:
                own = await self._bounded(
                    self.transport.read_own_pending(self.keys.results, self.group, self.consumer, count=count)
                )
                self._reread_own = bool(own)
                if own:
                    return own
            return await self._bounded(
                self.transport.read(
                    self.keys.results, self.group, self.consumer, count=count, block_ms=block_ms
                ),
                block_ms,
            )
        except REDIS_TRANSIENT:
            self._reread_own = True
            raise

    async def _bounded(self, call: Awaitable[_T], block_ms: int = 0) -> _T:
        """`call`, or a `redis.TimeoutError` when no reply came in time (redis-py drops the
        connection of a cancelled command, so the next one starts on a fresh connection)."""
        try:
            return await asyncio.wait_for(call, timeout=block_ms / 1000.0 + self.reply_timeout_s)
        except TimeoutError:
            raise RedisTimeoutError(
                f"no reply from Redis within {block_ms / 1000.0 + self.reply_timeout_s:.1f} s"
            ) from None

    def finished(self, pairs: set[tuple[str, str]]) -> bool:
        """True once every (source, model) in `pairs` has its end-of-stream result."""
        return all(self.tracks.get(p) is not None and self.tracks[p].eos is not None for p in pairs)


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
