"""Delivery accounting and rates for a replay run (pure: stdlib + numpy, no clock).

Latency percentiles come from `stream.core.latency.LatencyHistogram`, the one definition.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from stream.core.latency import LatencyHistogram

__all__ = [
    "Delivery",
    "ResultRow",
    "check_slo",
    "count_delivery",
    "per_second_series",
    "sustained_rate",
    "sustained_window",
    "top1_accuracy",
]


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
            hist = LatencyHistogram()
            hist.record_many(lat[mask])
            for q in (50, 90, 99):
                row[f"p{q}_ms"] = hist.percentile(q)
            row["max_ms"] = hist.max_ms
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
