"""The run loop of `framestream run`, whichever runner placed the stages: register the sources,
follow the results with live progress, stop and drain on Ctrl-C or the timeout, and sum up.

With sinks configured (``sinks:``), the run ends only once every sink's backlog is 0 too: each
has delivered, or dead-lettered, what the sources produced (or, after a stop, when
``streams.drain_timeout_s`` more has passed); the summary shows each sink.

A *track* is one (source, model) pair: every source is classified by every model of the run. The
run ends when every finite source (a file, a folder, a replay; not a camera, not a looping source)
has all its results for every model, or at a stop: then the sources are removed and what is in
flight drains for up to ``streams.drain_timeout_s``. A run with only live or looping sources (or
none) goes on until stopped.

A model asked for while the run plays (``POST /v1/models/{name}``) joins it when the runner can
start one (`DriveOptions.add_model`, `stream.runners.more_models`): the progress view and the
summary follow it, while the run's end waits only for the models it started with.

Redis going away for a while (killed and restarted, stalled, loading its AOF) does not end the
run: like the stage loops, every Redis call here waits for it and retries
(`stream.adapters.redis.outage.ride_out`), for at most `DriveOptions.max_outage_s`. The results
are read by cursor (XREAD), so a read that failed is simply read again, and no other reader of
the results stream can take a result away from the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from stream.adapters.redis.client import connect_settings, refresh_cluster_view
from stream.adapters.redis.outage import RedisOutage, is_redis_outage, ride_out
from stream.adapters.redis.source_registry import SourceSpec, add_source, remove_source
from stream.core.keys import PipelineKeys
from stream.core.ledger import ResultLedger
from stream.core.rates import RateMeter
from stream.core.sources.ids import source_ids
from stream.core.sources.uri import parse_source
from stream.errors import FramestreamError
from stream.readers.results import JsonlSink, ResultReader, dead_letter_count
from stream.readers.watch import probe_stages, read_counters
from stream.runners.display import Progress, Snapshot, StageRow, Summary
from stream.runners.more_models import AddModel, ModelWatcher
from stream.runners.sink_drain import sink_rows, wait_for_sinks
from stream.settings import Settings
from stream.stopping import on_stop_signal
from stream.waiting import off_loop

__all__ = ["DriveOptions", "Played", "Stalled", "drive"]

log = logging.getLogger("framestream.run")
_T = TypeVar("_T")


class Stalled(FramestreamError):
    """The pipeline made no progress for too long."""


def _no_replicas(model: str) -> dict[str, int]:
    return {}


@dataclass(frozen=True)
class DriveOptions:
    models: list[str]
    synthetic: list[str]
    replicas: Callable[[str], dict[str, int]] = _no_replicas
    """Running replicas per stage deployment (``Ingest``, ``Preprocess``, ...) of a model."""
    check_stages: Callable[[], None] | None = None
    """Raises `FramestreamError` when a stage is gone for good (a stage process exited)."""
    logs_hint: str = ""
    results: Path | None = None
    segments: Path | None = None
    """Write each closed segment (one JSON object a line) here, as `results` does the results."""
    stall_timeout_s: float = 180.0
    timeout_s: float | None = None
    """Stop the sources and drain after this long (like Ctrl-C); None = until the sources end."""
    loop: bool = False
    """Play the sources over and over: the run ends at `timeout_s` or Ctrl-C."""
    max_outage_s: float = 300.0
    """How long Redis may stay unavailable before the run gives up."""
    add_model: AddModel | None = None
    """Starts one more model's stages beside the running ones: with it, the run serves the models
    asked for while it plays (``POST /v1/models/{name}``, `stream.runners.more_models`)."""
    runner: str = ""
    """The runner's name, in the heartbeat of a run that takes requests for more models."""


@dataclass(frozen=True)
class Played:
    """What a run did: its summary, and the ledger of every result it read."""

    summary: Summary
    ledger: ResultLedger
    sources: list[str]
    """The ids of the sources the run was given (others may have played too: added over HTTP)."""
    tracks: list[tuple[str, str]]
    """(source, model) of every model each of those sources is classified by (a source with
    models of its own: those alone)."""


async def drive(
    options: DriveOptions,
    settings: Settings,
    redis_url: str,
    sources: Sequence[str | SourceSpec],
    console: Console | None,
    *,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[ResultLedger], None] | None = None,
) -> Played:
    """Play `sources` through the running stages until done, a stop (Ctrl-C, `stop`) or the
    timeout. `console` None: no progress view and no signal handlers (a library caller's run)."""
    keys = PipelineKeys(settings.streams.pipeline, settings.streams.partitions)
    options = dataclasses.replace(options, models=list(options.models))  # grows as models are added
    client = await connect_settings(settings.redis, redis_url)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = contextlib.ExitStack()
    if console is not None:  # a command's run: the first stop signal drains, a second ends it now
        signals.enter_context(on_stop_signal(lambda: loop.call_soon_threadsafe(stop.set)))
    specs = [s if isinstance(s, SourceSpec) else SourceSpec(uri=s, loop=options.loop) for s in sources]
    ids = source_ids(s.uri for s in specs)
    tracks = [
        (sid, model)
        for sid, spec in zip(ids, specs, strict=True)
        for model in options.models
        if spec.models is None or model in spec.models
    ]
    endless = {sid for sid, s in zip(ids, specs, strict=True) if s.loop or _live(s)}
    finite = [(sid, model) for sid, model in tracks if sid not in endless]
    sink = _Results(_reader(client, keys, options))
    added: list[tuple[str, str]] = []  # tracks of the models added while running
    more = _more_models(client, keys, options, added, ids, specs)
    outage = RedisOutage(options.max_outage_s)

    def ride(call: Callable[[], Awaitable[_T]]) -> Awaitable[_T]:
        return ride_out(call, outage, before_retry=lambda: refresh_cluster_view(client))

    grace_s = max(settings.streams.drain_timeout_s, 2 * settings.streams.claim_idle_ms / 1000.0 + 5.0)
    try:
        await ride(sink.reader.start)  # results from now on: earlier runs' are not ours
        first = await ride(lambda: read_counters(client, keys))
        dead_before = await ride(lambda: dead_letter_count(client, keys))
        for sid, spec in zip(ids, specs, strict=True):
            await ride(functools.partial(add_source, client, keys, sid, spec, replace=True))
        started = time.monotonic()
        watcher = _Watcher(client, keys, options)
        await ride(more.start)
        with Progress(console) as progress:
            if options.timeout_s is not None:
                loop.call_later(options.timeout_s, stop.set)
            ctx = _Loop(
                sink,
                finite,
                stop,
                watcher,
                progress,
                options,
                started,
                grace_s,
                outage,
                on_progress,
                refresh=lambda: refresh_cluster_view(client),
            )
            try:
                await ctx.until_done()
            finally:
                await more.close()  # no more models once the run winds down
            interrupted = stop.is_set() and not sink.finished(finite, grace_s)
            if interrupted:
                progress.note("stopping: sources removed, draining what is in flight ...")
                for sid in ids:
                    await ride(functools.partial(remove_source, client, keys, sid))
                # a removed source ends with an end-of-stream: every track's, looping and live
                # ones too, says the pipeline has let go of it (a run with none has nothing to wait for)
                every = tracks
                deadline = time.monotonic() + settings.streams.drain_timeout_s + 5
                while every and not sink.finished(every, grace_s) and time.monotonic() < deadline:
                    await ride(lambda: sink.poll(block_ms=200))
                    await ctx.show()
            while await ride(lambda: sink.poll(block_ms=300)):
                pass
            await ctx.show()
            await wait_for_sinks(client, keys, settings, stop, options.check_stages, ride, progress)
        summary = await ride(
            lambda: _summary(
                client, keys, options, sink, [*tracks, *added], first, dead_before, started, interrupted
            )
        )
        summary.sinks = await ride(lambda: sink_rows(client, keys, settings, first))
        return Played(summary, sink.reader.ledger, ids, [*tracks, *added])
    finally:
        await more.close()
        for jsonl in (sink.reader.sink, sink.reader.segments):
            if jsonl is not None:
                jsonl.close()
        signals.close()
        await client.aclose()


def _more_models(
    client: Any,
    keys: PipelineKeys,
    options: DriveOptions,
    added: list[tuple[str, str]],
    ids: list[str],
    specs: list[SourceSpec],
) -> ModelWatcher:
    """The watcher of models asked for while running (idle when the runner cannot add one). A
    model added joins the progress view and the summary (the given sources that take every model
    get a track of it in `added`); the run's end and its drain still wait on the models it
    started with alone: a model added midway has no results for the frames before it."""

    def follow(model: str) -> None:
        options.models.append(model)
        added.extend((sid, model) for sid, spec in zip(ids, specs, strict=True) if spec.models is None)

    return ModelWatcher(client, keys, options.runner, options.add_model, options.models, follow)


def _live(spec: SourceSpec) -> bool:
    return spec.live if spec.live is not None else parse_source(spec.uri).live


def _reader(client: Any, keys: PipelineKeys, options: DriveOptions) -> ResultReader:
    """The run's one reader of results (and segments), writing the JSONL files asked for."""
    return ResultReader(
        client,
        keys,
        sink=JsonlSink(options.results) if options.results else None,
        segments=JsonlSink(options.segments) if options.segments else None,
    )


async def _summary(
    client: Any,
    keys: PipelineKeys,
    options: DriveOptions,
    sink: _Results,
    tracks: list[tuple[str, str]],
    first: dict[str, int],
    dead_before: int,
    started: float,
    interrupted: bool,
) -> Summary:
    """Every source that played counts: the ones given here (with the models each asked for) and
    any added meanwhile (over HTTP)."""
    counters = await read_counters(client, keys)
    ledger = sink.reader.ledger
    given = {sid for sid, _ in tracks}
    extra = [(s, m) for s in ledger.sources if s not in given for m in options.models]
    sources = list(dict.fromkeys(s for s, _ in [*tracks, *extra]))
    published = {s: counters.get(f"published:{s}", 0) - first.get(f"published:{s}", 0) for s in sources}
    per_track = {}
    for sid, model in [*tracks, *extra]:
        track = ledger.track(sid, model)
        per_track[_name(sid, model, options)] = {
            "published": published[sid],
            "results": track.results,
            "label": track.label or "-",
            "error": (track.eos or {}).get("error"),
        }
    total = ledger.total()
    return Summary(
        model=", ".join(options.models),
        synthetic=bool(options.synthetic),
        wall_s=time.monotonic() - started,
        published=sum(published.values()),
        results=total.results,
        duplicates=total.duplicates,
        dropped=sum(counters.get(f"dropped:{s}", 0) - first.get(f"dropped:{s}", 0) for s in sources),
        dead_lettered=await dead_letter_count(client, keys) - dead_before,
        skipped=sum(t.skipped for t in ledger.tracks.values()),
        p50_ms=total.latency.percentile(50),
        p99_ms=total.latency.percentile(99),
        max_ms=total.latency.percentile(100),
        per_source=per_track,
        interrupted=interrupted,
        segments=sink.reader.segments_written if options.segments else None,
    )


def _name(source: str, model: str, options: DriveOptions) -> str:
    return source if len(options.models) == 1 else f"{source} [{model}]"


class _Results:
    """The run's `ResultReader`, and when each track's end-of-stream arrived (for `finished`)."""

    def __init__(self, reader: ResultReader) -> None:
        self.reader = reader
        self._eos_at: dict[tuple[str, str], float] = {}

    async def poll(self, block_ms: int) -> int:
        return await self.reader.poll(block_ms=block_ms)

    def finished(self, tracks: list[tuple[str, str]], grace_s: float) -> bool:
        """True once every track has its end-of-stream and every frame it announced (less the
        skipped ones) has a result, or `grace_s` passed since the end: "late" results (frames the
        reorder buffer stopped waiting for, or that a crashed stage held until they were
        reclaimed) can follow the end. Never with no track: such a run goes on until stopped."""
        if not tracks:
            return False
        now = time.monotonic()
        for pair in tracks:
            track = self.reader.ledger.tracks.get(pair)
            if track is None or track.eos is None:
                return False
            if not track.complete and now - self._eos_at.setdefault(pair, now) < grace_s:
                return False
        return True


@dataclass
class _Loop:
    sink: _Results
    tracks: list[tuple[str, str]]
    stop: asyncio.Event
    watcher: _Watcher
    progress: Progress
    options: DriveOptions
    started: float
    grace_s: float
    outage: RedisOutage
    on_progress: Callable[[ResultLedger], None] | None
    refresh: Callable[[], Awaitable[object]]
    """Before a retry after an outage (a cluster client reloads its slot table)."""

    async def show(self) -> Snapshot | None:
        if not self.progress.shown:
            return None
        snap = await ride_out(
            lambda: self.watcher.snapshot(self.sink, time.monotonic() - self.started),
            self.outage,
            before_retry=self.refresh,
        )
        self.progress.update(snap)
        return snap

    async def until_done(self) -> None:
        next_view = 0.0
        last_change = time.monotonic()
        last_marker: tuple[int, ...] = ()
        while not self.stop.is_set() and not self.sink.finished(self.tracks, self.grace_s):
            if self.options.check_stages is not None:
                self.options.check_stages()
            try:
                await self.sink.poll(block_ms=200)
                now = time.monotonic()
                due = self.progress.shown and now >= next_view
                snap = await self.watcher.snapshot(self.sink, now - self.started) if due else None
            except Exception as e:
                if not is_redis_outage(e):
                    raise
                await self.outage.wait(e, before_retry=self.refresh)  # `stop` is checked between attempts
                continue
            if self.on_progress is not None:
                self.on_progress(self.sink.reader.ledger)
            if self.outage.recovered():
                last_change = now  # Redis was away: no stall of the pipeline
            if snap is None:
                continue
            next_view = now + 0.5
            self.progress.update(snap)
            marker = (
                sum(t.results for t in self.sink.reader.ledger.tracks.values()),
                snap.published,
                *(r.handled for r in snap.stages),
            )
            if marker != last_marker:
                last_marker, last_change = marker, now
            elif now - last_change > self.options.stall_timeout_s:
                raise Stalled(
                    f"no progress for {self.options.stall_timeout_s:.0f} s (stages: "
                    + ", ".join(f"{r.stage} x{r.replicas} lag {r.backlog}" for r in snap.stages)
                    + ")"
                    + (f"; see {self.options.logs_hint}" if self.options.logs_hint else "")
                )


class _Watcher:
    """Snapshots for the progress view: stage groups per model, replica counts, rates."""

    REPLICAS_EVERY_S = 5.0
    """Replica counts may cost the runner something to find (Ray asks the Serve controller): ask
    this seldom (counts change on a scale of seconds), read Redis every snapshot."""

    def __init__(self, client: Any, keys: PipelineKeys, options: DriveOptions) -> None:
        self.client = client
        self.keys = keys
        self.options = options
        self._rates = RateMeter()
        self._replicas: dict[str, dict[str, int]] = {}
        self._replicas_at = -self.REPLICAS_EVERY_S

    async def _replica_counts(self) -> dict[str, dict[str, int]]:
        now = time.monotonic()
        if now - self._replicas_at >= self.REPLICAS_EVERY_S:
            self._replicas_at = now
            for model in self.options.models:
                try:
                    self._replicas[model] = await off_loop(
                        self.options.replicas, model, timeout_s=self.REPLICAS_EVERY_S
                    )
                except Exception:
                    self._replicas[model] = {}
        return self._replicas

    async def snapshot(self, sink: _Results, elapsed_s: float) -> Snapshot:
        counters = await read_counters(self.client, self.keys)
        published = counters.get("published:*", 0)
        replicas = await self._replica_counts()
        first = self.options.models[0]
        rows_in: list[tuple[str, int, int, int]] = [
            ("ingest", replicas.get(first, {}).get("Ingest", 0), published, 0)
        ]
        for model in self.options.models:
            probes = await probe_stages(self.client, self.keys, model)
            for stage in ("preprocess", "infer", "postprocess"):
                probe = probes.get(stage)
                name = stage if len(self.options.models) == 1 else f"{stage} [{model}]"
                count = replicas.get(model, {}).get(stage.capitalize(), 0)
                rows_in.append((name, count, probe.handled if probe else 0, probe.backlog if probe else 0))
        rates = self._rates.update({name: handled for name, _, handled, _ in rows_in}, time.monotonic())
        rows = [StageRow(n, r, rates.get(n, 0.0), h, b) for n, r, h, b in rows_in]
        tracks = sink.reader.ledger.tracks
        return Snapshot(
            elapsed_s=elapsed_s,
            stages=rows,
            labels={
                _name(s, m, self.options): t.label for (s, m), t in tracks.items() if t.label is not None
            },
            results={_name(s, m, self.options): t.results for (s, m), t in tracks.items()},
            done={_name(s, m, self.options) for (s, m), t in tracks.items() if t.eos is not None},
            published=published,
            dead=0,
        )
