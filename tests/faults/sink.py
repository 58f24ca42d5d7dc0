"""The fault suite's view of a pipeline, read from Redis only: results at the sink (every copy
kept, so duplicates show), dead letters, and what is still pending in any consumer group."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from stream.adapters.redis.dead_letters import DeadLetters
from stream.adapters.redis.entries import text
from stream.adapters.redis.outage import REDIS_TRANSIENT
from stream.core.keys import PipelineKeys
from stream.core.ledger import Track
from stream.core.messages import EOS
from stream.readers.results import ResultReader

__all__ = ["Arrival", "FaultSink", "dead_letters", "pending_by_group", "pending_total"]


@dataclass(frozen=True)
class Arrival:
    """One result as the sink saw it; times are epoch milliseconds."""

    source: str
    seq: int
    latency_ms: float | None
    ingest_ms: float | None
    result_ms: float
    seen_ms: float
    capture_ms: float | None = None
    """When the frame was captured (read from its source): what the latency counts from."""


@dataclass
class FaultSink:
    """Reads ``keys.results`` through its own consumer group (created at the stream's end, so only
    this scenario's results count) with the project's `ResultReader`, and keeps every copy of
    every result, for `check`."""

    client: aioredis.Redis
    keys: PipelineKeys
    group: str
    sources: set[str] | None = None
    arrivals: list[Arrival] = field(default_factory=list)
    counts: Counter[tuple[str, int]] = field(default_factory=Counter)
    eos: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reader = ResultReader(
            self.client, self.keys, group=self.group, sources=self.sources, on_result=self._record
        )

    async def start(self) -> FaultSink:
        await self.reader.start()
        return self

    async def poll(self, block_ms: int = 100, count: int = 2_000) -> int:
        """Read and ack one batch of results; returns how many entries it read (0 while Redis is
        down: the reader takes back what it held once Redis answers again)."""
        try:
            return await self.reader.poll(block_ms=block_ms, count=count)
        except (*REDIS_TRANSIENT, ConnectionError, OSError):
            await asyncio.sleep(0.2)
            return 0

    def _record(self, meta: Mapping[str, Any], first: bool) -> None:
        source = str(meta.get("source"))
        if meta.get("kind") == EOS:
            self.eos[source] = dict(meta)
            return
        seq = int(meta["seq"])
        self.counts[(source, seq)] += 1
        seen_ms = time.time() * 1000.0
        self.arrivals.append(
            Arrival(
                source,
                seq,
                _num(meta.get("latency_ms")),
                _num(meta.get("ingest_ms")),
                _num(meta.get("result_ms")) or seen_ms,
                seen_ms,
                _num(meta.get("capture_ms")),
            )
        )

    def track(self, source: str, model: str) -> Track:
        """What the reader's ledger (the one every runner uses) made of `source`'s results."""
        return self.reader.ledger.track(source, model)

    @property
    def results(self) -> list[tuple[str, int]]:
        """Every result received, duplicates included (what `check` wants)."""
        return [key for key, n in self.counts.items() for _ in range(n)]

    @property
    def distinct(self) -> int:
        return len(self.counts)

    async def follow(
        self, done: Callable[[], bool], *, timeout_s: float, on_poll: Callable[[], Any] | None = None
    ) -> bool:
        """Poll until `done()` or `timeout_s`; True when done. `on_poll` runs after every poll."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await self.poll()
            if on_poll is not None:
                out = on_poll()
                if asyncio.iscoroutine(out):
                    await out
            if done():
                return True
        return False


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


async def pending_by_group(client: aioredis.Redis, keys: PipelineKeys, models: list[str]) -> dict[str, int]:
    """Entries delivered but not acked, per ``stream/group`` of the pipeline (only groups with some)."""
    streams = [keys.frames, keys.results]
    streams += [s for m in models for s in (keys.tensors(m), keys.scores(m))]
    out: dict[str, int] = {}
    for stream in streams:
        try:
            groups = await client.xinfo_groups(stream)
        except ResponseError:
            continue
        for g in groups:
            if int(g["pending"]):
                out[f"{stream}/{text(g['name'])}"] = int(g["pending"])
    return out


async def pending_total(client: aioredis.Redis, keys: PipelineKeys, models: list[str]) -> int:
    """Entries delivered but not acked, summed over every group of the pipeline's streams."""
    return sum((await pending_by_group(client, keys, models)).values())


async def dead_letters(client: aioredis.Redis, keys: PipelineKeys, sources: set[str]) -> list[dict[str, Any]]:
    """Dead letters of `sources` over every partition: stage, reason and the (source, seq) of the
    frame each one held (read as `framestream dead list` reads them)."""
    return [
        {"source": r.source, "seq": r.seq, "stage": r.stage, "reason": r.reason}
        async for r in DeadLetters(client, keys).each()
        if r.source in sources and r.seq is not None
    ]
