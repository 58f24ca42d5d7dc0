"""Collect a replay's results (through `stream.readers.results.ResultReader`, by cursor: no group, so the
load tester never takes entries away from a real consumer), and count its dead letters and drops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from loadtest.stats import ResultRow
from stream.adapters.redis.entries import text
from stream.core.codec import decode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.messages import EOS
from stream.errors import CodecError
from stream.readers.results import ResultReader

__all__ = ["Collector", "count_dead_letters", "count_drops"]


class Collector:
    """Reads results for `sources` into `rows` until told to stop or everything has arrived.

    A `ResultReader` by cursor from `start_id` (the load tester never takes results away from a
    real consumer); every result read becomes a `ResultRow`, duplicates included (the delivery
    accounting counts them). `truth(source, seq)` gives the
    ground truth the load tester knows (from the replay file); the result's own ``truth`` field
    is the fallback.
    """

    def __init__(
        self,
        client: Any,
        keys: PipelineKeys,
        sources: Collection[str],
        start_id: str = "0-0",
        *,
        model: str | None = None,
        truth: Callable[[str, int], str | None] | None = None,
        block_ms: int = 100,
    ) -> None:
        self.block_ms = block_ms
        self.truth = truth
        self.rows: list[ResultRow] = []
        self.distinct = 0
        self.eos: set[str] = set()
        self.last_result_monotonic = time.monotonic()
        self.reader = ResultReader(
            client, keys, start_id=start_id, sources=sources, model=model, on_result=self._take
        )

    @property
    def undecodable(self) -> int:
        return self.reader.undecodable

    def _take(self, m: Mapping[str, Any], first: bool) -> None:
        if m.get("kind") == EOS:
            self.eos.add(str(m["source"]))
        else:
            self.rows.append(self._row(m))
            self.distinct += first

    def _row(self, m: Mapping[str, Any]) -> ResultRow:
        source, seq = str(m["source"]), int(m["seq"])
        capture = float(m.get("capture_ms") or 0.0)
        result_ms = float(m.get("result_ms") or time.time() * 1000.0)
        latency = m.get("latency_ms")
        truth = self.truth(source, seq) if self.truth is not None else None
        return ResultRow(
            source=source,
            seq=seq,
            due_ms=capture,
            result_ms=result_ms,
            latency_ms=float(latency) if latency is not None else result_ms - capture,
            stages_ms={str(k): float(v) for k, v in (m.get("stages_ms") or {}).items()},
            batch_size=int(m["batch_size"]) if m.get("batch_size") is not None else None,
            label=m.get("label"),
            truth=truth if truth is not None else m.get("truth"),
        )

    async def poll(self, count: int = 1000) -> int:
        """Read what is there (waiting at most `block_ms`); returns how many new results arrived."""
        before = self.distinct
        await self.reader.poll(block_ms=self.block_ms, count=count)
        taken = self.distinct - before
        if taken:
            self.last_result_monotonic = time.monotonic()
        return taken

    async def run_until(
        self, done: Callable[[], bool], *, expected: Callable[[], int | None], settle_s: float, hard_s: float
    ) -> None:
        """Poll until every expected result is in (once `done()` says sending has finished), or no
        result arrived for `settle_s` after sending finished, or `hard_s` after sending finished."""
        finished_at: float | None = None
        while True:
            await self.poll()
            now = time.monotonic()
            if not done():
                continue
            if finished_at is None:
                finished_at = now
                self.last_result_monotonic = max(self.last_result_monotonic, now)
            want = expected()
            if want is not None and self.distinct >= want:
                return
            if now - self.last_result_monotonic > settle_s or now - finished_at > hard_s:
                return
            await asyncio.sleep(0)


async def count_dead_letters(
    client: Any, keys: PipelineKeys, sources: Collection[str], *, start_ids: Mapping[str, str] | None = None
) -> tuple[int, int]:
    """(dead letters whose original message names one of `sources`, dead letters that cannot be
    attributed because their payload was not kept or does not decode), in every partition's
    dead-letter stream after its id in `start_ids` (from the start when missing)."""
    ours = unknown = 0
    for k in keys.all_partitions:
        mine, other = await _count_dead(client, k.dead, set(sources), (start_ids or {}).get(k.dead, "0-0"))
        ours, unknown = ours + mine, unknown + other
    return ours, unknown


async def _count_dead(client: Any, stream: str, wanted: set[str], start_id: str) -> tuple[int, int]:
    ours = unknown = 0
    cursor = f"({start_id}" if start_id != "0-0" else "-"
    while True:
        entries = await client.xrange(stream, min=cursor, max="+", count=1000)
        if not entries:
            return ours, unknown
        for entry_id, fields in entries:
            cursor = f"({text(entry_id)}"
            data = fields.get(FIELD.encode())
            if data is None:
                unknown += 1
                continue
            try:
                source = decode_message(data).meta.get("source")
            except CodecError:
                unknown += 1
                continue
            ours += source in wanted


async def count_drops(client: Any, keys: PipelineKeys, sources: Collection[str]) -> int:
    """Frames the pipeline dropped by policy for `sources`, from the counters hash.

    Counter fields that name a drop carry the source id after a colon (``dropped:<source>``,
    ``dropped:<reason>:<source>``); fields of other sources are ignored.
    """
    counters = await client.hgetall(keys.counters)
    wanted = set(sources)
    total = 0
    for name, value in counters.items():
        name = text(name)
        if "drop" not in name:
            continue
        if name.rsplit(":", 1)[-1] in wanted:
            try:
                total += int(float(text(value)))
            except ValueError:
                continue
    return total
