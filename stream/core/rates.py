"""Rates of growing counts (entries handled per stage, frames per source): the change of each
count over the time between two samples at least `min_interval_s` apart."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["RateMeter"]


class RateMeter:
    """Feed it counts with the time (`update`); it answers the last rates per name, in 1/s."""

    def __init__(self, min_interval_s: float = 0.9) -> None:
        if min_interval_s <= 0:
            raise ValueError(f"min_interval_s must be > 0, got {min_interval_s}")
        self.min_interval_s = min_interval_s
        self._last: tuple[float, dict[str, int]] | None = None
        self.rates: dict[str, float] = {}
        self.intervals = 0  # intervals rated so far: a caller can tell fresh rates from kept ones

    def update(self, counts: Mapping[str, int], now_s: float) -> dict[str, float]:
        """Rates since the previous sample taken (the first sample only records the counts; a
        sample closer than `min_interval_s` to the previous one keeps the rates as they were).
        A count that went down (a counter reset) rates 0, never negative."""
        if self._last is None:
            self._last = (now_s, dict(counts))
        elif now_s - self._last[0] >= self.min_interval_s:
            then, before = self._last
            span = now_s - then
            self.rates = {k: max(0.0, (n - before.get(k, n)) / span) for k, n in counts.items()}
            self._last = (now_s, dict(counts))
            self.intervals += 1
        return self.rates
