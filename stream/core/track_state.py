"""What postprocess saves of one (source, model) so another replica resumes it exactly (pure).

Only what is needed to resume: the reorder buffer's next seq (frames it held are not acked, so
they come back by redelivery and are not saved), the smoother's state (its EMA as little-endian
float32 bytes in base64: bit-exact, ~5.4 KB for 1,000 classes; label, hysteresis candidate and
streak, frame count), the track's counters and its open segment (`stream.core.segments`: the
new owner continues it, so the segment closed later is the one a run without faults closes).
JSON, never pickle: the bytes come from Redis.
`decode_track` checks every field and raises `ValueError` naming what is wrong.

A track with nothing but its next seq (an ended source: its end-of-stream restarted the smoother
and the counters) is saved as that number alone, e.g. ``"241"``: all a re-added source needs to
continue its seq, a few bytes instead of ~5.4 KB for every source that ever played.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.core.segments import Segment
from stream.core.smoothing import LabelSmoother

__all__ = ["COUNTERS", "SavedTrack", "decode_open_segment", "decode_track", "encode_track"]

VERSION = 1
COUNTERS = ("results", "skipped", "gaps", "late")
"""The per-track counters an end-of-stream reports."""


@dataclass(frozen=True)
class SavedTrack:
    """A decoded track state: the reorder buffer's next seq, a smoother, the counters, the open
    segment (None: none open)."""

    next_seq: int
    smoother: LabelSmoother
    counters: dict[str, int]
    segment: Segment | None = None


def encode_track(
    next_seq: int, smoother: LabelSmoother, counters: dict[str, int], segment: Segment | None = None
) -> str:
    """The JSON text of one track's state (its next seq alone when that is all it holds)."""
    if _fresh(smoother) and segment is None and not any(counters.get(k, 0) for k in COUNTERS):
        return str(next_seq)
    ema = smoother.ema
    doc: dict[str, Any] = {
        "v": VERSION,
        "next_seq": next_seq,
        "ema": None if ema is None else base64.b64encode(ema.astype("<f4").tobytes()).decode("ascii"),
        "label": smoother.label,
        "candidate": smoother.candidate,
        "streak": smoother.streak,
        "frames": smoother.frames,
        **{k: counters.get(k, 0) for k in COUNTERS},
        "segment": None if segment is None else segment.to_state(),
    }
    return json.dumps(doc, separators=(",", ":"))


def decode_track(raw: bytes | str, *, classes: int, alpha: float, hysteresis_frames: int) -> SavedTrack:
    """The state `encode_track` wrote, for a model with `classes` classes; ValueError if it is
    not one (wrong JSON, types, version, EMA size, or values out of range)."""
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"track state is not JSON: {e}") from e
    if isinstance(doc, int) and not isinstance(doc, bool):
        if doc < 0:
            raise ValueError(f"track state next seq must be >= 0, got {doc}")
        return SavedTrack(doc, LabelSmoother(alpha, hysteresis_frames), dict.fromkeys(COUNTERS, 0))
    if not isinstance(doc, dict):
        raise ValueError(f"track state must be a JSON object, got {type(doc).__name__}")
    if doc.get("v") != VERSION:
        raise ValueError(f"track state version {doc.get('v')!r}, this code reads {VERSION}")
    ints: dict[str, int] = {}
    for name in ("next_seq", "streak", "frames", *COUNTERS):
        value = doc.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"track state field {name!r} must be an int >= 0, got {value!r}")
        ints[name] = value
    for name in ("label", "candidate"):
        value = doc.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"track state field {name!r} must be an int or null, got {value!r}")
    ema = _decode_ema(doc.get("ema"), classes)
    smoother = LabelSmoother(alpha, hysteresis_frames)
    smoother.resume(ema, doc.get("label"), doc.get("candidate"), ints["streak"], ints["frames"])
    segment = _decode_segment(doc.get("segment"))
    return SavedTrack(ints["next_seq"], smoother, {k: ints[k] for k in COUNTERS}, segment)


def decode_open_segment(raw: bytes | str) -> Segment | None:
    """Only the open segment of a saved track state (what a reader of segments needs, without the
    model's class count); None when it has none. ValueError when the state does not decode."""
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"track state is not JSON: {e}") from e
    return _decode_segment(doc.get("segment")) if isinstance(doc, dict) else None


def _decode_segment(raw: object) -> Segment | None:
    """A state without the field (written before segments existed) has no open segment."""
    return None if raw is None else Segment.from_state(raw)


def _fresh(smoother: LabelSmoother) -> bool:
    """Whether `smoother` has seen nothing (as after an end-of-stream restarted it)."""
    return (
        smoother.ema is None
        and smoother.label is None
        and smoother.candidate is None
        and (smoother.streak == 0 and smoother.frames == 0)
    )


def _decode_ema(raw: object, classes: int) -> np.ndarray | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError(f"track state field 'ema' must be base64 text or null, got {type(raw).__name__}")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"track state field 'ema' is not base64: {e}") from e
    if len(data) != 4 * classes:
        raise ValueError(
            f"track state 'ema' has {len(data)} bytes, expected {4 * classes} ({classes} float32)"
        )
    ema = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(ema)):
        raise ValueError("track state 'ema' holds non-finite values")
    return ema
