"""What a source is doing, as ``GET /v1/sources``, the metrics and the events stream report it. Pure.

Statuses: ``playing`` (frames arrive), ``reconnecting`` (a live source lost its stream, or has not
opened it yet, and tries again with backoff), ``stalled`` (a live source is connected but silent
for ``ingest.stall_after_s``; it reconnects), ``finished`` (a finite source ended, or the source was
removed) and ``failed`` (it cannot be played, with a reason; live sources never fail for being
unreachable).
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = [
    "FAILED",
    "FINISHED",
    "PLAYING",
    "RECONNECTING",
    "SOURCE_STATUS",
    "STALLED",
    "STATUSES",
    "FpsMeter",
    "frame_age_s",
    "status_change",
    "status_event",
]

PLAYING = "playing"
RECONNECTING = "reconnecting"
STALLED = "stalled"
FINISHED = "finished"
FAILED = "failed"
STATUSES = (PLAYING, RECONNECTING, STALLED, FINISHED, FAILED)
SOURCE_STATUS = "source_status"
"""`kind` (and `type`) of a status-change entry on the events stream."""


def status_change(previous: str | None, status: str) -> str | None:
    """The event a move from `previous` to `status` is worth: ``reconnecting``, ``stalled``,
    ``recovered`` (playing again after either) or ``failed``; None for no event (no change, a
    normal end: end-of-stream already says that, or the first report, `previous` None, unless it
    is a failure)."""
    if status == previous or status not in STATUSES:
        return None
    if previous is None:
        return FAILED if status == FAILED else None
    if status == PLAYING:
        return "recovered" if previous in (RECONNECTING, STALLED) else None
    if status in (RECONNECTING, STALLED, FAILED):
        return status
    return None


def status_event(
    source: str,
    change: str,
    status: str,
    previous: str | None,
    reason: str | None,
    reconnects: int,
    now_ms: float,
) -> dict[str, Any]:
    """The meta of an events-stream entry for a status change (see `stream.core.messages`)."""
    return {
        "kind": SOURCE_STATUS,
        "type": SOURCE_STATUS,
        "source": source,
        "change": change,
        "status": status,
        "previous": previous,
        "reason": reason,
        "reconnects": reconnects,
        "time_ms": now_ms,
    }


def frame_age_s(last_frame_ms: float | None, now_ms: float) -> float | None:
    """Seconds since the last frame (never negative: clocks of two hosts may differ a little)."""
    if last_frame_ms is None:
        return None
    return round(max(0.0, (now_ms - last_frame_ms) / 1000.0), 3)


class FpsMeter:
    """Frames per second over the last `window_s` seconds of `add(n, now_s)` calls."""

    def __init__(self, window_s: float = 5.0) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()

    def add(self, n: int, now_s: float) -> None:
        self._events.append((now_s, n))
        self._trim(now_s)

    def fps(self, now_s: float) -> float | None:
        """None until two moments are known (one publish tells no rate)."""
        self._trim(now_s)
        if not self._events:
            return None
        span = now_s - self._events[0][0]
        if span <= 0:
            return None
        # the first entry's frames arrived before the window's start: count only what came after
        return round(sum(n for _, n in list(self._events)[1:]) / span, 2)

    def _trim(self, now_s: float) -> None:
        while self._events and now_s - self._events[0][0] > self.window_s:
            self._events.popleft()
