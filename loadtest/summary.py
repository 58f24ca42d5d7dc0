"""Build the JSON-able result of one replay run from what was sent and received (pure).

The dict this returns is what `loadtest replay --json` writes and `loadtest report` reads; its
top-level keys are documented in `RUN_KEYS`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from loadtest.stats import (
    ResultRow,
    check_slo,
    count_delivery,
    per_second_series,
    top1_accuracy,
)
from stream.core.latency import LatencyHistogram

__all__ = ["RUN_KEYS", "RUN_KIND", "summarize_run"]

RUN_KIND = "framestream-loadtest-run"
RUN_KEYS = (
    "kind",  # RUN_KIND
    "config",  # what was replayed, how, against what
    "delivery",  # sent, results, distinct, duplicates, dead_lettered, dropped, missing, lost, unexpected
    "throughput",  # offered_fps, fps (results), duration_s
    "latency",  # end-to-end: count, mean, min, p50, p90, p99, p99.9, max (ms)
    "latency_hist",  # the HDR-style histogram (for the CDF)
    "stages",  # per stage: the same percentiles; plus "unattributed_ms"
    "batch",  # mean and histogram {size: results}
    "accuracy",  # top1 and labelled (null when no labels)
    "series",  # per second: offered, results, p50/p90/p99/max, mean_batch
    "slo",  # objectives, failures, passed
)


def _rate(times_ms: Sequence[float]) -> float | None:
    if len(times_ms) < 2:
        return None
    span = max(times_ms) - min(times_ms)
    return (len(times_ms) - 1) / (span / 1000.0) if span > 0 else None


def summarize_run(
    *,
    config: Mapping[str, Any],
    sent: Mapping[str, int],
    sent_due_ms: Sequence[float],
    start_ms: float,
    received: Iterable[ResultRow],
    dead_lettered: int = 0,
    dropped: int = 0,
    slo: Mapping[str, float | None] | None = None,
) -> dict[str, Any]:
    """Everything a report needs, as plain JSON types.

    `received` holds every result that came back, duplicates included (the first arrival of a
    (source, seq) is the one measured). `slo` may name ``max_p99_ms``, ``min_fps`` and ``max_loss``.
    """
    all_rows = list(received)
    delivery = count_delivery(
        sent, ((r.source, r.seq) for r in all_rows), dead_lettered=dead_lettered, dropped=dropped
    )
    first: dict[tuple[str, int], ResultRow] = {}
    for row in all_rows:
        if 0 <= row.seq < sent.get(row.source, 0):
            first.setdefault((row.source, row.seq), row)
    rows = sorted(first.values(), key=lambda r: r.result_ms)

    e2e = LatencyHistogram()
    e2e.record_many([r.latency_ms for r in rows])
    stage_hists: dict[str, LatencyHistogram] = {}
    for row in rows:
        for stage, ms in row.stages_ms.items():
            stage_hists.setdefault(stage, LatencyHistogram()).record(ms)
    stages: dict[str, Any] = {name: h.summary() for name, h in stage_hists.items()}
    stage_sum = sum(h.mean_ms or 0.0 for h in stage_hists.values())
    unattributed = None if e2e.mean_ms is None or not stage_hists else e2e.mean_ms - stage_sum
    # time no stage stamped: waiting in a stream between stages, in a reorder buffer, clock skew
    between = LatencyHistogram()
    between.record_many([r.latency_ms - sum(r.stages_ms.values()) for r in rows if r.stages_ms])

    batches = Counter(r.batch_size for r in rows if r.batch_size is not None)
    accuracy, labelled = top1_accuracy(rows)
    fps = _rate([r.result_ms for r in rows])
    offered = _rate(list(sent_due_ms))
    latency = e2e.summary()
    objectives = {k: v for k, v in (slo or {}).items() if v is not None}
    failures = check_slo(
        p99_ms=latency["p99_ms"],  # type: ignore[arg-type]
        fps=fps,
        missing_fraction=delivery.missing_fraction,
        **objectives,  # type: ignore[arg-type]
    )
    end_ms = max([start_ms, *sent_due_ms, *(r.result_ms for r in rows)])
    return {
        "kind": RUN_KIND,
        "config": dict(config),
        "delivery": {**asdict(delivery), "missing_fraction": delivery.missing_fraction},
        "throughput": {"offered_fps": offered, "fps": fps, "duration_s": (end_ms - start_ms) / 1000.0},
        "latency": latency,
        "latency_hist": e2e.to_dict(),
        "stages": stages,
        "stage_breakdown": {
            "sum_of_stage_means_ms": stage_sum,
            "unattributed_ms": unattributed,
            "between_stages": between.summary(),
        },
        "batch": {
            # per batch, not per frame: a batch of 8 is one batch, though 8 results carry its size
            "mean": (sum(batches.values()) / sum(n / k for k, n in batches.items() if k > 0))
            if batches
            else None,
            "histogram": {str(k): n for k, n in sorted(batches.items())},  # frames per batch size
        },
        "accuracy": {"top1": accuracy, "labelled": labelled},
        "series": per_second_series(rows, sent_due_ms, start_ms),
        "slo": {"objectives": objectives, "failures": failures, "passed": not failures},
    }
