"""Latency histograms, delivery accounting, accuracy, per-second series and SLO verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.stats import (
    ResultRow,
    check_slo,
    count_delivery,
    per_second_series,
    sustained_rate,
    top1_accuracy,
)
from stream.core.latency import LatencyHistogram


def test_histogram_percentiles_are_within_one_percent_of_exact() -> None:
    rng = np.random.default_rng(7)
    values = rng.lognormal(mean=3.0, sigma=1.0, size=20_000)
    hist = LatencyHistogram()
    hist.record_many(values)
    for q in (50, 90, 99, 99.9):
        exact = float(np.percentile(values, q, method="higher"))
        assert hist.percentile(q) == pytest.approx(exact, rel=0.011)
    assert hist.percentile(100) == values.max()
    assert hist.max_ms == values.max() and hist.min_ms == values.min()
    assert hist.count == 20_000
    assert hist.mean_ms == pytest.approx(values.mean())


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200))
def test_histogram_percentiles_never_understate_and_never_pass_the_max(values: list[float]) -> None:
    hist = LatencyHistogram()
    hist.record_many(values)
    ordered = sorted(values)
    for q in (1, 50, 99, 99.9):
        rank = max(1, int(np.ceil(q / 100 * len(values))))
        exact = ordered[rank - 1]
        got = hist.percentile(q)
        assert got is not None
        assert got <= max(values)
        assert got >= exact * (1 - 1e-9) or exact <= hist.lowest_ms


@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-10.0, max_value=1e9),
            st.sampled_from([float("nan"), float("inf"), -float("inf")]),
            st.sampled_from([0.0, 0.001, 1e7, 1.0100000000000001]),
        ),
        max_size=200,
    )
)
def test_histogram_records_one_value_at_a_time_as_in_bulk(values: list[float]) -> None:
    """Readers record each result alone: the same buckets, count, total, min and max as in bulk."""
    one, bulk = LatencyHistogram(), LatencyHistogram()
    for v in values:
        one.record(v)
    bulk.record_many(values)
    assert np.array_equal(one.counts, bulk.counts)
    assert (one.count, one.min_ms, one.max_ms) == (bulk.count, bulk.min_ms, bulk.max_ms)
    assert one.total_ms == pytest.approx(bulk.total_ms, rel=1e-9, abs=1e-9)


def test_histogram_round_trips_through_json_and_merges() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    a.record_many([1.0, 2.0, 3.0])
    b.record_many([100.0, 0.0])
    restored = LatencyHistogram.from_dict(a.to_dict())
    assert restored.summary() == a.summary()
    a.merge(b)
    assert a.count == 5 and a.max_ms == 100.0 and a.min_ms == 0.0
    values, fractions = a.cdf()
    assert fractions[-1] == 1.0 and values == sorted(values)
    assert LatencyHistogram().percentile(50) is None


def test_delivery_counts_duplicates_dead_letters_and_silent_loss() -> None:
    sent = {"a": 5, "b": 3}
    received = [("a", 0), ("a", 1), ("a", 1), ("a", 2), ("b", 0), ("b", 2), ("c", 0), ("a", 9)]
    d = count_delivery(sent, received, dead_lettered=1)
    assert d.sent == 8
    assert d.distinct == 5
    assert d.duplicates == 1
    assert d.unexpected == 2
    assert d.missing == 3  # a3, a4, b1
    assert d.lost == 2  # one of them is accounted for as a dead letter
    assert d.missing_fraction == pytest.approx(3 / 8)


def test_accuracy_counts_only_labelled_results() -> None:
    rows = [
        ResultRow("a", 0, 0, 1, 1, label="cat", truth="cat"),
        ResultRow("a", 1, 0, 1, 1, label="dog", truth="cat"),
        ResultRow("a", 2, 0, 1, 1, label="dog", truth=None),
    ]
    assert top1_accuracy(rows) == (0.5, 2)
    assert top1_accuracy(rows[2:]) == (None, 0)


def test_per_second_series_buckets_offered_by_due_time_and_results_by_arrival() -> None:
    start = 1_000_000.0
    due = [start + 100 * i for i in range(20)]  # 10 per second for 2 s
    rows = [
        ResultRow("s", i, d, d + 50 + (1000 if i >= 10 else 0), 50.0, batch_size=2) for i, d in enumerate(due)
    ]
    series = per_second_series(rows, due, start)
    assert [r["offered"] for r in series] == [10, 10, 0]
    assert [r["results"] for r in series] == [10, 0, 10]
    assert series[0]["p99_ms"] == pytest.approx(50.0)
    assert series[1]["p50_ms"] is None
    assert series[2]["mean_batch"] == 2.0


def test_slo_verdicts_name_each_failed_objective() -> None:
    ok = check_slo(p99_ms=80, fps=100, missing_fraction=0, max_p99_ms=100, min_fps=50, max_loss=0)
    assert ok == []
    bad = check_slo(p99_ms=180, fps=10, missing_fraction=0.1, max_p99_ms=100, min_fps=50, max_loss=0.01)
    assert len(bad) == 3
    assert "p99" in bad[0] and "--min-fps" in bad[1] and "--max-loss" in bad[2]
    assert check_slo(p99_ms=None, fps=None, missing_fraction=1.0, max_p99_ms=100) != []


def test_schedule_stats_and_summary_stay_pure() -> None:
    """The load tester's maths imports only the stdlib, numpy, the pure core and itself (no clock, no I/O)."""
    import ast
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "loadtest"
    for name in ("schedule.py", "stats.py", "summary.py"):
        text = (root / name).read_text()
        for node in ast.walk(ast.parse(text)):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            for mod in mods:
                top = mod.split(".")[0]
                assert (
                    top in sys.stdlib_module_names
                    or top == "numpy"
                    or mod.startswith("stream.core.")
                    or mod
                    in (
                        "loadtest.stats",
                        "loadtest.schedule",
                    )
                ), f"{name} imports {mod}"
                assert top not in ("time", "datetime", "asyncio"), f"{name} reads a clock via {mod}"


def _timeline(n: int, read_every_ms: float, busy_every_ms: float, drain_every_ms: float) -> list[ResultRow]:
    """Ingest reads a frame every `read_every_ms`; results come every `busy_every_ms` while it
    still reads (first one after a 50 ms fill), then every `drain_every_ms` (ingest idle)."""
    rows, t = [], 50.0
    last_read = (n - 1) * read_every_ms
    for i in range(n):
        rows.append(ResultRow(source="s", seq=i, due_ms=i * read_every_ms, result_ms=t, latency_ms=0.0))
        t += busy_every_ms if t < last_read else drain_every_ms
    return rows


def test_sustained_rate_ignores_the_fill_and_the_drain_after_ingest_finished() -> None:
    rows = _timeline(600, read_every_ms=1.0, busy_every_ms=2.0, drain_every_ms=1.0)  # 500/s, drain 1000/s
    first_to_last = (len(rows) - 1) / ((rows[-1].result_ms - rows[0].result_ms) / 1000.0)
    assert first_to_last > 550  # what timing first to last result would claim
    assert sustained_rate(rows) == pytest.approx(500.0, rel=0.01)


def test_sustained_rate_is_none_when_ingest_finished_before_the_pipeline_filled() -> None:
    rows = _timeline(50, read_every_ms=0.1, busy_every_ms=2.0, drain_every_ms=2.0)
    assert sustained_rate(rows) is None
    assert sustained_rate(rows[:1]) is None
