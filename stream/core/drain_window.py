"""How many frames a file source played flat out may keep on their way through the pipeline:
about `queue_s` worth of the pipeline's measured drain rate, so every stage stays busy while a
frame waits as little as it can (pure: the caller passes the time and its counts in).

A fixed mark queues as many frames whatever the pipeline's pace: 256 frames are ~1.8 s of waiting
before a frame is classified at 140 frames/s, all of it queueing. The drain rate is the frames
leaving the backlog per second: the frames published plus the backlog's decrease over an
interval of at least `min_interval_s` (one `RateMeter` count: published - backlog), smoothed
(EWMA). The window is ``ceil(rate * queue_s)`` clamped to ``[floor, high_water]``:

- `floor` keeps the stages busy when the rate says less, above all when the drain stalls: a
  rate of 0 must not shut the source out for good (frames then wait at the floor, as they
  waited at the mark);
- `high_water` is the hard bound (Redis memory), and the window until a rate is measured.
"""

from __future__ import annotations

import math

from stream.core.rates import RateMeter

__all__ = ["DrainWindow"]


class DrainWindow:
    """Feed it readings (`observe`); it answers the backlog a source may keep (`window`)."""

    def __init__(
        self,
        *,
        queue_s: float,
        floor: int,
        high_water: int,
        min_interval_s: float = 0.5,
        smoothing: float = 0.3,
    ) -> None:
        if queue_s <= 0:
            raise ValueError(f"queue_s must be > 0, got {queue_s}")
        if floor < 1:
            raise ValueError(f"floor must be >= 1, got {floor}")
        if high_water < 1:
            raise ValueError(f"high_water must be >= 1, got {high_water}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.queue_s = queue_s
        self.floor = floor
        self.high_water = high_water
        self.smoothing = smoothing
        self._meter = RateMeter(min_interval_s)
        self.rate: float | None = None  # smoothed frames/s leaving the backlog; None: not measured yet

    def observe(self, now_s: float, published: int, backlog: int) -> int:
        """Take one reading: the time, the frames published so far (a growing count) and the
        backlog now; answers the window. A drain that seems negative (the backlog grew by more
        than was published: someone else publishes too) counts as 0."""
        rated = self._meter.intervals
        drained = self._meter.update({"drained": published - backlog}, now_s).get("drained", 0.0)
        if self._meter.intervals != rated:
            self.rate = drained if self.rate is None else self.rate + self.smoothing * (drained - self.rate)
        return self.window

    @property
    def window(self) -> int:
        """The most frames to keep on their way: `high_water` until a rate is measured."""
        if self.rate is None:
            return self.high_water
        return min(self.high_water, max(self.floor, math.ceil(self.rate * self.queue_s)))
