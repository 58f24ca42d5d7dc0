"""The part of `framestream run --runner ray` that talks to Redis while the application runs:
register the sources, follow the results with live progress, stop and drain on Ctrl-C, and sum up.

A *track* is one (source, model) pair: every source is classified by every model of the run.

Redis going away for a while (killed and restarted, stalled, loading its AOF) does not end the
run: like the stage loops, every Redis call here waits for it and retries
(`stream.adapters.redis_outage.ride_out`), for at most `DriveOptions.max_outage_s`. The results
are read by cursor (XREAD), so a read that failed is simply read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from deployments.config import replica_counts
from deployments.display import Progress, Snapshot, StageRow, Summary
from deployments.watch import probe_stages, read_counters
from stream.adapters.redis_outage import RedisOutage, is_redis_outage, ride_out
from stream.adapters.redis_streams import connect
from stream.core.keys import PipelineKeys
from stream.core.rates import RateMeter
from stream.core.source_ids import source_ids
from stream.errors import FramestreamError
from stream.results import JsonlSink, ResultReader, dead_letter_count
from stream.settings import Settings
from stream.stopping import on_stop_signal

__all__ = ["DriveOptions", "Stalled", "drive"]

log = logging.getLogger("framestream.run")
_T = TypeVar("_T")


class Stalled(FramestreamError):
    """The pipeline made no progress for too long."""


@dataclass(frozen=True)
class DriveOptions:
    models: list[str]
    apps: dict[str, str]
    """Serve application name per model (for replica counts)."""
    synthetic: list[str]
    results: Path | None = None
    stall_timeout_s: float = 180.0
    timeout_s: float | None = None
    loop: bool = False
    """Play the sources over and over: the run ends at `timeout_s` or Ctrl-C."""
    max_outage_s: float = 300.0
    """How long Redis may stay unavailable before the run gives up."""


async def drive(
    options: DriveOptions, settings: Settings, redis_url: str, uris: list[str], console: Console
) -> Summary:
    """Play `uris` through the running application(s) until done, Ctrl-C or the timeout."""
    from stream.adapters.source_registry import SourceSpec, add_source, remove_source

    keys = PipelineKeys(settings.streams.pipeline, settings.streams.partitions)
    client = await connect(redis_url, password=settings.redis.password, username=settings.redis.username)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # the first SIGINT/SIGTERM stops the sources and drains; a second one ends the run at once
    with on_stop_signal(lambda: loop.call_soon_threadsafe(stop.set)):
        sink = _Results(
            ResultReader(client, keys, sink=JsonlSink(options.results) if options.results else None)
        )
        ids = source_ids(uris)
        tracks = [(s, m) for s in ids for m in options.models]
        outage = RedisOutage(options.max_outage_s)
        try:
            await ride_out(sink.reader.start, outage)  # results from now on: earlier runs' are not ours
            first = await ride_out(lambda: read_counters(client, keys), outage)
            for sid, uri in zip(ids, uris, strict=True):
                spec = SourceSpec(uri=uri, loop=options.loop)
                await ride_out(functools.partial(add_source, client, keys, sid, spec, replace=True), outage)
            started = time.monotonic()
            watcher = _Watcher(client, keys, options)
            grace_s = settings.streams.drain_timeout_s
            with Progress(console) as progress:
                if options.timeout_s is not None:
                    loop.call_later(options.timeout_s, stop.set)
                await _until_done(sink, tracks, stop, watcher, progress, options, started, grace_s, outage)
                interrupted = stop.is_set() and not sink.finished(tracks, grace_s)
                if interrupted:
                    console.print("stopping: sources removed, draining what is in flight ...")
                    for sid in ids:
                        await ride_out(functools.partial(remove_source, client, keys, sid), outage)
                    deadline = time.monotonic() + settings.streams.drain_timeout_s + 5
                    while not sink.finished(tracks, grace_s) and time.monotonic() < deadline:
                        await ride_out(lambda: sink.poll(block_ms=200), outage)
                        progress.update(
                            await ride_out(lambda: watcher.snapshot(sink, time.monotonic() - started), outage)
                        )
                while await ride_out(lambda: sink.poll(block_ms=300), outage):
                    pass
                progress.update(
                    await ride_out(lambda: watcher.snapshot(sink, time.monotonic() - started), outage)
                )
            return await ride_out(
                lambda: _summary(client, keys, options, sink, ids, first, started, interrupted), outage
            )
        finally:
            if sink.reader.sink is not None:
                sink.reader.sink.close()
            await client.aclose()


async def _summary(
    client: Any,
    keys: PipelineKeys,
    options: DriveOptions,
    sink: _Results,
    ids: list[str],
    first: dict[str, int],
    started: float,
    interrupted: bool,
) -> Summary:
    """Every source that played counts: the ones given here and any added meanwhile (over HTTP)."""
    counters = await read_counters(client, keys)
    ledger = sink.reader.ledger
    sources = list(dict.fromkeys([*ids, *ledger.sources]))
    published = {s: counters.get(f"published:{s}", 0) - first.get(f"published:{s}", 0) for s in sources}
    per_track = {}
    for sid in sources:
        for model in options.models:
            track = ledger.track(sid, model)
            per_track[_name(sid, model, options)] = {
                "published": published[sid],
                "results": track.results,
                "label": track.label or "-",
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
        dead_lettered=await dead_letter_count(client, keys),
        skipped=sum(t.skipped for t in ledger.tracks.values()),
        p50_ms=total.latency.percentile(50),
        p99_ms=total.latency.percentile(99),
        max_ms=total.latency.percentile(100),
        per_source=per_track,
        interrupted=interrupted,
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
        reorder buffer stopped waiting for) can follow the end."""
        now = time.monotonic()
        for pair in tracks:
            track = self.reader.ledger.tracks.get(pair)
            if track is None or track.eos is None:
                return False
            if not track.complete and now - self._eos_at.setdefault(pair, now) < grace_s:
                return False
        return True


async def _until_done(
    sink: _Results,
    tracks: list[tuple[str, str]],
    stop: asyncio.Event,
    watcher: _Watcher,
    progress: Progress,
    options: DriveOptions,
    started: float,
    grace_s: float,
    outage: RedisOutage,
) -> None:
    next_view = 0.0
    last_change = time.monotonic()
    last_marker: tuple[int, ...] = ()
    while not stop.is_set() and not sink.finished(tracks, grace_s):
        try:
            await sink.poll(block_ms=200)
            now = time.monotonic()
            snap = await watcher.snapshot(sink, now - started) if now >= next_view else None
        except Exception as e:
            if not is_redis_outage(e):
                raise
            await outage.wait(e)  # `stop` is checked again between attempts
            continue
        if outage.recovered():
            last_change = now  # Redis was away: no stall of the pipeline
        if snap is None:
            continue
        next_view = now + 0.5
        progress.update(snap)
        marker = (
            sum(t.results for t in sink.reader.ledger.tracks.values()),
            snap.published,
            *(r.handled for r in snap.stages),
        )
        if marker != last_marker:
            last_marker, last_change = marker, now
        elif now - last_change > options.stall_timeout_s:
            raise Stalled(
                f"no progress for {options.stall_timeout_s:.0f} s (stages: "
                + ", ".join(f"{r.stage} x{r.replicas} lag {r.backlog}" for r in snap.stages)
                + "); see the replica logs under /tmp/ray/session_latest/logs/serve"
            )


async def _off_loop(fn: Callable[..., _T], *args: Any, timeout_s: float) -> _T:
    """`fn(*args)` in a daemon thread, waited for `timeout_s` at most (TimeoutError). A Ray call
    can block for good when Ray's own processes were signalled along with the run (``timeout``,
    systemd): in ``asyncio.to_thread`` it would hold up the end of ``asyncio.run`` (which joins
    the default executor's threads) and so the whole stop; a daemon thread is simply left."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not done.done():
            outcome()

    def work() -> None:
        try:
            result = fn(*args)
            outcome = functools.partial(done.set_result, result)
        except BaseException as e:
            outcome = functools.partial(done.set_exception, e)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=work, name=f"off-loop-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    return await asyncio.wait_for(done, timeout_s)


class _Watcher:
    """Snapshots for the progress view: stage groups per model, replica counts, rates."""

    REPLICAS_EVERY_S = 5.0
    """Replica counts come from the Serve controller, which builds its whole status for each
    ask: ask it this seldom (counts change on a scale of seconds), read Redis every snapshot."""

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
            for model, app in self.options.apps.items():
                try:
                    self._replicas[model] = await _off_loop(
                        replica_counts, app, timeout_s=self.REPLICAS_EVERY_S
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
