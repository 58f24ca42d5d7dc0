"""The fault suite's view of a pipeline, read from Redis only: results at the sink (every copy
kept, so duplicates show), dead letters, and what is still pending in any consumer group."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream.core.codec import decode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.messages import EOS, RESULT
from stream.errors import CodecError

__all__ = ["Arrival", "FaultSink", "dead_letters", "pending_by_group", "pending_total", "wait_until"]


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
    this scenario's results count) and keeps every copy of every result, for `check`."""

    client: aioredis.Redis
    keys: PipelineKeys
    group: str
    sources: set[str] | None = None
    arrivals: list[Arrival] = field(default_factory=list)
    counts: Counter[tuple[str, int]] = field(default_factory=Counter)
    eos: dict[str, dict[str, Any]] = field(default_factory=dict)
    _seen_ids: set[bytes] = field(default_factory=set)
    _reread_own: bool = False

    async def start(self) -> FaultSink:
        try:
            await self.client.xgroup_create(self.keys.results, self.group, id="$", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        return self

    async def poll(self, block_ms: int = 100, count: int = 2_000) -> int:
        """Read and ack one batch of results; returns how many entries it read (0 while Redis is down).

        After a Redis error it first re-reads its own pending entries (a read whose reply was lost
        left them delivered to this sink); an entry it already recorded is not counted twice.
        """
        try:
            reply = None
            if self._reread_own:
                reply = await self.client.xreadgroup(
                    self.group, "sink", {self.keys.results: "0"}, count=count
                )
                self._reread_own = any(items for _, items in reply or [])
            if not self._reread_own:
                reply = await self.client.xreadgroup(
                    self.group, "sink", {self.keys.results: ">"}, count=count, block=block_ms
                )
        except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError):
            self._reread_own = True
            await asyncio.sleep(0.2)
            return 0
        except ResponseError as e:  # NOGROUP: Redis came back empty (persistence off)
            if "NOGROUP" not in str(e):
                raise
            await asyncio.sleep(0.2)
            await self.start()
            return 0
        ids = []
        seen_ms = time.time() * 1000.0
        for _, items in reply or []:
            for entry_id, fields in items:
                ids.append(entry_id)
                if entry_id not in self._seen_ids:
                    self._seen_ids.add(entry_id)
                    self._record(fields.get(FIELD.encode()) if fields else None, seen_ms)
        if ids:
            try:
                await self.client.xack(self.keys.results, self.group, *ids)
            except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError):
                self._reread_own = True
        return len(ids)

    def _record(self, raw: bytes | None, seen_ms: float) -> None:
        if raw is None:
            return
        try:
            meta = decode_message(raw).meta
        except CodecError:
            return
        source = str(meta.get("source"))
        if self.sources is not None and source not in self.sources:
            return
        if meta.get("kind") == EOS:
            self.eos[source] = meta
        elif meta.get("kind") == RESULT:
            seq = int(meta["seq"])
            self.counts[(source, seq)] += 1
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
                out[f"{stream}/{_s(g['name'])}"] = int(g["pending"])
    return out


async def pending_total(client: aioredis.Redis, keys: PipelineKeys, models: list[str]) -> int:
    """Entries delivered but not acked, summed over every group of the pipeline's streams."""
    return sum((await pending_by_group(client, keys, models)).values())


async def dead_letters(client: aioredis.Redis, keys: PipelineKeys, sources: set[str]) -> list[dict[str, Any]]:
    """Dead letters of `sources`: stage, reason and the (source, seq) of the frame each one held."""
    out = []
    for _, fields in await client.xrange(keys.dead, "-", "+"):
        f = {_s(k): v for k, v in fields.items()}
        raw = f.get(FIELD)
        if raw is None:
            continue
        try:
            meta = decode_message(raw).meta
        except CodecError:
            continue
        if meta.get("source") in sources:
            out.append(
                {
                    "source": meta["source"],
                    "seq": int(meta["seq"]),
                    "stage": _s(f.get("stage", b"")),
                    "reason": _s(f.get("reason", b"")),
                }
            )
    return out


async def wait_until(predicate: Callable[[], Any], *, timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll `predicate` (sync or async) until it is truthy or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval_s)
