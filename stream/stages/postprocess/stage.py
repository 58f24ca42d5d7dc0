"""postprocess: scores -> results, in order per source, with smoothing and label-change events.

Per (source, model): a reorder buffer (bounded in frames and time) puts frames back in `seq`
order, then an EMA + hysteresis smoother gives `smoothed_label`; every change of it is an event on
``keys.events`` and closes a segment (`stream.core.segments`), written to ``keys.segments`` (the
source's end-of-stream closes its last one). Each result carries top-k with labels (a multi-label
model's result also lists every label above its threshold, and its smoothed set: each label's EMA
above the threshold, a change of which is an event too), per-stage times from the stamps, and
end-to-end latency. An input entry is acked only together with the result it produced, so frames
held in the reorder buffer are redelivered if this replica dies.

A source's results, events and segments go to its partition's streams (the partition its scores came
from). Replicas own partitions (`stream.adapters.redis.partition_leases`: a lease each, a fair share of
the live replicas each) and read only their own partitions' scores. Each commit of a partition runs
only while its lease holds (a replica that lost it writes nothing) and writes the state of every
(source, model) it changed (`stream.core.track_state`: the reorder buffer's next seq, the smoother,
the counters, the open segment) into the partition's state hash, in the same atomic step as the
results, segments, acks and dead letters.
A replica that takes a partition loads that state and claims every entry the partition's group
still has pending (the frames a previous owner held in its reorder buffer were never acked), so it
continues exactly where the previous owner stopped. A stopping replica does not flush its reorder
buffers: what they hold goes to the next owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from stream.adapters.metrics import metrics
from stream.adapters.redis.entries import DeadLetter, Entry, Output
from stream.adapters.redis.fenced_commit import Fenced
from stream.adapters.redis.partition_leases import PartitionLeases
from stream.adapters.redis.trim import trim_output
from stream.core.codec import Message, encode_message
from stream.core.keys import PipelineKeys
from stream.core.messages import EOS, FRAME, LABEL_CHANGE, RESULT, SKIP, SMOOTHING_RESTART
from stream.core.reorder import Released, ReorderBuffer
from stream.core.scoring import above, scores_problem, top_k
from stream.core.segments import Segment, SegmentBuilder
from stream.core.smoothing import LabelSmoother
from stream.core.track_state import SavedTrack
from stream.errors import LeaseLost
from stream.settings import Settings
from stream.stages.base import ConsumerStage, Handled, now_ms
from stream.stages.postprocess.partition_state import fences, load_tracks
from stream.stages.postprocess.tracks import Track
from stream.stages.postprocess.version_labels import VersionLabels
from stream.zoo.repository import ModelRepository

__all__ = ["PostprocessStage"]

log = logging.getLogger(__name__)

_RESULTS_TRIM_S = 5.0
_TAKE_OVER_COUNT = 500


class PostprocessStage(ConsumerStage):
    name = "postprocess"

    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        *,
        consumer: str,
        model: str,
        labels: list[str] | None = None,
        threshold: float | None = None,
    ) -> None:
        super().__init__(
            settings,
            client,
            consumer=consumer,
            stream_of=lambda keys: keys.scores(model),
            group=PipelineKeys.group("postprocess", model),
            model=model,
        )
        self.repository = ModelRepository(settings.models.repository)
        self.version_labels = VersionLabels(self.repository, model, settings.models)
        if labels is None:
            spec = self.repository.spec(model)
            labels = self.version_labels.read(spec.version)
            threshold = spec.threshold if spec.multi_label else None
        self.labels = labels
        self.version_labels.default = labels
        self.threshold = threshold
        """A multi-label model's threshold: each result lists every label scoring above it."""
        self.cfg = settings.postprocess
        self._tracks: dict[str, Track] = {}
        self._dirty: set[str] = set()
        """Sources whose track changed since the last commit (their state goes with it)."""
        self._next_results_trim_s = 0.0
        claim_idle_ms = settings.streams.claim_idle_ms
        self.ownership = PartitionLeases(client, self.keys, self.group, consumer, ttl_ms=claim_idle_ms)
        self._ownership_interval_s = claim_idle_ms / 4000.0
        self._next_ownership_s = 0.0
        self._next_take_over_s = 0.0
        self.save_state = settings.postprocess.save_state
        self.read_streams([])  # nothing until it owns partitions

    async def start(self) -> None:
        """(Re)start: whatever this replica held in memory may be ahead of Redis (a commit that
        failed), so it forgets its partitions and takes them back with their saved state."""
        await super().start()
        self.ownership.suspend()
        self._tracks.clear()
        self._dirty.clear()
        self.read_streams([])
        self._next_ownership_s = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        await super().run(stop)
        await self.ownership.leave()  # the next owners need not wait for the leases to expire

    # --- ownership ------------------------------------------------------------------------

    @property
    def owned(self) -> list[int]:
        """The partitions this replica owns now."""
        return sorted(self.ownership.owned)

    async def _rebalance(self) -> None:
        """Renew leases, then give up or take partitions towards a fair share."""
        lost = await self.ownership.renew()
        for k in lost:
            log.warning("postprocess %s: lost the lease on partition %d", self.consumer, k)
            self._drop(k)
        plan = await self.ownership.plan()
        for k in plan.give_up:
            self._drop(k)
            await self.ownership.give_up(k)
            log.info("postprocess %s: gave partition %d up", self.consumer, k)
        for k in plan.take:
            if await self.ownership.take(k):
                await self._load(k)
                log.info("postprocess %s: took partition %d", self.consumer, k)
        if lost or plan.give_up or plan.take:
            self._read_owned()

    def _read_owned(self, but: int | None = None) -> None:
        self.read_streams([self.keys.partition(k).scores(self.model or "") for k in self.owned if k != but])

    def _drop(self, partition: int) -> None:
        """Stop reading a partition and forget its tracks; its unacked entries stay pending for
        the next owner. (The caller gives the lease up or has lost it.)"""
        for source in [s for s, t in self._tracks.items() if t.keys.index == partition]:
            del self._tracks[source]
            self._dirty.discard(source)
        self._read_owned(but=partition)

    async def _load(self, partition: int) -> None:
        """Load a partition's saved tracks and claim every entry its group has pending."""
        keys = self.keys.partition(partition)
        if self.save_state:
            cfg = self.cfg
            saved = await load_tracks(
                self.client, keys, self.group,
                classes=len(self.labels), alpha=cfg.ema_alpha, hysteresis_frames=cfg.hysteresis_frames,
            )  # fmt: skip
            for source, track in saved.items():
                self._tracks[source] = self._resumed(source, track, keys)
        stream = keys.scores(self.model or "")
        while claimed := await self.transport.take_over(
            stream, self.group, self.consumer, count=_TAKE_OVER_COUNT, include_own=True
        ):
            self._orphans += claimed
            if len(claimed) < _TAKE_OVER_COUNT:
                break

    def _resumed(self, source: str, saved: SavedTrack, keys: PipelineKeys) -> Track:
        reorder: ReorderBuffer[tuple[Entry, Message]] = ReorderBuffer(
            self.cfg.reorder_max_frames, self.cfg.reorder_max_wait_ms, next_seq=saved.next_seq
        )
        c = saved.counters
        segments = SegmentBuilder(source, self.model or "", saved.segment)
        track = Track(
            reorder, saved.smoother, keys, segments, c["results"], c["skipped"], c["gaps"], c["late"]
        )
        if saved.smoother.label is not None:
            track.label = self.labels[saved.smoother.label]
        return track

    async def _take_leftovers(self) -> None:
        """Entries another consumer holds in a partition this replica owns: read by a previous
        owner after it gave the partition up (its commits are refused now); claimed here."""
        for stream in self.streams:
            claimed = await self.transport.take_over(
                stream, self.group, self.consumer, count=_TAKE_OVER_COUNT
            )
            if claimed:
                log.info(
                    "postprocess %s: claimed %d entries a previous owner left", self.consumer, len(claimed)
                )
                self._orphans += claimed

    async def commit(self, handled: Handled) -> None:
        """Commit with each touched partition's lease check and changed track states."""
        handled.fenced = self._fences(handled)
        try:
            await super().commit(handled)
        except LeaseLost as e:
            for lease in e.leases:
                k = self.keys.of_key(lease).index
                log.warning("postprocess %s: partition %d has another owner now; dropped", self.consumer, k)
                self._drop(k)
                self.ownership.forget(k)
        self._dirty.clear()

    def _fences(self, handled: Handled) -> list[Fenced]:
        streams = [o.stream for o in handled.outputs] + [e.stream for e in handled.acks]
        streams += [d.entry.stream for d in handled.dead]  # dead letters are fenced too
        touched = {self.keys.of_key(s).index for s in streams}
        states: dict[int, dict[str, str]] = {}
        for source in self._dirty:
            track = self._tracks.get(source)
            if track is not None and self.save_state:
                states.setdefault(track.keys.index, {})[source] = track.saved()
        return fences(self.keys, self.group, touched | set(states), self.ownership.owned, states)

    def _track(self, source: str, entry: Entry) -> Track:
        track = self._tracks.get(source)
        if track is None:
            track = Track(
                ReorderBuffer(self.cfg.reorder_max_frames, self.cfg.reorder_max_wait_ms),
                LabelSmoother(self.cfg.ema_alpha, self.cfg.hysteresis_frames),
                self.partition_keys(entry),
                SegmentBuilder(source, self.model or ""),
            )
            self._tracks[source] = track
        return track

    async def handle(self, items: list[tuple[Entry, Message]]) -> Handled:
        out = Handled()
        now = _ms()
        owned = set(self.streams)
        for entry, message in items:
            if entry.stream not in owned:  # a partition given up meanwhile: left for its owner
                continue
            meta = message.meta
            reason = scores_problem(message, self.model or "", len(self.labels))
            if reason is not None:
                out.dead.append(DeadLetter(entry, f"postprocess {self.model}: {reason}"))
                if isinstance(meta.get("source"), str) and isinstance(meta.get("seq"), int):
                    # keep the order moving: this seq will not come (acking twice is harmless)
                    skip = Message(meta={"kind": SKIP, "source": meta["source"], "seq": meta["seq"]})
                    track = self._track(meta["source"], entry)
                    released = track.reorder.push(meta["seq"], (entry, skip), now)
                    self._emit(meta["source"], released, out)
                continue
            source, seq = meta["source"], meta["seq"]
            self._emit(source, self._track(source, entry).reorder.push(seq, (entry, message), now), out)
        return out

    async def on_idle(self) -> Handled:
        out = Handled()
        now = _ms()
        for source, track in list(self._tracks.items()):
            if track.reorder.held:
                self._emit(source, track.reorder.expire(now), out)
        return out

    async def flush(self) -> Handled:
        """Nothing: frames held in the reorder buffers stay pending for the partitions' next
        owner, which resumes from the saved state (a flush would give up on their gaps)."""
        return Handled()

    def _emit(self, source: str, released: Released[tuple[Entry, Message]], out: Handled) -> None:
        track = self._tracks[source]
        if released.ordered or released.late or released.skipped:
            self._dirty.add(source)
        track.gaps += released.skipped
        for _, (entry, message) in released.ordered:
            out.acks.append(entry)
            kind = message.meta.get("kind")
            if kind == FRAME:
                out.outputs.extend(self._result(source, track, message, late=False))
            elif kind == SKIP:
                track.skipped += 1
            elif kind == EOS:
                out.outputs.append(self._eos(source, track, message))
                out.outputs.extend(self._segment(track, track.segments.end()))
                track.restart(LabelSmoother(self.cfg.ema_alpha, self.cfg.hysteresis_frames))
        for _, (entry, message) in released.late:
            out.acks.append(entry)
            if message.meta.get("kind") == FRAME:
                track.late += 1
                out.outputs.extend(self._result(source, track, message, late=True))

    def _new_version(
        self, source: str, track: Track, meta: dict[str, Any], labels: list[str]
    ) -> list[Output]:
        """A result of another model version than the last: when that version names other classes,
        smoothing starts again (its state counts the old classes) with an event saying why."""
        version, previous = meta.get("model_version"), track.version
        track.version = version if isinstance(version, int) else previous
        if previous is None or version == previous or labels == self.version_labels.of(previous):
            return []
        track.smoother = LabelSmoother(self.cfg.ema_alpha, self.cfg.hysteresis_frames)
        track.label = None
        event = {"kind": SMOOTHING_RESTART, "source": source, "model": self.model, "seq": meta["seq"],
                 "model_version": version, "previous_version": previous, "result_ms": now_ms(),
                 "reason": f"version {version} has other labels than version {previous}"}  # fmt: skip
        return [Output(track.keys.events, encode_message(Message(meta=event)))]

    def _result(self, source: str, track: Track, message: Message, *, late: bool) -> list[Output]:
        start = now_ms()
        meta = message.meta
        labels = self.version_labels.of(meta.get("model_version"))
        probs = np.asarray(message.array, dtype=np.float32)
        idx, vals = top_k(probs, self.cfg.top_k)
        top = [[labels[int(i)], round(float(v), 5)] for i, v in zip(idx, vals, strict=True)]
        extra: dict[str, Any] = {}
        if self.threshold is not None:
            extra["labels"] = self._above(probs, labels)
        events: list[Output] = [] if late else self._new_version(source, track, meta, labels)
        if late:
            smoothed = track.label or top[0][0]
            smoothed_score = None
        else:
            before = self._above(track.smoother.ema, labels)
            s = track.smoother.update(probs)
            smoothed, smoothed_score = labels[s.index], round(s.score, 5)
            closed = track.segments.frame(meta["seq"], smoothed, s.score, _capture_ms(meta))
            events.extend(self._segment(track, closed))
            event = {"kind": LABEL_CHANGE, "source": source, "model": self.model, "seq": meta["seq"],
                     "previous": track.label, "label": smoothed, "result_ms": start}  # fmt: skip
            changed = s.changed
            if self.threshold is not None:
                # multi-label: each label's EMA against the threshold (the EMA is the saved state,
                # so a replica taking the partition over continues the same label set)
                now = self._above(track.smoother.ema, labels)
                extra["smoothed_labels"] = now
                if [n for n, _ in now] != [n for n, _ in before]:
                    changed = True
                    event.update(labels=[n for n, _ in now], previous_labels=[n for n, _ in before])
            if changed:
                events.append(Output(track.keys.events, encode_message(Message(meta=event))))
            track.label = smoothed
        track.results += 1
        stamps: dict[str, Any] = {**meta.get("stamps", {}), "postprocess": [start, now_ms()]}
        stages_ms = {
            k: round(v[1] - v[0], 3) for k, v in stamps.items() if isinstance(v, list) and len(v) == 2
        }
        result_ms = now_ms()
        capture_ms = meta.get("capture_ms")
        latency_ms = round(result_ms - capture_ms, 3) if isinstance(capture_ms, int | float) else None
        if latency_ms is not None:
            metrics.e2e_latency(str(self.model), latency_ms / 1000.0)
        result = {
            "kind": RESULT,
            "source": source,
            "seq": meta["seq"],
            "model": self.model,
            "model_version": meta.get("model_version"),
            "label": top[0][0],
            "score": top[0][1],
            "top": top,
            "smoothed_label": smoothed,
            "smoothed_score": smoothed_score,
            "latency_ms": latency_ms,
            "stages_ms": stages_ms,
            "batch_size": meta.get("batch_size"),
            "batch_wait_ms": meta.get("batch_wait_ms"),
            "capture_ms": capture_ms,
            "ingest_ms": meta.get("ingest_ms"),
            "result_ms": result_ms,
            "truth": meta.get("label"),
            "late": late,
            **extra,
        }
        return [Output(track.keys.results, encode_message(Message(meta=result))), *events]

    @staticmethod
    def _segment(track: Track, closed: Segment | None) -> list[Output]:
        """The entry of a segment that just closed (none when nothing closed)."""
        if closed is None:
            return []
        return [Output(track.keys.segments, encode_message(Message(meta=closed.to_meta())))]

    def _above(self, scores: np.ndarray | None, labels: list[str]) -> list[list[Any]]:
        """[label, score] of every score above the multi-label threshold, best first."""
        if scores is None or self.threshold is None:
            return []
        idx, vals = above(scores, self.threshold)
        return [[labels[int(i)], round(float(v), 5)] for i, v in zip(idx, vals, strict=True)]

    def _eos(self, source: str, track: Track, message: Message) -> Output:
        meta = message.meta
        eos = {
            "kind": EOS,
            "source": source,
            "model": self.model,
            "frames": meta["seq"] - int(meta.get("first_seq", 0)),
            "results": track.results,
            "skipped": track.skipped,
            "gaps": track.gaps,
            "late": track.late,
            "error": meta.get("error"),
            "reason": meta.get("reason"),
            "result_ms": now_ms(),
        }
        return Output(track.keys.results, encode_message(Message(meta=eos)))

    async def maintain(self) -> None:
        await super().maintain()
        now = time.monotonic()
        if now >= self._next_ownership_s:
            self._next_ownership_s = now + self._ownership_interval_s
            await self._rebalance()
        if now >= self._next_take_over_s:
            self._next_take_over_s = now + self.settings.streams.claim_idle_ms / 2000.0
            await self._take_leftovers()
        if now >= self._next_results_trim_s:
            self._next_results_trim_s = now + _RESULTS_TRIM_S
            outputs = [s for k in self.keys.all_partitions for s in (k.results, k.events, k.segments)]
            for stream in outputs:
                await trim_output(self.client, stream, keep=self.settings.streams.max_len)


def _capture_ms(meta: dict[str, Any]) -> float | None:
    value = meta.get("capture_ms")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _ms() -> float:
    return time.monotonic() * 1000.0
