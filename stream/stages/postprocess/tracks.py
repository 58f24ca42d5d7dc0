"""What postprocess holds per (source, model): its reorder buffer, smoother and open segment, the
partition its outputs go to, and the counters saved with it (`stream.core.track_state`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stream.adapters.redis.entries import Entry
from stream.core.codec import Message
from stream.core.keys import PipelineKeys
from stream.core.reorder import ReorderBuffer
from stream.core.segments import SegmentBuilder
from stream.core.smoothing import LabelSmoother
from stream.core.track_state import encode_track

__all__ = ["Track"]


@dataclass
class Track:
    """Ordering and smoothing state of one (source, model)."""

    reorder: ReorderBuffer[tuple[Entry, Message]]
    smoother: LabelSmoother
    keys: PipelineKeys  # the source's partition: where its results, events and segments go
    segments: SegmentBuilder
    results: int = 0
    skipped: int = 0
    gaps: int = 0
    late: int = 0
    label: str | None = field(default=None)
    version: int | None = None  # the model version of the last result (its labels)

    def restart(self, smoother: LabelSmoother) -> None:
        """After end-of-stream: a source re-added later continues its seq, with fresh statistics."""
        self.smoother, self.label = smoother, None
        self.segments.open = None
        self.results = self.skipped = self.gaps = self.late = 0

    def saved(self) -> str:
        """This track's state as `stream.core.track_state` text (held frames are not part of it)."""
        counters = {"results": self.results, "skipped": self.skipped, "gaps": self.gaps, "late": self.late}
        return encode_track(self.reorder.next_seq, self.smoother, counters, self.segments.open)
