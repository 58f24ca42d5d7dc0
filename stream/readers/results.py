"""The one reader of a pipeline's results stream: both runners, the load tester and the fault
suite read results through `ResultReader`, and the bookkeeping (duplicates, end-of-stream, counts,
latency percentiles) is one `stream.core.ledger.ResultLedger`. Given a `segments` sink it also
reads every partition's segments stream and writes each closed segment there once.

Two ways to read, one class:
- through a consumer group of its own (`group=`): entries are acked once recorded, undecodable
  ones dead-lettered, and after a Redis error the reader first takes back what it held; a group
  Redis lost (restart without persistence) is made again. Every reader that must see *all*
  results needs a group of its own: consumers of one group share its entries, an end-of-stream
  included (a run waiting for that end-of-stream would then wait forever);
- by cursor (`group=None`, XREAD): takes nothing away from anybody; a failed read is read again.

Either way it starts at the stream's end when created (results of earlier runs are not ours)
unless given `start_id`. Every Redis reply is awaited for at most the read's block time +
`reply_timeout_s`: a connection Redis never answers on becomes a `redis.TimeoutError`, not a hang.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream.adapters.redis.dead_letters import DeadLetters
from stream.adapters.redis.entries import Entry, last_id
from stream.adapters.redis.outage import REDIS_TRANSIENT
from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import decode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.ledger import DEDUPE_WINDOW, ResultLedger
from stream.core.messages import EOS, RESULT, SEGMENT
from stream.errors import CodecError

__all__ = ["JsonlSink", "ResultReader", "SINK_GROUP", "dead_letter_count", "decode_fields"]

SINK_GROUP = "sink"
"""The prefix of readers' group names."""

_T = TypeVar("_T")

OnResult = Callable[[Mapping[str, Any], bool], None]
"""Called with every result and end-of-stream read (not re-reads) and whether it is new."""


def decode_fields(fields: Mapping[bytes, bytes] | None) -> dict[str, Any] | None:
    """The meta of one raw stream entry's fields; None when missing or undecodable."""
    raw = (fields or {}).get(FIELD.encode())
    if raw is None:
        return None
    try:
        return dict(decode_message(raw).meta)
    except CodecError:
        return None


async def dead_letter_count(client: aioredis.Redis, keys: PipelineKeys) -> int:
    """Entries in the dead-letter streams of every partition (`DeadLetters.count`)."""
    return await DeadLetters(client, keys).count()


class JsonlSink:
    """One JSON object per line; flushed after every batch so a reader can tail the file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("w", encoding="utf-8")

    def write(self, records: list[Mapping[str, Any]]) -> None:
        if self._file is None or not records:
            return
        self._file.writelines(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ResultReader:
    """Reads ``keys.results`` into `ledger`; see the module docstring.

    `sources` / `model`, when given, limit what it records (the results stream is shared by every
    run on the pipeline). `sink` gets every distinct result; `on_result` every result and
    end-of-stream as read; `segments`, when given, every distinct closed segment (``keys.segments``
    of every partition are read too; `segments_written` counts them).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        keys: PipelineKeys,
        *,
        group: str | None = None,
        consumer: str = "sink",
        start_id: str = "$",
        sources: Collection[str] | None = None,
        model: str | None = None,
        sink: JsonlSink | None = None,
        segments: JsonlSink | None = None,
        on_result: OnResult | None = None,
        window: int = DEDUPE_WINDOW,
        reply_timeout_s: float = 10.0,
    ) -> None:
        self.client = client
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.start_id = start_id
        self.sources = frozenset(sources) if sources is not None else None
        self.model = model
        self.sink = sink
        self.segments = segments
        self.segments_written = 0
        self._segment_ids: dict[str, None] = {}
        """Ids of the newest segments written (a bounded window, as the ledger's for results)."""
        self.on_result = on_result
        self.reply_timeout_s = reply_timeout_s
        self.ledger = ResultLedger(window=window)
        self.transport = StreamTransport(client, keys, stage="sink")
        self.undecodable = 0
        self.regroups = 0
        """How often the group was gone (Redis came back without it) and was made again."""
        self.streams = keys.results_streams + ([k.segments for k in keys.all_partitions] if segments else [])
        """Every partition's results stream (a source's results are all in its partition's) and,
        with a `segments` sink, every partition's segments stream."""
        self._window = window
        self._cursors: dict[str, str] = {}
        self._reread_own = False
        self._newest_id: dict[str, tuple[int, int]] = {}

    async def start(self) -> ResultReader:
        """Create the group (or fix the cursors) at `start_id` on every partition's results stream;
        `$` is each stream's current end."""
        for stream in self.streams:
            if self.group is not None:
                await self._bounded(self.transport.ensure_group(stream, self.group, self.start_id))
            elif stream not in self._cursors:
                start = self.start_id
                self._cursors[stream] = (
                    await self._bounded(last_id(self.client, stream)) if start == "$" else start
                )
        return self

    async def close(self) -> None:
        """Remove the group (one left behind keeps the results stream from being trimmed)."""
        if self.group is not None:
            for stream in self.streams:
                await self._bounded(self.client.xgroup_destroy(stream, self.group))

    async def poll(self, block_ms: int = 200, count: int = 1000) -> int:
        """Read, record (and ack, with a group) one batch; returns how many entries it read."""
        if self.group is None and not self._cursors:
            await self.start()
        try:
            entries = await self._read(block_ms, count)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            # Redis came back without the group: make it again at the start of what is left and
            # read that again. Nothing of ours is skipped; what we had is recognised as a re-read.
            for stream in self.streams:
                await self._bounded(self.transport.ensure_group(stream, str(self.group), "0"))
            self.regroups += 1
            return 0
        if not entries:
            return 0
        good, bad = self.transport.decode(entries)
        self.undecodable += len(bad)
        if self.group is not None:
            await self._bounded(self.transport.dead_letter(bad, self.group))
        fresh = [self._record(entry, dict(message.meta)) for entry, message in good]
        if self.sink is not None:
            self.sink.write([meta for meta in fresh if meta is not None and meta.get("kind") != SEGMENT])
        if self.segments is not None:
            self.segments.write([meta for meta in fresh if meta is not None and meta.get("kind") == SEGMENT])
        if self.group is not None and good:
            try:
                await self._ack(self.group, [e for e, _ in good])
            except REDIS_TRANSIENT:
                self._reread_own = True
                raise
        return len(entries)

    def _record(self, entry: Entry, meta: dict[str, Any]) -> dict[str, Any] | None:
        """Record one message; returns it when it is a result or a segment seen for the first time."""
        entry_id, newest = _id_tuple(entry.id), self._newest_id.get(entry.stream, (0, 0))
        reread = entry_id <= newest  # read before (a lost ack, a group made again)
        self._newest_id[entry.stream] = max(newest, entry_id)
        if meta.get("kind") not in (RESULT, EOS, SEGMENT):
            return None
        if self.sources is not None and str(meta.get("source")) not in self.sources:
            return None
        if self.model is not None and meta.get("model") not in (None, self.model):
            return None
        if meta.get("kind") == SEGMENT:
            return self._segment(meta, reread)
        first = self.ledger.record(meta, reread=reread)
        if self.on_result is not None and not reread:
            self.on_result(meta, first)
        return meta if first else None

    def _segment(self, meta: dict[str, Any], reread: bool) -> dict[str, Any] | None:
        """A closed segment, when neither read before nor a copy of one written before."""
        segment_id = str(meta.get("id"))
        if reread or segment_id in self._segment_ids:
            return None
        self._segment_ids[segment_id] = None
        if len(self._segment_ids) > self._window:
            del self._segment_ids[next(iter(self._segment_ids))]
        self.segments_written += 1
        return meta

    async def _read(self, block_ms: int, count: int) -> list[Entry]:
        """New results; with a group, after a Redis error first this consumer's own pending ones
        (a read whose reply was lost, or an ack that failed, left them delivered to us alone).

        With several partitions every stream is read without waiting first, and only when none
        had anything does it wait (on all of them at once): a busy partition never waits out a
        blocking read on an idle one, and a Redis Cluster gets one single-slot read per stream.
        """
        try:
            if self.group is not None and self._reread_own:
                own = await self._each(
                    lambda s: self.transport.read_own_pending(s, str(self.group), self.consumer, count=count)
                )
                self._reread_own = bool(own)
                if own:
                    return own
            if len(self.streams) > 1:
                entries = await self._each(lambda s: self._read_one(s, count, None))
                if entries:
                    return entries
            return await self._each(lambda s: self._read_one(s, count, block_ms), block_ms)
        except REDIS_TRANSIENT:
            self._reread_own = True
            raise

    async def _read_one(self, stream: str, count: int, block_ms: int | None) -> list[Entry]:
        if self.group is not None:
            return await self.transport.read(
                stream, self.group, self.consumer, count=count, block_ms=block_ms
            )
        entries = await self.transport.read_after(
            stream, self._cursors[stream], count=count, block_ms=block_ms
        )
        if entries:
            self._cursors[stream] = entries[-1].id
        return entries

    async def _each(self, read: Callable[[str], Awaitable[list[Entry]]], block_ms: int = 0) -> list[Entry]:
        """`read` on every partition's stream at once; their entries, partition by partition."""
        batches = await self._bounded(asyncio.gather(*(read(s) for s in self.streams)), block_ms)
        return [entry for batch in batches for entry in batch]

    async def _ack(self, group: str, entries: list[Entry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.id)
        for stream, ids in by_stream.items():
            await self._bounded(self.client.xack(stream, group, *ids))

    async def _bounded(self, call: Awaitable[_T], block_ms: int = 0) -> _T:
        """`call`, or a `redis.TimeoutError` when no reply came in time (redis-py drops the
        connection of a cancelled command, so the next one starts on a fresh connection)."""
        try:
            async with asyncio.timeout(block_ms / 1000.0 + self.reply_timeout_s):
                return await call
        except TimeoutError:
            raise RedisTimeoutError(
                f"no reply from Redis within {block_ms / 1000.0 + self.reply_timeout_s:.1f} s"
            ) from None


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
