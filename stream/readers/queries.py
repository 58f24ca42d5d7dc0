"""Reading the results, events and segments streams for HTTP clients: a page after a seq, the
newest entries, a source's segments (closed ones from the segments stream, the open one from the
postprocess state), and the reads the live feeds' one reader makes (`deployments.api.feeds`).

The postprocess reorder buffer writes a source's results in seq order, except "late" ones (a frame
that arrived after the buffer gave up waiting for it, flagged ``late``), which land after results
of higher seqs. So "results with seq > N" is found by walking the stream backwards from its newest
entry until an in-order (not late) result with seq <= N (or the start of the retained stream):
everything with a higher seq is newer than that entry.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from stream.adapters.redis.entries import text
from stream.adapters.redis.streams import last_id
from stream.core.keys import PipelineKeys
from stream.core.messages import EOS, LABEL_CHANGE, RESULT, SEGMENT
from stream.core.sources.status import SOURCE_STATUS
from stream.core.track_state import decode_open_segment
from stream.readers.results import decode_fields

__all__ = ["READ_COUNT", "ResultQueries", "event_kind", "sse_event"]

_PAGE = 500
_MAX_SCAN = 200_000
_BLOCK_MS = 1_000
READ_COUNT = 200


def event_kind(meta: dict[str, Any]) -> str:
    """What an entry of the results or events streams is: its ``kind`` (result, eos,
    label_change, ...), or its ``type`` for events that name it so (source_status)."""
    return str(meta.get("kind") or meta.get("type") or "")


def sse_event(event: str, event_id: str, data: dict[str, Any]) -> str:
    """One Server-Sent Event (``event``, ``id``, one-line JSON ``data``)."""
    return f"event: {event}\nid: {event_id}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class ResultQueries:
    """Queries over ``keys.results`` and ``keys.events`` for one Redis client."""

    def __init__(self, client: Any, keys: PipelineKeys) -> None:
        self.client = client
        self.keys = keys

    async def after(self, source: str, after_seq: int, limit: int) -> tuple[bool, list[dict[str, Any]]]:
        """(whether the stream holds any result of `source`, its results with seq > `after_seq`).

        At most `limit` results, the oldest first.
        """
        results = self.keys.for_source(source).results  # a source's results are in its partition
        found = False
        collected: dict[int, dict[str, Any]] = {}
        upper = "+"
        scanned = 0
        while scanned < _MAX_SCAN:
            page = await self.client.xrevrange(results, max=upper, min="-", count=_PAGE)
            if not page:
                break
            scanned += len(page)
            done = False
            for _id, fields in page:
                meta = decode_fields(fields)
                if meta is None or meta.get("source") != source or meta.get("kind") != RESULT:
                    continue
                found = True
                seq = int(meta.get("seq", -1))
                if seq > after_seq:
                    collected[seq] = meta  # the oldest copy wins if a duplicate slipped through
                elif not meta.get("late"):
                    done = True
                    break
            if done or len(page) < _PAGE:
                break
            upper = f"({text(page[-1][0])}"
        return found, [collected[seq] for seq in sorted(collected)][:limit]

    async def segments(
        self, source: str, model: str, after_seq: int, limit: int
    ) -> tuple[bool, list[dict[str, Any]], dict[str, Any] | None]:
        """(whether anything of `source` was found, its closed segments of `model` with first seq >
        `after_seq`, the oldest first and at most `limit`, its open segment or None: only on the
        page with the newest closed segments).

        One (source, model)'s segments are written in seq order, so the segments stream is walked
        back from its newest entry until one of them starts at or before `after_seq`. The open
        segment is the one the partition's postprocess owner saved with its last commit.
        """
        keys = self.keys.for_source(source)
        found = False
        collected: dict[int, dict[str, Any]] = {}
        upper = "+"
        scanned = 0
        while scanned < _MAX_SCAN:
            page = await self.client.xrevrange(keys.segments, max=upper, min="-", count=_PAGE)
            scanned += len(page)
            done = False
            for _id, fields in page:
                meta = decode_fields(fields)
                if meta is None or meta.get("kind") != SEGMENT or meta.get("source") != source:
                    continue
                found = True
                if meta.get("model") != model:
                    continue
                first_seq = int(meta.get("first_seq", -1))
                if first_seq <= after_seq:
                    done = True
                    break
                collected.setdefault(first_seq, meta)
            if done or len(page) < _PAGE:
                break
            upper = f"({text(page[-1][0])}"
        segment = (await self.open_segments([source], model)).get(source)
        if segment is not None:
            found = True
        open_segment = segment if segment is not None and segment["first_seq"] > after_seq else None
        if len(collected) > limit:  # the open segment comes with the page that ends the closed ones
            open_segment = None
        return found, [collected[k] for k in sorted(collected)][:limit], open_segment

    async def open_segments(self, sources: list[str], model: str) -> dict[str, dict[str, Any]]:
        """The open segment of each of `sources` that has one (for `model`), as its partition's
        postprocess owner saved it with its last commit: one HMGET per partition."""
        group = PipelineKeys.group("postprocess", model)
        by_partition: dict[int, list[str]] = {}
        for source in sources:
            by_partition.setdefault(self.keys.for_source(source).index, []).append(source)
        found: dict[str, dict[str, Any]] = {}
        for index, names in by_partition.items():
            states = await self.client.hmget(self.keys.partition(index).group_state(group), names)
            for source, raw in zip(names, states, strict=True):
                if raw is None:
                    continue
                try:
                    segment = decode_open_segment(raw)
                except ValueError:
                    continue  # postprocess logs an unusable state when it loads it
                if segment is not None:
                    found[source] = segment.to_meta()
        return found

    async def recent_events(self, count: int) -> list[dict[str, Any]]:
        """The newest `count` entries of every partition's events stream, the oldest first."""
        found: list[dict[str, Any]] = []
        for k in self.keys.all_partitions:
            for _id, fields in await self.client.xrevrange(k.events, count=count):
                meta = decode_fields(fields)
                if meta is not None:
                    found.append(meta)
        found.sort(key=lambda m: float(m.get("result_ms") or m.get("ts_ms") or 0.0))
        return found[-count:]

    async def recent_results(self, count: int) -> list[dict[str, Any]]:
        """The newest `count` entries of every partition's results stream (decoded), oldest first."""
        found: list[dict[str, Any]] = []
        for k in self.keys.all_partitions:
            page = await self.client.xrevrange(k.results, count=count)
            found.extend(m for _id, fields in reversed(page) if (m := decode_fields(fields)) is not None)
        return found

    async def resolve_ends(self, parts: list[PipelineKeys]) -> dict[str, str]:
        """The current last id of the results and events streams of `parts` (reading after them
        gives what is written from now on)."""
        return await self._resolve({s: "$" for k in parts for s in (k.results, k.events)})

    async def read_after(self, parts: list[PipelineKeys], ids: dict[str, str], block_ms: int) -> list[Any]:
        """New entries of every followed stream: one XREAD per partition (its results and events
        share a slot); with several, first without waiting, then waiting on all at once."""

        async def one(k: PipelineKeys, block: int | None) -> list[Any]:
            wanted = {k.results: ids[k.results], k.events: ids[k.events]}
            reply = await self.client.xread(wanted, count=READ_COUNT, block=block)
            return list(reply or [])

        if len(parts) > 1:
            ready = [r for rs in await asyncio.gather(*(one(k, None) for k in parts)) for r in rs]
            if ready:
                return ready
        return [r for rs in await asyncio.gather(*(one(k, block_ms) for k in parts)) for r in rs]

    async def _resolve(self, ids: dict[str, str]) -> dict[str, str]:
        """Replace ``$`` by the stream's current last id, so ids in events are concrete."""
        out = {}
        for stream, entry_id in ids.items():
            if entry_id == "$":
                entry_id = await last_id(self.client, stream)
            out[stream] = entry_id
        return out


KINDS = (RESULT, LABEL_CHANGE, SOURCE_STATUS, EOS)
