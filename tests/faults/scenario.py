"""One fault scenario against a running pipeline: play a folder of frames through the ingest
stage as a source, follow the results at a sink, settle, check, and record the outcome as JSON
(``$FRAMESTREAM_FAULTS_OUT``, default ``out/faults/``) for ``make faults``."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from stream.adapters.redis.client import connect
from stream.adapters.redis.source_registry import SourceSpec, add_source
from stream.core.keys import PipelineKeys
from tests.faults.checker import Outcome, check
from tests.faults.frames import write_frame_folder
from tests.faults.sink import FaultSink, dead_letters, pending_by_group, pending_total
from tests.waiting import poll

__all__ = [
    "OUT_ENV",
    "Harness",
    "Replay",
    "out_dir",
    "recoveries_s",
    "recovery_s",
    "settled_harness",
    "timeline",
    "write_outcome",
]

OUT_ENV = "FRAMESTREAM_FAULTS_OUT"
ROOT = Path(__file__).resolve().parents[2]


def out_dir() -> Path:
    return Path(os.environ.get(OUT_ENV) or ROOT / "out" / "faults")


def write_outcome(outcome: Outcome, **extra: Any) -> Path:
    """`outcome` (plus `extra` fields) as ``<out>/<scenario>.json``."""
    folder = out_dir()
    folder.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in outcome.scenario.lower()).strip("-")
    path = folder / f"{slug}.json"
    path.write_text(json.dumps({**outcome.row(), **extra}, indent=2, default=str))
    return path


@dataclass
class Replay:
    """One source played through the pipeline and what came out of it."""

    source: str
    frames: int
    sink: FaultSink
    corrupt: Collection[int] = ()
    started_s: float = field(default_factory=time.monotonic)
    started_ms: float = field(default_factory=lambda: time.time() * 1000.0)
    faults_ms: list[float] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return round(time.monotonic() - self.started_s, 1)

    @property
    def sent(self) -> list[tuple[str, int]]:
        return [(self.source, i) for i in range(self.frames)]

    def fault(self) -> float:
        """Mark 'a fault happens now' (epoch ms), for the recovery time."""
        now = time.time() * 1000.0
        self.faults_ms.append(now)
        return now

    @property
    def done(self) -> bool:
        """End-of-stream seen and every decodable frame has a result."""
        return self.source in self.sink.eos and self.sink.distinct >= self.frames - len(self.corrupt)


def recoveries_s(faults_ms: list[float], sink: FaultSink) -> list[float]:
    """Per fault: seconds until the pipeline was whole again, i.e. the later of (a) every frame
    ingested before the fault has its result and (b) a frame ingested after the fault has its
    result (new frames flow). Frames that never got a result do not count: they show up as lost."""
    first: dict[tuple[str, int], tuple[float | None, float]] = {}
    for a in sink.arrivals:
        first.setdefault((a.source, a.seq), (a.ingest_ms, a.seen_ms))
    out = []
    for fault in faults_ms:
        before = [seen for ingest, seen in first.values() if ingest is not None and ingest < fault]
        after = [seen for ingest, seen in first.values() if ingest is not None and ingest >= fault]
        worst = max(max(before, default=fault), min(after, default=fault))
        out.append(round(max(0.0, (worst - fault) / 1000.0), 2))
    return out


def timeline(replay: Replay) -> dict[str, list[float]]:
    """Results per second at the sink since the replay started, and the faults' times (s), to read
    a recovery off afterwards."""
    if not replay.sink.arrivals:
        return {"results_per_s": [], "faults_s": []}
    origin = replay.started_ms
    counts: dict[int, int] = {}
    for a in replay.sink.arrivals:
        second = int((a.seen_ms - origin) // 1000)
        counts[second] = counts.get(second, 0) + 1
    last = max(counts)
    return {
        "results_per_s": [float(counts.get(i, 0)) for i in range(last + 1)],
        "faults_s": [round((f - origin) / 1000.0, 2) for f in replay.faults_ms],
    }


def recovery_s(faults_ms: list[float], sink: FaultSink) -> float:
    """The longest of `recoveries_s` (0.0 without faults)."""
    return max(recoveries_s(faults_ms, sink), default=0.0)


class Harness:
    """What a scenario needs: a client, the pipeline's keys, a folder for its frames."""

    def __init__(self, client: aioredis.Redis, keys: PipelineKeys, model: str, tmp: Path, claim_idle_ms: int):
        self.client = client
        self.keys = keys
        self.model = model
        self.tmp = tmp
        self.claim_idle_ms = claim_idle_ms

    async def replay(
        self,
        name: str,
        frames: int,
        *,
        corrupt: Collection[int] = (),
        live: bool | None = None,
        uri: str = "",
    ) -> Replay:
        """Start playing `frames` frames (a JPEG folder, or `uri`) as a new source named after `name`."""
        source = f"{name}-{secrets.token_hex(3)}"
        if not uri:
            uri = str(write_frame_folder(self.tmp / source, frames, corrupt=corrupt))
        sink = await FaultSink(self.client, self.keys, f"faults-{source}", {source}).start()
        replay = Replay(source, frames, sink, corrupt)
        await add_source(self.client, self.keys, source, SourceSpec(uri=uri, live=live))
        return replay

    async def follow(
        self, replay: Replay, *, timeout_s: float, until: Any = None, stall_s: float | None = 60.0
    ) -> bool:
        """Poll the sinks until the replay is done (or `until()`); False after `timeout_s`, or
        once no new result came for `stall_s` (a wedged pipeline fails fast)."""
        done = until or (lambda: replay.done)
        deadline = time.monotonic() + timeout_s
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            await replay.sink.poll(block_ms=100)
            if done():
                return True
            now = time.monotonic()
            if len(replay.sink.arrivals) != last_count:
                last_count, last_change = len(replay.sink.arrivals), now
            elif stall_s is not None and now - last_change > stall_s:
                return False
        return False

    async def pending(self) -> int:
        return await pending_total(self.client, self.keys, [self.model])

    async def settle(self, replay: Replay | None = None, extra_s: float = 5.0) -> int:
        """Wait at most claim_idle_ms + `extra_s` for every group's pending count to reach 0
        (still collecting results meanwhile); returns what is left pending."""
        left = [0]

        async def drained() -> bool:
            if replay is not None:
                await replay.sink.poll(block_ms=10)
            left[0] = await self.pending()
            return left[0] == 0

        await poll(drained, timeout_s=self.claim_idle_ms / 1000.0 + extra_s, every_s=0.1)
        return left[0]

    async def outcome(self, scenario: str, replay: Replay, *, pending: int, note: str = "") -> Outcome:
        dead = await dead_letters(self.client, self.keys, {replay.source})
        return check(
            scenario,
            replay.sent,
            replay.sink.results,
            dead_lettered=[(d["source"], d["seq"]) for d in dead],
            pending=pending,
            recovery_s=recovery_s(replay.faults_ms, replay.sink) if replay.faults_ms else None,
            note=note,
        )

    async def record(self, outcome: Outcome, replay: Replay, **extra: Any) -> Path:
        """Write the outcome JSON with the replay's wall time, what is still pending where (and `extra`)."""
        extra.setdefault("pending_groups", await pending_by_group(self.client, self.keys, [self.model]))
        per_fault = recoveries_s(replay.faults_ms, replay.sink)
        return write_outcome(
            outcome,
            wall_s=replay.wall_s,
            model=self.model,
            recoveries_s=per_fault,
            **timeline(replay),
            **extra,
        )

    async def close(self, replay: Replay) -> None:
        """Drop the replay's sink groups (a group left behind would keep the results from trimming)."""
        with contextlib.suppress(aioredis.ResponseError):
            await self.client.xgroup_destroy(self.keys.results, replay.sink.group)


@contextlib.asynccontextmanager
async def settled_harness(
    redis_url: str, keys: PipelineKeys, model: str, tmp: Path, claim_idle_ms: int
) -> AsyncIterator[Harness]:
    """A `Harness` on a client of its own, once nothing is pending from an earlier scenario."""
    client = await connect(redis_url)
    try:
        harness = Harness(client, keys, model, tmp, claim_idle_ms)
        left = await harness.settle(extra_s=15)
        assert left == 0, f"{left} entries still pending from an earlier scenario"
        yield harness
    finally:
        await client.aclose()
