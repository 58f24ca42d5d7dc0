"""Result sinks: read ``keys.results`` through a consumer group, drop duplicates, write JSONL.

Results are idempotent by (source, model, seq): at-least-once delivery can repeat one, so the
sink keeps the first and counts the rest (never hides them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis.asyncio as aioredis

from stream.adapters.redis_streams import Entry, StreamTransport
from stream.core.keys import PipelineKeys
from stream.core.messages import EOS, RESULT
from stream.stages.base import REDIS_TRANSIENT

__all__ = ["JsonlSink", "ResultCollector", "SINK_GROUP", "percentile"]

SINK_GROUP = "sink"


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
    """Consumes the results stream (group ``sink``), dedupes, tracks end-of-stream per (source, model)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: PipelineKeys,
        *,
        consumer: str = "sink",
        sink: JsonlSink | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.consumer = consumer
        self.sink = sink
        self.transport = StreamTransport(client, keys, stage="sink")
        self.tracks: dict[tuple[str, str], _Track] = {}
        self._reread_own = False

    async def ensure_group(self) -> None:
        """Create the sink group at the stream's end (results of earlier runs are not ours)."""
        await self.transport.ensure_group(self.keys.results, SINK_GROUP, start_id="$")

    def track(self, source: str, model: str) -> _Track:
        return self.tracks.setdefault((source, model), _Track())

    async def poll(self, block_ms: int = 200, count: int = 500) -> int:
        """Read, record and ack one batch of results; returns how many entries it read."""
        entries, rereading = await self._read(block_ms, count)
        if not entries:
            return 0
        good, bad = self.transport.decode(entries)
        await self.transport.dead_letter(bad, SINK_GROUP)
        records = []
        for _, message in good:
            meta = message.meta
            track = self.track(str(meta.get("source")), str(meta.get("model")))
            if meta.get("kind") == EOS:
                track.eos = meta
            elif meta.get("kind") == RESULT:
                seq = int(meta["seq"])
                if seq in track.seqs:
                    track.duplicates += 0 if rereading else 1  # a re-read is not a duplicate
                    continue
                track.seqs.add(seq)
                if isinstance(meta.get("latency_ms"), int | float):
                    track.latencies_ms.append(float(meta["latency_ms"]))
                if isinstance(meta.get("batch_size"), int):
                    track.batch_sizes.append(meta["batch_size"])
                records.append(meta)
        if self.sink is not None:
            self.sink.write(records)
        try:
            await self.client.xack(self.keys.results, SINK_GROUP, *[e.id for e, _ in good])
        except REDIS_TRANSIENT:
            self._reread_own = True
            raise
        return len(entries)

    async def _read(self, block_ms: int, count: int) -> tuple[list[Entry], bool]:
        """New results; but after a Redis error first this consumer's own pending ones (a read
        whose reply was lost, or an ack that failed, left them delivered to us and nobody else).
        The flag says the entries are such a re-read."""
        try:
            if self._reread_own:
                own = await self.transport.read_own_pending(
                    self.keys.results, SINK_GROUP, self.consumer, count=count
                )
                self._reread_own = bool(own)
                if own:
                    return own, True
            new = await self.transport.read(
                self.keys.results, SINK_GROUP, self.consumer, count=count, block_ms=block_ms
            )
            return new, False
        except REDIS_TRANSIENT:
            self._reread_own = True
            raise

    def finished(self, pairs: set[tuple[str, str]]) -> bool:
        """True once every (source, model) in `pairs` has its end-of-stream result."""
        return all(self.tracks.get(p) is not None and self.tracks[p].eos is not None for p in pairs)
