"""Segments: "label L from t1 to t2" per (source, model), built from the smoothed labels (pure).

A segment is a run of consecutive smoothed results (`stream.core.smoothing`) with one label. It
opens at the first frame with that label and is closed when the smoothed label changes
(``label_change``: the frame with the new label opens the next segment) or the source ends
(``eos``). It carries its first and last seq, the capture times of those frames, how many frames
it took (frames the smoother took: late frames and lost seqs are not counted, so ``frames`` can
be less than ``last_seq - first_seq + 1``) and the mean of the smoothed label's score over them.

Its id is derived from (source, model, first seq) alone (`segment_id`), so a segment written
again after a failover (the new owner resumes the open segment from the saved state) has the
same id: sinks use it as the idempotency key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from stream.core.messages import SEGMENT

__all__ = ["CLOSED_BY", "ClosedBy", "Segment", "SegmentBuilder", "segment_id"]

ClosedBy = Literal["label_change", "eos"]
CLOSED_BY: tuple[ClosedBy, ...] = ("label_change", "eos")


def segment_id(source: str, model: str, first_seq: int) -> str:
    """The id of the segment of `source` and `model` that starts at `first_seq`:
    ``<source>/<model>/<first_seq>`` (source ids and model names hold no ``/``)."""
    return f"{source}/{model}/{first_seq}"


@dataclass(frozen=True)
class Segment:
    """One segment, open (``closed_by`` None) or closed."""

    source: str
    model: str
    label: str
    first_seq: int
    last_seq: int
    start_ms: float | None  # capture time of the first frame
    end_ms: float | None  # capture time of the last frame
    frames: int
    score_sum: float  # sum of the smoothed label's score over the frames (mean: `score`)
    closed_by: ClosedBy | None = None

    @property
    def id(self) -> str:
        return segment_id(self.source, self.model, self.first_seq)

    @property
    def open(self) -> bool:
        return self.closed_by is None

    @property
    def score(self) -> float:
        """The mean smoothed score of the segment's label over its frames."""
        return self.score_sum / self.frames

    def to_meta(self) -> dict[str, Any]:
        """The message a user sees (``fs:{p}:segments``, the API, ``run --segments``)."""
        return {
            "kind": SEGMENT,
            "id": self.id,
            "source": self.source,
            "model": self.model,
            "label": self.label,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "frames": self.frames,
            "score": round(self.score, 5),
            "open": self.open,
            "closed_by": self.closed_by,
        }

    def to_state(self) -> dict[str, Any]:
        """What postprocess saves of its open segment (`from_state` reads it back exactly: a JSON
        float round-trips bit for bit)."""
        return {
            "source": self.source,
            "model": self.model,
            "label": self.label,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "frames": self.frames,
            "score_sum": self.score_sum,
        }

    @classmethod
    def from_state(cls, doc: object) -> Segment:
        """The open segment `to_state` wrote; ValueError naming the field that is wrong."""
        if not isinstance(doc, Mapping):
            raise ValueError(f"segment state must be an object, got {type(doc).__name__}")
        source, model, label = (_text(doc, name) for name in ("source", "model", "label"))
        first_seq, last_seq, frames = (_count(doc, name) for name in ("first_seq", "last_seq", "frames"))
        if last_seq < first_seq or frames < 1:
            raise ValueError(f"segment state seqs {first_seq}..{last_seq} with {frames} frames")
        start_ms, end_ms = (_time(doc, name) for name in ("start_ms", "end_ms"))
        score_sum = _time(doc, "score_sum")
        if score_sum is None:
            raise ValueError("segment state field 'score_sum' must be a number, got None")
        return cls(source, model, label, first_seq, last_seq, start_ms, end_ms, frames, score_sum)


def _text(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"segment state field {name!r} must be a non-empty string, got {value!r}")
    return value


def _count(doc: Mapping[str, Any], name: str) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"segment state field {name!r} must be an int >= 0, got {value!r}")
    return value


def _time(doc: Mapping[str, Any], name: str) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"segment state field {name!r} must be a finite number or null, got {value!r}")
    return float(value)


class SegmentBuilder:
    """Follows one (source, model)'s smoothed labels, frame by frame in seq order, and says when a
    segment closes. `open` is the segment in progress (None before the first frame and after the
    end); resume one by passing it in."""

    def __init__(self, source: str, model: str, open_segment: Segment | None = None) -> None:
        if open_segment is not None and not open_segment.open:
            raise ValueError(f"segment {open_segment.id} is closed; only an open one can be resumed")
        self.source = source
        self.model = model
        self.open = open_segment

    def frame(self, seq: int, label: str, score: float, capture_ms: float | None) -> Segment | None:
        """Take one smoothed frame: `label` and its smoothed `score`. Returns the segment this
        frame closed (the label changed), else None. A frame at or before the open segment's last
        seq is not taken (the reorder buffer never releases one; a repeat must not count twice)."""
        current = self.open
        if current is not None and seq <= current.last_seq:
            return None
        if current is not None and current.label == label:
            self.open = replace(
                current, last_seq=seq, end_ms=capture_ms, frames=current.frames + 1,
                score_sum=current.score_sum + score,
            )  # fmt: skip
            return None
        self.open = Segment(self.source, self.model, label, seq, seq, capture_ms, capture_ms, 1, score)
        return None if current is None else replace(current, closed_by="label_change")

    def end(self) -> Segment | None:
        """The source ended: the open segment, closed (None when there was none)."""
        current, self.open = self.open, None
        return None if current is None else replace(current, closed_by="eos")
