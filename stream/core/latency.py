"""Latency statistics: the one percentile definition every report uses (pure: stdlib + numpy).

`LatencyHistogram` is HDR-style: log-spaced buckets with a bounded relative error (1% by default)
over a wide range (1 us .. ~3 hours), constant memory however many values it takes, mergeable,
exact count/min/max. A percentile is nearest-rank (the smallest value with at least q% of the
values at or below it), reported as its bucket's upper edge clamped to the exact min and max, so
it never understates and is within `precision` of the exact nearest-rank value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["PERCENTILES", "LatencyHistogram"]

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class LatencyHistogram:
    """Counts of non-negative values (ms) in log-spaced buckets of relative width `precision`."""

    def __init__(self, *, lowest_ms: float = 0.001, highest_ms: float = 1e7, precision: float = 0.01) -> None:
        if not 0 < lowest_ms < highest_ms:
            raise ValueError(f"need 0 < lowest_ms < highest_ms, got {lowest_ms}, {highest_ms}")
        if not 0 < precision < 1:
            raise ValueError(f"precision must be in (0, 1), got {precision}")
        self.lowest_ms = lowest_ms
        self.highest_ms = highest_ms
        self.precision = precision
        self._log_ratio = math.log1p(precision)
        # bucket 0 holds everything <= lowest_ms; bucket i holds (lowest*r^(i-1), lowest*r^i]
        size = int(math.ceil(math.log(highest_ms / lowest_ms) / self._log_ratio)) + 2
        self.counts = np.zeros(size, dtype=np.int64)
        self.count = 0
        self.total_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = -math.inf

    def _index(self, values: np.ndarray) -> np.ndarray:
        clipped = np.clip(values, self.lowest_ms, self.highest_ms)
        idx = np.ceil(np.log(clipped / self.lowest_ms) / self._log_ratio - 1e-9).astype(np.int64)
        return np.clip(idx, 0, len(self.counts) - 1)

    def _upper_edge(self, index: int) -> float:
        return float(self.lowest_ms * math.exp(index * self._log_ratio))

    def record(self, value_ms: float) -> None:
        """One value: the same bucket `record_many` gives it, without numpy's per-call cost (a
        reader records every result one at a time)."""
        if not math.isfinite(value_ms):
            return
        value = max(value_ms, 0.0)
        clipped = min(max(value, self.lowest_ms), self.highest_ms)
        index = math.ceil(math.log(clipped / self.lowest_ms) / self._log_ratio - 1e-9)
        self.counts[min(max(index, 0), len(self.counts) - 1)] += 1
        self.count += 1
        self.total_ms += value
        self.min_ms = min(self.min_ms, value)
        self.max_ms = max(self.max_ms, value)

    def record_many(self, values_ms: Iterable[float] | np.ndarray) -> None:
        values = np.asarray(list(values_ms) if not isinstance(values_ms, np.ndarray) else values_ms, float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        values = np.maximum(values, 0.0)
        np.add.at(self.counts, self._index(values), 1)
        self.count += int(values.size)
        self.total_ms += float(values.sum())
        self.min_ms = min(self.min_ms, float(values.min()))
        self.max_ms = max(self.max_ms, float(values.max()))

    def merge(self, other: LatencyHistogram) -> None:
        if (other.lowest_ms, other.highest_ms, other.precision) != (
            self.lowest_ms,
            self.highest_ms,
            self.precision,
        ):
            raise ValueError("cannot merge histograms with different bucket layouts")
        self.counts += other.counts
        self.count += other.count
        self.total_ms += other.total_ms
        self.min_ms = min(self.min_ms, other.min_ms)
        self.max_ms = max(self.max_ms, other.max_ms)

    @property
    def mean_ms(self) -> float | None:
        return self.total_ms / self.count if self.count else None

    def percentile(self, q: float) -> float | None:
        """The value at percentile `q` (0..100), within `precision`; None when empty."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        if self.count == 0:
            return None
        if q >= 100:
            return self.max_ms
        rank = max(1, int(math.ceil(q / 100.0 * self.count)))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        return float(min(max(self._upper_edge(index), self.min_ms), self.max_ms))

    def summary(self) -> dict[str, float | int | None]:
        """count, mean, min, p50, p90, p99, p99.9 and max, in ms."""
        out: dict[str, float | int | None] = {"count": self.count, "mean_ms": self.mean_ms}
        out["min_ms"] = self.min_ms if self.count else None
        for q in PERCENTILES:
            out[f"p{q:g}_ms".replace(".", "_")] = self.percentile(q)
        out["max_ms"] = self.max_ms if self.count else None
        return out

    def cdf(self) -> tuple[list[float], list[float]]:
        """(value_ms, fraction of values <= value_ms) at every non-empty bucket."""
        nonzero = np.nonzero(self.counts)[0]
        if nonzero.size == 0:
            return [], []
        cumulative = np.cumsum(self.counts)[nonzero] / self.count
        values = [min(max(self._upper_edge(int(i)), self.min_ms), self.max_ms) for i in nonzero]
        return values, [float(f) for f in cumulative]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (sparse buckets) that `from_dict` restores exactly."""
        nonzero = np.nonzero(self.counts)[0]
        return {
            "lowest_ms": self.lowest_ms,
            "highest_ms": self.highest_ms,
            "precision": self.precision,
            "count": self.count,
            "total_ms": self.total_ms,
            "min_ms": self.min_ms if self.count else None,
            "max_ms": self.max_ms if self.count else None,
            "buckets": [[int(i), int(self.counts[i])] for i in nonzero],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        hist = cls(lowest_ms=data["lowest_ms"], highest_ms=data["highest_ms"], precision=data["precision"])
        for index, n in data["buckets"]:
            hist.counts[int(index)] += int(n)
        hist.count = int(data["count"])
        hist.total_ms = float(data["total_ms"])
        if hist.count:
            hist.min_ms = float(data["min_ms"])
            hist.max_ms = float(data["max_ms"])
        return hist
