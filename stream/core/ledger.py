"""The sink's bookkeeping of results (pure): duplicates, end-of-stream, counts and latency.

Results are idempotent by (source, model, seq): at-least-once delivery can repeat one, so the
ledger keeps the first and counts the rest (never hides them). Its memory is bounded however long
a run lasts: duplicates are found with a per-track watermark (every seq at or below it was seen)
plus the seqs seen above it, at most `window` of them (a gap that never fills, a frame dropped or
dead-lettered, is given up on once `window` later seqs arrived); latencies go into histograms.

A *track* is one (source, model) pair: every source is classified by every model of a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stream.core.latency import LatencyHistogram
from stream.core.messages import EOS, RESULT

__all__ = ["DEDUPE_WINDOW", "ResultLedger", "SeqSet", "Track"]

DEDUPE_WINDOW = 10_000
"""Seqs a track remembers above its watermark: how far out of order a duplicate is still caught."""


@dataclass
class SeqSet:
    """The seqs seen of one track, in bounded memory: everything <= `floor`, and `above`."""

    window: int = DEDUPE_WINDOW
    floor: int = -1
    above: set[int] = field(default_factory=set)

    def __contains__(self, seq: int) -> bool:
        return seq <= self.floor or seq in self.above

    def add(self, seq: int) -> bool:
        """Record `seq`; False when it was seen before."""
        if seq in self:
            return False
        self.above.add(seq)
        if len(self.above) > self.window:  # give up on the oldest gaps: keep the newest half
            ordered = sorted(self.above)
            self.floor = ordered[len(ordered) // 2]
            self.above = set(ordered[len(ordered) // 2 + 1 :])
        while self.floor + 1 in self.above:
            self.floor += 1
            self.above.discard(self.floor)
        return True


@dataclass
class Track:
    """What the ledger knows of one (source, model)."""

    seqs: SeqSet = field(default_factory=SeqSet)
    results: int = 0
    """Distinct results."""
    duplicates: int = 0
    late: int = 0
    label: str | None = None
    """The newest smoothed label."""
    eos: dict[str, Any] | None = None
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    batches: float = 0.0
    """Sum of 1/batch_size over results: the number of batches they came in."""
    batched: int = 0
    """Results that carried a batch size."""

    @property
    def frames(self) -> int | None:
        """Frames the source published, from its end-of-stream; None before it."""
        frames = (self.eos or {}).get("frames")
        return int(frames) if isinstance(frames, int) else None

    @property
    def skipped(self) -> int:
        return int((self.eos or {}).get("skipped") or 0)

    @property
    def mean_batch_size(self) -> float | None:
        """Mean size of the batches the results came in (per batch: a batch of n counts once)."""
        return self.batched / self.batches if self.batches else None

    @property
    def complete(self) -> bool:
        """Ended, and every frame its end-of-stream counted has a result or a skip."""
        frames = self.frames
        return self.eos is not None and (frames is None or self.results + self.skipped >= frames)


@dataclass
class ResultLedger:
    """Takes decoded result-stream messages (`record`) and answers for the whole run."""

    window: int = DEDUPE_WINDOW
    tracks: dict[tuple[str, str], Track] = field(default_factory=dict)

    def track(self, source: str, model: str) -> Track:
        return self.tracks.setdefault((source, model), Track(seqs=SeqSet(self.window)))

    def record(self, meta: Mapping[str, Any], *, reread: bool = False) -> bool:
        """Record one result or end-of-stream; True for a result seen for the first time.

        `reread` marks an entry the reader had already taken (a lost ack, a group made again):
        a repeat of it is not a duplicate the pipeline made, so it is not counted as one.
        Other kinds (label changes) and results without a valid seq are ignored (False).
        """
        kind = meta.get("kind")
        if kind not in (RESULT, EOS):
            return False
        track = self.track(str(meta.get("source")), str(meta.get("model")))
        if kind == EOS:
            track.eos = dict(meta)
            return False
        seq = meta.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return False
        if not track.seqs.add(seq):
            track.duplicates += 0 if reread else 1
            return False
        track.results += 1
        track.late += bool(meta.get("late"))
        if meta.get("smoothed_label") is not None:
            track.label = str(meta["smoothed_label"])
        latency = meta.get("latency_ms")
        if isinstance(latency, int | float) and not isinstance(latency, bool):
            track.latency.record(float(latency))
        batch = meta.get("batch_size")
        if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0:
            track.batches += 1.0 / batch
            track.batched += 1
        return True

    def finished(self, pairs: set[tuple[str, str]] | list[tuple[str, str]]) -> bool:
        """True once every (source, model) in `pairs` has its end-of-stream."""
        return all(p in self.tracks and self.tracks[p].eos is not None for p in pairs)

    def complete(self, pairs: set[tuple[str, str]] | list[tuple[str, str]]) -> bool:
        """True once every pair in `pairs` is `Track.complete`."""
        return all(p in self.tracks and self.tracks[p].complete for p in pairs)

    @property
    def sources(self) -> list[str]:
        """Every source that has a result or an end-of-stream, in order of first appearance."""
        return list(dict.fromkeys(source for source, _ in self.tracks))

    def total(self, pairs: list[tuple[str, str]] | None = None) -> Track:
        """One track summing `pairs` (all tracks when None): counts, latencies, batches."""
        out = Track()
        for pair in self.tracks if pairs is None else pairs:
            track = self.tracks.get(pair)
            if track is None:
                continue
            out.results += track.results
            out.duplicates += track.duplicates
            out.late += track.late
            out.latency.merge(track.latency)
            out.batches += track.batches
            out.batched += track.batched
        return out
