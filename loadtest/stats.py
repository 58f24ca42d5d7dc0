"""Latency statistics and delivery accounting for a replay run (pure: stdlib + numpy, no clock).

`LatencyHistogram` is HDR-style: log-spaced buckets with a bounded relative error (1% by default)
over a wide range (1 us .. ~3 hours), constant memory, mergeable, exact count/min/max. Percentiles
are reported as the bucket's upper edge clamped to the exact max, so they never understate.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PERCENTILES",
    "Delivery",
    "LatencyHistogram",
    "ResultRow",
    "check_slo",
    "count_delivery",
    "per_second_series",
    "sustained_rate",
    "sustained_window",
    "top1_accuracy",
]

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
        self.record_many([value_ms])

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


@dataclass(frozen=True)
class ResultRow:
    """What the load tester keeps of one result (times in epoch ms, as stamped by the pipeline)."""

    source: str
    seq: int
    due_ms: float
    result_ms: float
    latency_ms: float
    stages_ms: Mapping[str, float] = field(default_factory=dict)
    batch_size: int | None = None
    label: str | None = None
    truth: str | None = None


@dataclass(frozen=True)
class Delivery:
    """Frames sent vs results received. `lost` is loss nobody accounted for (silent loss)."""

    sent: int
    results: int
    distinct: int
    duplicates: int
    dead_lettered: int
    dropped: int
    missing: int
    lost: int
    unexpected: int

    @property
    def missing_fraction(self) -> float:
        return self.missing / self.sent if self.sent else 0.0


def count_delivery(
    sent: Mapping[str, int],
    received: Iterable[tuple[str, int]],
    *,
    dead_lettered: int = 0,
    dropped: int = 0,
) -> Delivery:
    """Account for every frame: `sent` maps source -> frames published (seq 0..n-1).

    `missing` = sent - distinct results; `lost` = missing minus frames the pipeline reported
    (dead-lettered or dropped by policy), never below 0; `unexpected` = results for a
    (source, seq) that was never sent.
    """
    seen: Counter[tuple[str, int]] = Counter(received)
    valid = {k: n for k, n in seen.items() if 0 <= k[1] < sent.get(k[0], 0)}
    total_sent = sum(sent.values())
    distinct = len(valid)
    results = sum(seen.values())
    missing = total_sent - distinct
    return Delivery(
        sent=total_sent,
        results=results,
        distinct=distinct,
        duplicates=sum(n - 1 for n in valid.values()),
        dead_lettered=dead_lettered,
        dropped=dropped,
        missing=missing,
        lost=max(0, missing - dead_lettered - dropped),
        unexpected=sum(n for k, n in seen.items() if k not in valid),
    )


def top1_accuracy(rows: Iterable[ResultRow]) -> tuple[float | None, int]:
    """Fraction of labelled results whose top-1 label equals the ground truth, and how many had one."""
    labelled = [(r.label, r.truth) for r in rows if r.truth is not None]
    if not labelled:
        return None, 0
    return sum(1 for label, truth in labelled if label == truth) / len(labelled), len(labelled)


def sustained_window(rows: Sequence[ResultRow], *, skip_fraction: float = 0.1) -> tuple[float, float] | None:
    """(start, end) epoch ms of the stretch while the whole pipeline was busy: from the result that
    ends the first `skip_fraction` of results (the pipeline has filled) to the moment ingest read
    its last frame (the latest `due_ms`: a file source's frames are stamped as they are read).
    None when it is empty (ingest finished before the pipeline filled: the run is too short)."""
    if len(rows) < 2:
        return None
    done = sorted(r.result_ms for r in rows)
    start = done[min(len(done) - 1, int(len(done) * skip_fraction))]
    end = max(r.due_ms for r in rows)
    return (start, end) if end > start else None


def sustained_rate(rows: Sequence[ResultRow], *, skip_fraction: float = 0.1) -> float | None:
    """Results per second inside `sustained_window`; None when there is none, or no result in it.

    Timing from the first to the last result instead overstates a short run by ~10%: ingest runs
    ahead of inference, so it reads the last frame well before the last result, and the tail
    drains with ingest idle and its CPU given to the other stages.
    """
    window = sustained_window(rows, skip_fraction=skip_fraction)
    if window is None:
        return None
    start, end = window
    inside = sum(1 for r in rows if start < r.result_ms <= end)
    return inside / ((end - start) / 1000.0) if inside else None


def per_second_series(
    rows: Sequence[ResultRow], sent_due_ms: Sequence[float], start_ms: float
) -> list[dict[str, float | int | None]]:
    """One row per second since `start_ms`: frames offered (by due time), results and their
    latency percentiles (by result time), mean batch size."""
    due = np.asarray(sent_due_ms, dtype=float)
    got = np.asarray([r.result_ms for r in rows], dtype=float)
    lat = np.asarray([r.latency_ms for r in rows], dtype=float)
    batch = np.asarray([r.batch_size if r.batch_size is not None else np.nan for r in rows], float)
    last = max([0.0, *((due - start_ms) / 1000.0), *((got - start_ms) / 1000.0)])
    seconds = int(math.floor(last)) + 1
    due_sec = np.clip(np.floor((due - start_ms) / 1000.0), 0, seconds - 1).astype(int)
    got_sec = np.clip(np.floor((got - start_ms) / 1000.0), 0, seconds - 1).astype(int)
    offered = np.bincount(due_sec, minlength=seconds) if due.size else np.zeros(seconds, int)
    series: list[dict[str, float | int | None]] = []
    for s in range(seconds):
        mask = got_sec == s
        row: dict[str, float | int | None] = {
            "second": s,
            "offered": int(offered[s]),
            "results": int(mask.sum()),
        }
        if mask.any():
            values = lat[mask]
            for q in (50, 90, 99):
                row[f"p{q}_ms"] = float(np.percentile(values, q))
            row["max_ms"] = float(values.max())
            b = batch[mask]
            row["mean_batch"] = float(np.nanmean(b)) if np.isfinite(b).any() else None
        else:
            row.update({"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "mean_batch": None})
        series.append(row)
    return series


def check_slo(
    *,
    p99_ms: float | None,
    fps: float | None,
    missing_fraction: float,
    max_p99_ms: float | None = None,
    min_fps: float | None = None,
    max_loss: float | None = None,
) -> list[str]:
    """Each violated objective as a sentence; an empty list means the run passed."""
    failures: list[str] = []
    if max_p99_ms is not None and (p99_ms is None or p99_ms > max_p99_ms):
        shown = "no results" if p99_ms is None else f"{p99_ms:.1f} ms"
        failures.append(f"p99 latency {shown} exceeds --p99-ms {max_p99_ms:g}")
    if min_fps is not None and (fps is None or fps < min_fps):
        shown = "no results" if fps is None else f"{fps:.1f}"
        failures.append(f"throughput {shown} fps is below --min-fps {min_fps:g}")
    if max_loss is not None and missing_fraction > max_loss:
        failures.append(f"{missing_fraction:.2%} of frames got no result, more than --max-loss {max_loss:g}")
    return failures
