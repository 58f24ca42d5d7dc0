"""The web console the ingress serves at ``/``: its files and its live feed.

- The page is three static files shipped as package data (``deployments/console/web/``: index.html,
  console.js, console.css; no build step, nothing from a CDN). `index_html` fills in the
  ``<base href>`` from the route prefix, so the page's relative URLs (``v1/...``) reach its own
  application wherever it is mounted.
- ``GET /v1/console/events`` (`ConsoleFeed.stream`) is one Server-Sent Events stream per page:
  first a ``timeline`` event (the newest label changes and source status changes), then every
  new ``label_change`` / ``source_status`` as it happens, and a ``snapshot`` about once a second:
  every source (its registry entry and status, with its latest smoothed label and score and its
  open segment, `stream.core.segments`, from the postprocess state), every stage (replicas,
  frames/s, lag, dead letters), every sink (delivered, retries, backlog, dead letters, last
  error: `stream.readers.sink_status`) and the p99 end-to-end latency of the results since the
  last one.
  The page's entries come from the replica's one reader of the streams (`deployments.api.feeds`;
  the latest label and the latency per source are folded in here, results are not forwarded) and
  the snapshot is computed once per tick. The page asks for closed segments
  (``GET /v1/sources/{id}/segments``) only when a source's open segment changes.
"""

from __future__ import annotations

import html
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from redis.exceptions import RedisError

from stream.core.keys import PipelineKeys
from stream.core.latency import LatencyHistogram
from stream.core.messages import LABEL_CHANGE, RESULT
from stream.core.rates import RateMeter
from stream.readers.queries import ResultQueries, event_kind, sse_event
from stream.readers.sink_status import sink_status
from stream.readers.watch import probe_stages, read_counters
from stream.settings import SinkSettings

__all__ = [
    "SOURCE_STATUS",
    "TIMELINE_KINDS",
    "ConsoleFeed",
    "LatestResults",
    "index_html",
    "read_stage_counts",
    "source_row",
    "stage_counts",
    "stage_rows",
    "static_file",
]

SOURCE_STATUS = "source_status"
TIMELINE_KINDS = (LABEL_CHANGE, SOURCE_STATUS)
TIMELINE_LENGTH = 50
"""Events the page gets on connecting (the newest), before the live ones."""
SOURCE_FIELDS = ("status", "reason", "frames", "dropped", "reconnects", "last_frame_age_s", "fps")
"""A source's status fields in ``GET /v1/sources`` items; None in the snapshot when absent."""
_SPEC_FIELDS = ("uri", "loop", "live", "realtime", "target_fps", "every_nth")
_PROGRESS_FIELDS = ("next_seq", "done", "error", "owner")
RECONNECT_MS = 2_000
"""How long a browser waits before it opens the feed again after it ended."""
_STATIC = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}


def _web(name: str) -> bytes:
    return (resources.files("deployments.console") / "web" / name).read_bytes()


def index_html(root_path: str) -> str:
    """The page, with ``<base href>`` at the application's route prefix (`root_path`)."""
    base = root_path.rstrip("/") + "/"
    return _web("index.html").decode().replace("{{base}}", html.escape(base, quote=True))


def static_file(name: str) -> tuple[bytes, str] | None:
    """(bytes, media type) of one of the console's files, None for any other name."""
    media_type = _STATIC.get(name)
    return None if media_type is None else (_web(name), media_type)


class LatestResults:
    """Each source's newest in-order result of one model (seq order: a late result or a duplicate
    never replaces a newer one)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._by_source: dict[str, dict[str, Any]] = {}

    def note(self, meta: Mapping[str, Any]) -> None:
        if meta.get("kind") != RESULT or meta.get("model") != self.model or meta.get("late"):
            return
        source, seq = str(meta.get("source")), int(meta.get("seq", -1))
        seen = self._by_source.get(source)
        if seen is not None and seen["result_seq"] >= seq:
            return
        self._by_source[source] = {
            "label": meta.get("smoothed_label"),
            "score": meta.get("smoothed_score"),
            "result_seq": seq,
            "latency_ms": meta.get("latency_ms"),
            "result_ms": meta.get("result_ms"),
        }

    def get(self, source: str) -> dict[str, Any] | None:
        return self._by_source.get(source)

    def keep_only(self, sources: set[str]) -> None:
        """Forget sources no longer registered (bounds the memory to the registry)."""
        for gone in set(self._by_source) - sources:
            del self._by_source[gone]


def source_row(item: Mapping[str, Any], latest: Mapping[str, Any] | None) -> dict[str, Any]:
    """One source of the snapshot from its ``GET /v1/sources`` item and its latest result: the
    status fields as the item has them (None when absent), label and score None before any result."""
    row: dict[str, Any] = {"id": item.get("id")}
    for name in (*_SPEC_FIELDS, *_PROGRESS_FIELDS, *SOURCE_FIELDS):
        row[name] = item.get(name)
    for name in ("label", "score", "result_seq", "latency_ms", "result_ms"):
        row[name] = (latest or {}).get(name)
    return row


def stage_counts(stages: list[str], probes: Mapping[str, Any], counters: Mapping[str, int]) -> dict[str, Any]:
    """Per stage, summed over partitions: entries handled (ingest: frames published), lag (entries
    waiting for it and pending with it; None for ingest, which reads no stream), dead letters."""
    out: dict[str, Any] = {}
    for stage in stages:
        probe = probes.get(stage)
        if stage == "ingest":
            handled, lag = counters.get("published:*", 0), None
        else:
            handled, lag = (probe.handled, probe.backlog) if probe is not None else (0, 0)
        out[stage] = {"handled": handled, "lag": lag, "dead_letters": counters.get(f"dead:{stage}", 0)}
    return out


async def read_stage_counts(client: Any, keys: PipelineKeys, model: str, stages: list[str]) -> dict[str, Any]:
    """`stage_counts` read from Redis (consumer groups and counters of every partition)."""
    return stage_counts(stages, await probe_stages(client, keys, model), await read_counters(client, keys))


def stage_rows(
    counts: Mapping[str, Mapping[str, Any]],
    replicas: Mapping[str, Mapping[str, int]],
    rates: Mapping[str, float],
) -> list[dict[str, Any]]:
    """The snapshot's stages, in pipeline order: running replicas (and counts by state, from
    Serve), frames/s (None until two samples), lag and dead letters."""
    rows = []
    for stage, c in counts.items():
        states = dict(replicas.get(stage, {}))
        fps = rates.get(stage)
        rows.append({
            "stage": stage,
            "replicas": states.get("RUNNING", 0),
            "replica_states": states,
            "fps": None if fps is None else round(fps, 1),
            "lag": c.get("lag"),
            "dead_letters": c.get("dead_letters", 0),
            "handled": c.get("handled", 0),
        })  # fmt: skip
    return rows


class ConsoleFeed:
    """One page's live feed. `sources` returns the ``GET /v1/sources`` items, `replicas` the replica
    counts by state per stage (from Serve), `sinks` every sink (the settings file's and those
    added through the API); all are the ingress's own."""

    def __init__(
        self,
        queries: ResultQueries,
        model: str,
        stages: list[str],
        sources: Callable[[], Awaitable[list[dict[str, Any]]]],
        replicas: Callable[[], Awaitable[dict[str, dict[str, int]]]],
        *,
        sinks: Callable[[], Awaitable[list[SinkSettings]]] | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self.queries = queries
        self.sinks = sinks
        self.model = model
        self.stages = stages
        self.sources = sources
        self.replicas = replicas
        self.interval_s = interval_s
        self.latest = LatestResults(model)
        self.rates = RateMeter(min_interval_s=interval_s * 0.9)
        self.latency = LatencyHistogram()
        """End-to-end latency of the results seen since the last snapshot."""

    async def snapshot(self) -> dict[str, Any]:
        items = await self.sources()
        ids = [str(i.get("id")) for i in items]
        self.latest.keep_only(set(ids))
        counts = await read_stage_counts(self.queries.client, self.queries.keys, self.model, self.stages)
        rates = self.rates.update({s: c["handled"] for s, c in counts.items()}, time.monotonic())
        open_segments = await self.queries.open_segments(ids, self.model)
        sinks = [] if self.sinks is None else await self.sinks()
        p99 = self.latency.percentile(99)
        self.latency = LatencyHistogram()
        return {
            "t_ms": round(time.time() * 1000.0),
            "model": self.model,
            "sources": [
                {**source_row(i, self.latest.get(sid)), "segment": open_segments.get(sid)}
                for i, sid in zip(items, ids, strict=True)
            ],
            "stages": stage_rows(counts, await self.replicas(), rates),
            "sinks": await sink_status(self.queries.client, self.queries.keys, sinks),
            "latency_p99_ms": None if p99 is None else round(p99, 1),
        }

    async def stream(
        self, entries: AsyncIterator[tuple[str, dict[str, Any] | None]], subscription: Any = None
    ) -> AsyncIterator[str]:
        """The SSE text of the feed from `entries` (a `deployments.api.feeds.Subscription`'s: (event
        id, meta), or (id, None) while idle) until they end (see the module docstring). When
        Redis fails, or the ingress drops the page's `subscription` for falling behind, an
        ``error`` event with the reason ends it (the browser then reconnects)."""
        yield f"retry: {RECONNECT_MS}\n\n"
        try:
            async for text in self._events(entries):
                yield text
        except (RedisError, OSError) as e:
            yield sse_event("error", "", {"error": f"redis unavailable: {e}"})
            return
        dropped = getattr(subscription, "dropped", None)
        if dropped is not None:
            yield sse_event("error", "", {"error": dropped})

    async def _events(self, entries: AsyncIterator[tuple[str, dict[str, Any] | None]]) -> AsyncIterator[str]:
        for recent in await self.queries.recent_results(500):
            self.latest.note(recent)
        history = [
            m for m in await self.queries.recent_events(TIMELINE_LENGTH) if event_kind(m) in TIMELINE_KINDS
        ]
        yield sse_event("timeline", "", {"events": history})
        yield sse_event("snapshot", "", await self.snapshot())
        next_tick = time.monotonic() + self.interval_s
        async for event_id, meta in entries:
            if meta is not None:
                kind = event_kind(meta)
                if kind == RESULT:
                    self.latest.note(meta)
                    latency_ms = meta.get("latency_ms")
                    if isinstance(latency_ms, int | float) and latency_ms >= 0:
                        self.latency.record(float(latency_ms))
                elif kind in TIMELINE_KINDS:
                    yield sse_event(kind, event_id, meta)
            now = time.monotonic()
            if now >= next_tick:  # the snapshots keep the connection alive too
                yield sse_event("snapshot", event_id, await self.snapshot())
                next_tick = max(next_tick + self.interval_s, now)  # a fixed rate, however long one takes
