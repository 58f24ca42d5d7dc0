"""When each replayed frame is due: open-loop send schedules (pure: no clock, no I/O).

A schedule is a list of due times, in milliseconds from the start of the run, decided before
anything is sent. The replayer publishes each frame when its time comes, however slowly the
pipeline answers; latency is then measured from the *due* time, so a slow pipeline cannot hide
its queueing by slowing the load down (no coordinated omission).

Paces:
- ``original``: the recording's own timestamps (times ``speed``, so ``speed=2`` plays twice as fast);
- ``fps``: a fixed rate per source, whatever the recording's timing;
- ``max``: every frame due at once; the replayer sends as fast as it can publish.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "PACES",
    "Pace",
    "RateSearch",
    "Scheduler",
    "Slot",
    "pass_offsets_ms",
    "source_slots",
]

PACES = ("original", "fps", "max")
PaceName = Literal["original", "fps", "max"]
_DEFAULT_FRAME_MS = 1000.0 / 30.0


@dataclass(frozen=True)
class Pace:
    """How fast one source plays: its recorded timing (times `speed`), a fixed `fps`, or `max`."""

    mode: PaceName = "original"
    speed: float = 1.0
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in PACES:
            raise ValueError(f"pace mode must be one of {PACES}, got {self.mode!r}")
        if not (self.speed > 0 and math.isfinite(self.speed)):
            raise ValueError(f"speed must be a positive number, got {self.speed}")
        if self.mode == "fps" and not (self.fps is not None and self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"pace 'fps' needs a positive fps, got {self.fps}")

    def describe(self) -> str:
        if self.mode == "fps":
            return f"{self.fps:g} fps per source"
        if self.mode == "max":
            return "as fast as possible"
        return "original timing" if self.speed == 1 else f"original timing x{self.speed:g}"


@dataclass(frozen=True, order=True)
class Slot:
    """One send: frame `frame` of source `source` is due at `due_ms` (from the start) as `seq`."""

    due_ms: float
    source: int
    seq: int
    frame: int = field(compare=False)
    loop: int = field(compare=False, default=0)


def _frame_interval_ms(timestamps_ms: Sequence[float]) -> float:
    """Median gap between recorded frames (30 fps when the recording cannot tell)."""
    gaps = sorted(b - a for a, b in zip(timestamps_ms, timestamps_ms[1:], strict=False) if b > a)
    return gaps[len(gaps) // 2] if gaps else _DEFAULT_FRAME_MS


def pass_offsets_ms(timestamps_ms: Sequence[float], pace: Pace) -> tuple[list[float], float]:
    """Due offsets of one pass over a recording, and the pass's period (where the next pass starts).

    Recorded timestamps that go backwards are clamped (a frame is never due before the one
    before it).
    """
    n = len(timestamps_ms)
    if n == 0:
        return [], 0.0
    if pace.mode == "max":
        return [0.0] * n, 0.0
    if pace.mode == "fps":
        assert pace.fps is not None
        step = 1000.0 / pace.fps
        return [i * step for i in range(n)], n * step
    first = timestamps_ms[0]
    offsets: list[float] = []
    last = 0.0
    for t in timestamps_ms:
        last = max(last, (t - first) / pace.speed)
        offsets.append(last)
    return offsets, last + _frame_interval_ms(timestamps_ms) / pace.speed


def source_slots(
    timestamps_ms: Sequence[float],
    pace: Pace,
    *,
    source: int = 0,
    duration_s: float | None = None,
    loops: int = 1,
    phase_ms: float = 0.0,
) -> Iterator[Slot]:
    """Every send of one source, in order: `loops` passes, or as many as fit in `duration_s`.

    With `duration_s`, passes repeat (looping the recording) and stop at the first frame due at
    or after `duration_s`; `loops` is then ignored. `phase_ms` delays the whole source, so M
    sources at the same fps do not all fire at the same instant.
    """
    if loops < 1:
        raise ValueError(f"loops must be >= 1, got {loops}")
    if duration_s is not None and duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    offsets, period = pass_offsets_ms(timestamps_ms, pace)
    if not offsets:
        return
    if duration_s is not None and period <= 0:
        raise ValueError("a duration needs a paced schedule: pace 'max' has no timing to loop on")
    end_ms = None if duration_s is None else duration_s * 1000.0
    seq = 0
    loop = 0
    while duration_s is not None or loop < loops:
        for frame, offset in enumerate(offsets):
            due = phase_ms + loop * period + offset
            if end_ms is not None and due >= end_ms + phase_ms:
                return
            yield Slot(due, source, seq, frame, loop)
            seq += 1
        loop += 1


class Scheduler:
    """Merges the slots of several sources and hands out those that are due.

    The replayer asks `take_due(now_ms)` (ms since the run started) and publishes what it gets;
    it never skips a slot, so when it falls behind it catches up, and the lateness is visible
    as latency measured from `Slot.due_ms`.
    """

    def __init__(self, sources: Sequence[Iterator[Slot]]) -> None:
        self._merged = heapq.merge(*sources)
        self._next: Slot | None = next(self._merged, None)
        self.taken = 0

    @property
    def done(self) -> bool:
        return self._next is None

    def next_due_ms(self) -> float | None:
        """Due time of the next slot, or None when every slot has been taken."""
        return None if self._next is None else self._next.due_ms

    def take_due(self, now_ms: float, limit: int = 256) -> list[Slot]:
        """Slots due at or before `now_ms`, oldest first, at most `limit`."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        out: list[Slot] = []
        while self._next is not None and self._next.due_ms <= now_ms and len(out) < limit:
            out.append(self._next)
            self._next = next(self._merged, None)
        self.taken += len(out)
        return out


@dataclass
class RateSearch:
    """Find the highest offered rate that holds an SLO, by stepping then bisecting.

    Rates go up by `factor` from `start` while the SLO holds; after the first failure the search
    bisects between the last pass and the first fail until they are within `resolution` (a
    fraction of the passing rate), or `max_steps` runs were spent. `integer=True` keeps rates whole
    (e.g. a number of sources).
    """

    start: float
    factor: float = 2.0
    resolution: float = 0.1
    max_steps: int = 8
    maximum: float = math.inf
    integer: bool = False
    passed: float | None = None
    failed: float | None = None
    tried: list[tuple[float, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.start <= 0:
            raise ValueError(f"start rate must be > 0, got {self.start}")
        if self.factor <= 1:
            raise ValueError(f"factor must be > 1, got {self.factor}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")

    def _round(self, rate: float) -> float:
        return float(max(1, round(rate))) if self.integer else rate

    def next_rate(self) -> float | None:
        """The next rate to run, or None when the search is over."""
        if len(self.tried) >= self.max_steps:
            return None
        if not self.tried:
            return self._round(min(self.start, self.maximum))
        if self.failed is None:
            assert self.passed is not None
            if self.passed >= self.maximum:
                return None
            return self._round(min(self.passed * self.factor, self.maximum))
        lo = self.passed if self.passed is not None else 0.0
        if self.failed - lo <= self.resolution * max(lo, 1e-9):
            return None
        mid = self._round((lo + self.failed) / 2)
        if mid <= lo or mid >= self.failed:
            return None
        return mid

    def record(self, rate: float, ok: bool) -> None:
        """Tell the search how the run at `rate` went."""
        self.tried.append((rate, ok))
        if ok:
            self.passed = rate if self.passed is None else max(self.passed, rate)
        else:
            self.failed = rate if self.failed is None else min(self.failed, rate)
