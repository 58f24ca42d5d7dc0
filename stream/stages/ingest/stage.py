"""ingest: play the registered sources into the frames stream.

Sources live in ``keys.sources`` (see `stream.adapters.redis.source_registry`), so they can be added
and removed while the pipeline runs. Each source is played by exactly one ingest replica at a time: the
replica holds a lease (`stream.adapters.redis.leases`, renewed every scan) and records its progress with every
publish, so a replica that takes over resumes after the last published frame.

Replicas share the sources: each heartbeats into ``keys.members("ingest")`` and plays at most its
fair share of the unfinished sources (`stream.core.ownership.rebalance`, the rule postprocess uses
for partitions). A replica over its share (another one joined) stops the excess after the chunk it
is publishing, with its progress written, and releases their leases; one under its share takes
free sources. A replica that dies leaves the members and its leases expire, so the others take
its sources up where its last publish left them: no frame of a file source is lost or repeated.

A source's frames, progress and counters go to its partition (``keys.for_source``). File, image
and replay sources wait while more frames of their partition than its window are on their way
(`PipelineBacklog.of_partition`): played flat out, ``ingest.queue_ms`` of the partition's
measured drain rate (`stream.core.drain_window`), at most ``ingest.high_water``; paced,
``ingest.high_water``. Live sources (RTSP, webcams) never wait: a reader thread fills a small
buffer that drops by policy, and frames that arrive while the pipeline is more than
``ingest.high_water`` behind are dropped too. Every drop is counted (metrics and
``keys.counters``).

The backlog it waits on is `stream.stages.ingest.pipeline_backlog`; its writes to Redis (frames with
progress and status, thumbnails, drops, end-of-stream) are `stream.stages.ingest.source_writes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from stream.adapters.media.video import FrameSource, LiveOptions, open_source, skip_frames
from stream.adapters.metrics import metrics
from stream.adapters.redis.entries import text
from stream.adapters.redis.leases import Leases, Members
from stream.adapters.redis.outage import is_redis_outage
from stream.adapters.redis.partitions import ensure_layout
from stream.adapters.redis.source_registry import (
    SourceSpec,
    add_source,
    get_state,
    list_sources,
    remove_source,
)
from stream.adapters.redis.streams import GroupStats, StreamTransport
from stream.core.drain_window import DrainWindow
from stream.core.keys import PipelineKeys
from stream.core.ownership import rebalance
from stream.core.sampling import FrameSampler
from stream.core.sources.status import PLAYING
from stream.errors import SourceError
from stream.settings import IngestSettings, Settings
from stream.stages.ingest.frames import Chunk, LivePump, PendingFrame, encode_frames
from stream.stages.ingest.pipeline_backlog import SINK_FULL, PipelineBacklog
from stream.stages.ingest.source_reports import SourceReport
from stream.stages.ingest.source_writes import SourceWrites
from stream.waiting import pause
from stream.zoo.repository import ModelRepository

__all__ = ["IngestStage", "add_source", "list_sources", "remove_source", "source_failure"]

log = logging.getLogger(__name__)

_CHUNK = 8  # frames per publish (one MULTI/EXEC) for live and real-time paced sources
# A file played as fast as the pipeline goes publishes bigger chunks: every stage downstream then
# reads bigger batches, which cut the pipeline's CPU per frame by ~15% (4.6 vs 5.5 ms measured).
_FAST_CHUNK = 32


@dataclass
class _Player:
    source_id: str
    spec: SourceSpec
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    removed: bool = False
    first_seq: int = 0
    task: asyncio.Task[None] | None = None
    report: SourceReport | None = None
    progress: dict = field(default_factory=dict)  # the state's progress fields, as last written
    straight: tuple[str, ...] = ()  # the models its last frames went straight to (`_straight`)


class IngestStage:
    """Plays every source this replica holds a lease on; `processed` counts published frames."""

    name = "ingest"

    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        *,
        consumer: str,
        lease_ms: int = 5_000,
        scan_interval_s: float = 0.25,
    ) -> None:
        self.settings = settings
        self.client = client
        self.consumer = consumer
        self.keys = PipelineKeys(settings.streams.pipeline, settings.streams.partitions)
        self.transport = StreamTransport(
            client,
            self.keys,
            stage=self.name,
            replica_acks=settings.streams.replica_acks,
            replica_ack_timeout_ms=settings.streams.replica_ack_timeout_ms,
        )
        self.lease_ms = lease_ms
        self.leases = Leases(client, lease_ms)
        self.members = Members(client, self.keys.members(self.name), lease_ms)
        self.scan_interval_s = scan_interval_s
        self.processed = 0
        self.dropped = 0
        self.last_progress_s = time.monotonic()
        self._players: dict[str, _Player] = {}
        self.pipeline = PipelineBacklog(
            client,
            self.keys,
            self.transport,
            ModelRepository(settings.models.repository),
            sinks=settings.sinks,
        )
        self.writes = SourceWrites(client, self.keys, settings.ingest)
        self._published: Counter[int] = Counter()  # frames this replica published, per partition
        self._drains: dict[int, DrainWindow] = {}  # per partition, with ingest.queue_ms

    @property
    def playing(self) -> list[str]:
        """The sources this replica plays now (including any it is handing over)."""
        return sorted(self._players)

    @property
    def auto_short_side_px(self) -> int | None:
        """What ``frame_short_side_px: auto`` means now (`PipelineBacklog.auto_short_side_px`)."""
        return self.pipeline.auto_short_side_px

    async def backlog(self) -> GroupStats:
        """The frames stream's slowest consumer group, over every partition (for the autoscaler)."""
        return await self.pipeline.slowest()

    async def leave_groups(self) -> list[str]:
        """Ingest reads no consumer group: nothing to leave."""
        return []

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_layout(self.client, self.keys)
        try:
            while not stop.is_set():
                self.last_progress_s = time.monotonic()
                await self._scan()
                await pause(stop, self.scan_interval_s)
        finally:
            await self._stop_all()

    async def _scan(self) -> None:
        specs = {_name(k): v for k, v in (await self.client.hgetall(self.keys.sources)).items()}
        states = {
            _name(k): json.loads(v)
            for keys in self.keys.all_partitions
            for k, v in (await self.client.hgetall(keys.source_state)).items()
        }
        ended: set[str] = set()
        for source_id, player in list(self._players.items()):
            if player.task is not None and player.task.done():
                ended.add(source_id)  # `states` may predate its end: do not start it again below
                del self._players[source_id]
                self.writes.forget(source_id)
                await self._release(source_id)
                if not player.task.cancelled() and (exc := player.task.exception()) is not None:
                    if is_redis_outage(exc) or isinstance(exc, RedisError):
                        raise exc  # the whole loop rides it out (`run_resilient`)
                    # a bug met while playing one source fails that source, not the replica
                    log.error("ingest: playing %s failed", source_id, exc_info=exc)
                    await self._finish(source_id, states.get(source_id, {}), error=source_failure(exc),
                                       models=player.spec.models)  # fmt: skip
            elif source_id not in specs:
                player.removed = True
                player.stop.set()
            elif not await self.leases.renew(self.keys.source_lease(source_id), self.consumer):
                log.warning("ingest %s: lost the lease on %s; stopping it", self.consumer, source_id)
                player.stop.set()
        unfinished = sorted(s for s in specs if s not in ended and not states.get(s, {}).get("done"))
        for source_id in await self._share(unfinished):
            raw = specs[source_id]
            try:
                spec = SourceSpec.from_json(raw)
            except (ValueError, TypeError) as e:
                await self._finish(source_id, states.get(source_id, {}), error=f"bad source spec: {e}")
                continue
            if await self.leases.acquire(self.keys.source_lease(source_id), self.consumer):
                player = _Player(source_id, spec)
                player.task = asyncio.create_task(self._play(player), name=f"ingest:{source_id}")
                self._players[source_id] = player
                log.info("ingest %s: playing %s (%s)", self.consumer, source_id, spec.uri)

    async def _share(self, unfinished: list[str]) -> list[str]:
        """Heartbeat; stop the sources beyond this replica's fair share, and return the free ones
        it should take (in its order of preference)."""
        members = await self.members.heartbeat(self.consumer)
        waiting = [s for s in unfinished if s not in self._players]
        held = await self.client.mget([self.keys.source_lease(s) for s in waiting]) if waiting else []
        free = [s for s, holder in zip(waiting, held, strict=True) if holder is None]
        plan = rebalance(unfinished, members, self.consumer, set(self._players), free)
        for source_id in plan.give_up:
            player = self._players[source_id]
            if not player.stop.is_set():
                log.info("ingest %s: handing %s over (%d members)", self.consumer, source_id, len(members))
                player.stop.set()
        return plan.take

    async def _stop_all(self) -> None:
        for player in self._players.values():
            player.stop.set()
        tasks = [p.task for p in self._players.values() if p.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.streams.drain_timeout_s)
            for task in pending:
                task.cancel()
        for source_id in list(self._players):
            await self._release(source_id)
        self._players.clear()
        with contextlib.suppress(RedisError):  # the others then share out this replica's sources at once
            await self.members.leave(self.consumer)

    async def _release(self, source_id: str) -> None:
        await self.leases.release(self.keys.source_lease(source_id), self.consumer)

    async def _play(self, player: _Player) -> None:
        state = await get_state(self.client, self.keys, player.source_id)
        if state.get("done"):  # finished between the scan's read of the states and the lease: not again
            return
        next_seq, position = int(state.get("next_seq", 0)), int(state.get("position", 0))
        player.first_seq = int(state.get("first_seq", 0))
        player.progress = {
            "next_seq": next_seq,
            "position": position,
            "first_seq": player.first_seq,
            "done": False,
        }
        player.report = SourceReport(player.source_id, self.keys, state)
        try:
            source = await asyncio.to_thread(_open_at, player.spec.uri, position, self.settings.ingest)
        except Exception as e:  # whatever opening one source raises is that source's failure
            log.error("ingest: source %s cannot be read: %s", player.source_id, e)
            await self._finish(player.source_id, state, error=source_failure(e), report=player.report,
                               models=player.spec.models)  # fmt: skip
            return
        live = player.spec.live if player.spec.live is not None else source.live
        if not live and player.report.observe(PLAYING, None, 0):
            await self._write_report(player)  # playing, even while it waits for the pipeline
        sampler = FrameSampler(
            player.spec.target_fps or self.settings.ingest.target_fps,
            player.spec.every_nth or self.settings.ingest.every_nth,
            seen=position,
        )
        try:
            if live:
                error = await self._play_live(player, source, sampler, next_seq)
            else:
                error = await self._play_file(player, source, sampler, next_seq, position)
        finally:
            await asyncio.to_thread(_close, source)
        if error is not None or player.removed or not player.stop.is_set():
            await self._finish(player.source_id, await get_state(self.client, self.keys, player.source_id),
                               error=error, removed=player.removed, report=player.report,
                               models=player.spec.models)  # fmt: skip

    async def _play_file(
        self, player: _Player, source: FrameSource, sampler: FrameSampler, next_seq: int, position: int
    ) -> str | None:
        keys = self.keys.for_source(player.source_id)
        pace_origin: tuple[float, float] | None = None
        chunk_size = _CHUNK if player.spec.realtime else _FAST_CHUNK
        # A file played flat out decodes its next chunk while this one is published: decoding is
        # most of ingest's work, and publishing and checking the backlog would otherwise leave the
        # decoder idle for a quarter of the time (ingest bounds a single source's frames/s).
        ahead: asyncio.Task[Chunk] | None = None
        try:
            while not player.stop.is_set():
                if ahead is None:
                    room = await self._room(player, keys, chunk_size)
                    if room <= 0:
                        break  # stopped while waiting
                    ahead = self._decode(source, sampler, room)
                try:
                    chunk = await asyncio.shield(ahead)  # a cancelled loop still waits for the decoder
                except Exception as e:  # a read or decode error ends this source, not the loop
                    return source_failure(e)
                ahead = None
                if player.spec.realtime and chunk.frames:
                    pace_origin = await _pace(pace_origin, chunk.first_pts_ms)
                elif not chunk.eof and not player.stop.is_set():
                    room = await self._room(
                        player, keys, chunk_size, publishing=len(chunk.frames), wait=False
                    )
                    ahead = self._decode(source, sampler, room) if room > 0 else None
                position += chunk.consumed
                if chunk.frames:
                    next_seq = await self._publish(player, chunk.frames, next_seq, position)
                if chunk.eof:
                    if not player.spec.loop:
                        return None
                    await asyncio.to_thread(_close, source)
                    try:
                        source = await asyncio.to_thread(_open_at, player.spec.uri, 0, self.settings.ingest)
                    except Exception as e:
                        return source_failure(e)
                    position, sampler.seen, pace_origin = 0, 0, None
            return None
        finally:
            await _drop(ahead)

    async def _room(
        self, player: _Player, keys: PipelineKeys, chunk_size: int, *, publishing: int = 0, wait: bool = True
    ) -> int:
        """How many frames the next chunk may have: up to `chunk_size`, never far past the
        source's window (`_window`) counting the `publishing` frames not yet in the backlog, and
        0 when that is fewer than `_least_room`. With `wait`, first waits until the window has
        that much room (0 when the player stopped meanwhile)."""
        paced = player.spec.realtime
        backlog = await self.pipeline.of_partition(keys)
        window = self._window(keys, backlog, paced=paced)
        if not wait:
            room = min(chunk_size, window - backlog - publishing)
            return room if room >= _least_room(chunk_size, window) else 0
        while window - backlog < _least_room(chunk_size, window):
            if player.stop.is_set():
                return 0
            self.last_progress_s = time.monotonic()
            await asyncio.sleep(0.01)
            backlog = await self.pipeline.of_partition(keys)
            window = self._window(keys, backlog, paced=paced)
        return min(chunk_size, window - backlog)

    def _decode(self, source: FrameSource, sampler: FrameSampler, n: int) -> asyncio.Task[Chunk]:
        """Decode up to `n` frames of a file source on a worker thread."""
        ingest = self.settings.ingest
        fit = self.pipeline.auto_fit
        return asyncio.ensure_future(
            asyncio.to_thread(encode_frames, source, sampler, n, ingest, self.auto_short_side_px, fit)
        )

    def _window(self, keys: PipelineKeys, backlog: int, *, paced: bool) -> int:
        """The most frames a file source of partition `keys` may keep on their way, given the
        `backlog` just read: played flat out, ``ingest.queue_ms`` of the drain rate measured from
        this replica's publishes and the backlog (`DrainWindow`); ``ingest.high_water`` with that
        off or for a `paced` (real-time) source, which publishes at its media's pace.

        Another replica publishing into the partition too looks like a slower drain here (its
        frames grow the backlog): the window is then smaller, never under the floor."""
        cfg = self.settings.ingest
        if not cfg.queue_ms or backlog >= SINK_FULL:  # a full sink is no drain reading
            return cfg.high_water
        drain = self._drains.get(keys.index)
        if drain is None:
            # The floor keeps every stage busy with no rate known: inference holds up to
            # `inflight` batches of `max_batch_size` tensors taken but not acked (still in the
            # backlog), and preprocess needs one more fast chunk to work on meanwhile. A slower
            # measured drain cannot take the window under it, so a stall never shuts a source out.
            floor = self.settings.infer.max_batch_size * self.settings.infer.inflight + _FAST_CHUNK
            drain = DrainWindow(queue_s=cfg.queue_ms / 1000, floor=floor, high_water=cfg.high_water)
            self._drains[keys.index] = drain
        window = drain.observe(time.monotonic(), self._published[keys.index], backlog)
        return cfg.high_water if paced else window

    async def _play_live(
        self, player: _Player, source: FrameSource, sampler: FrameSampler, next_seq: int
    ) -> str | None:
        cfg = self.settings.ingest
        keys = self.keys.for_source(player.source_id)
        pump = LivePump(source, sampler, cfg)
        pump.start()
        try:
            while not player.stop.is_set():
                self.last_progress_s = time.monotonic()
                behind = await self.pipeline.of_partition(keys) > cfg.high_water
                try:
                    chunk = await asyncio.to_thread(
                        pump.take_encoded, _CHUNK, not behind, self.auto_short_side_px, self.pipeline.auto_fit
                    )
                except Exception as e:  # a frame that cannot be encoded ends this source
                    return source_failure(e)
                await self._count_drops(player.source_id, cfg.live_policy, pump.drain_dropped())
                await self._count_drops(player.source_id, "backpressure", chunk.dropped)
                if chunk.frames:
                    next_seq = await self._publish(player, chunk.frames, next_seq, 0)
                await self._report_health(player, pump)
                if pump.error is not None:
                    return pump.error
                if chunk.eof:
                    return None
                if not chunk.frames:
                    await asyncio.sleep(0.005)
        finally:
            unpublished = await asyncio.to_thread(pump.stop)  # joins the reader thread: off the loop
            with contextlib.suppress(Exception):  # counting must not hide why the loop ended
                # the last reads may have overflowed the buffer after the last drain: count those too
                await self._count_drops(player.source_id, cfg.live_policy, pump.drain_dropped())
                await self._count_drops(player.source_id, "stopped", unpublished)
        return None

    async def _report_health(self, player: _Player, pump: LivePump) -> None:
        """Write a live source's status when it changed (with an event for a change worth one)."""
        assert player.report is not None
        health = pump.health()
        dirty = False
        for status, reason in (*health.passed, (health.status, health.reason)):
            dirty = player.report.observe(status, reason, health.reconnects) or dirty
        if dirty:
            await self._write_report(player)

    async def _write_report(self, player: _Player) -> None:
        assert player.report is not None
        await self.writes.report(player.report, player.progress)

    async def _count_drops(self, source_id: str, reason: str, n: int) -> None:
        if n:
            self.dropped += n
            metrics.dropped(source_id, reason, n)
            metrics.source_dropped(source_id, n)
            metrics.frames(self.name, "dropped", n)
            await self.writes.count_drops(source_id, n)

    async def _publish(
        self, player: _Player, frames: list[PendingFrame], next_seq: int, position: int
    ) -> int:
        """Publish the frames with their seq and record progress (one MULTI/EXEC); returns next seq."""
        progress = {"next_seq": next_seq + len(frames), "position": position, "first_seq": player.first_seq,
                    "done": False}  # fmt: skip
        straight = await self._straight(player, frames)
        await self.writes.publish(
            player.source_id, frames, next_seq, progress, player.report, player.spec.models, straight
        )
        player.straight = straight
        player.progress = progress
        self.processed += len(frames)
        self._published[self.keys.for_source(player.source_id).index] += len(frames)
        metrics.frames(self.name, "ok", len(frames))
        return next_seq + len(frames)

    async def _straight(self, player: _Player, frames: list[PendingFrame]) -> tuple[str, ...]:
        """The models whose tensors streams `frames` go straight into, when
        ``ingest.straight_to_tensors`` is on and every frame is already the one input they share;
        none: into the frames stream, through preprocess.

        Never ahead of one of the source's earlier frames: unless its last frames went straight
        to these same models, their preprocess groups must have nothing left in the frames
        stream first. (Its end always goes through the frames stream, so after every frame.)"""
        fit = self.pipeline.auto_fit
        if not self.settings.ingest.straight_to_tensors or fit is None:
            return ()
        if not all(frame.fit == fit.key for frame in frames):
            return ()
        models = self.pipeline.straight_models(player.spec.models)
        if models and models != player.straight:
            keys = self.keys.for_source(player.source_id)
            if not await self.pipeline.preprocess_done(keys, models):
                return ()
        return models

    async def _finish(
        self,
        source_id: str,
        state: dict,
        *,
        error: str | None = None,
        removed: bool = False,
        report: SourceReport | None = None,
        models: tuple[str, ...] | None = None,
    ) -> None:
        """Publish end-of-stream and mark the source done (finished or failed), atomically."""
        frames = await self.writes.finish(
            source_id, state, error=error, removed=removed, report=report, models=models
        )
        self.processed += 1
        log.info("ingest: source %s finished after %d frames%s", source_id, frames,
                 f" ({error})" if error else "")  # fmt: skip


_REASON_MAX_CHARS = 500


def source_failure(error: BaseException) -> str:
    """The reason a source failed, as its status shows it: a `SourceError`'s own words, else the
    exception's type and message (cut short: it is stored with the source)."""
    reason = str(error) if isinstance(error, SourceError) else f"{type(error).__name__}: {error}"
    return reason if len(reason) <= _REASON_MAX_CHARS else reason[:_REASON_MAX_CHARS] + "..."


def _close(source: FrameSource) -> None:
    try:
        source.close()
    except Exception:  # closing must not hide why the source ended, nor end the loop
        log.exception("ingest: closing %s failed", source.uri)


def _open_at(uri: str, position: int, cfg: IngestSettings) -> FrameSource:
    short_side_px = cfg.frame_short_side_px if isinstance(cfg.frame_short_side_px, int) else None
    live_options = LiveOptions(
        reconnect_initial_backoff_s=cfg.reconnect_initial_backoff_s,
        reconnect_max_backoff_s=cfg.reconnect_max_backoff_s,
        stall_after_s=cfg.stall_after_s,
        open_timeout_s=cfg.open_timeout_s,
    )
    source = open_source(uri, short_side_px=short_side_px, live_options=live_options)
    if position:
        skip_frames(source, position)
    return source


def _least_room(chunk_size: int, window: int) -> int:
    """The fewest frames a chunk is worth publishing: half a chunk, at most a quarter of the
    window. Topping the backlog up a frame or two at a time as the pipeline drains it would make
    every stage read batches that small, and each read, batch and publish costs about the same
    whatever its size."""
    return max(1, min(chunk_size // 2, window // 4))


async def _drop(ahead: asyncio.Task[Chunk] | None) -> None:
    """Wait for a chunk decoded ahead that will not be published (the player stopped): the caller
    closes the source next, which must not happen while it is decoding."""
    if ahead is not None:
        await asyncio.wait([ahead])
        if not ahead.cancelled():
            ahead.exception()  # retrieved: its error does not outlive the source


async def _pace(origin: tuple[float, float] | None, pts_ms: float | None) -> tuple[float, float] | None:
    """Sleep until the frame at `pts_ms` is due at the media's own pace; returns the pace origin."""
    if pts_ms is None:
        return origin
    now = time.monotonic()
    if origin is None:
        return (now, pts_ms)
    delay = (pts_ms - origin[1]) / 1000.0 - (now - origin[0])
    if delay > 0:
        await asyncio.sleep(delay)
    return origin


def _name(raw: object) -> str:
    if isinstance(raw, dict):
        raw = raw.get("name", raw.get(b"name"))
    return text(raw)
