"""Batching policy: batch sizes stay in bounds, FIFO order holds, nothing waits past max_wait_ms."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.batching import BatchBuffer, BatchPolicy


def test_full_batch_is_due_at_once_and_partial_after_max_wait() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchPolicy(max_batch_size=4, max_wait_ms=10))
    buf.add([1, 2, 3], now_ms=0)
    assert buf.take_ready(now_ms=5) == []
    assert buf.wait_ms(now_ms=5) == 5
    buf.add([4, 5], now_ms=6)
    assert buf.take_ready(now_ms=6) == [[1, 2, 3, 4]]
    assert buf.take_ready(now_ms=15) == []
    assert buf.take_ready(now_ms=16) == [[5]]
    assert buf.wait_ms(now_ms=16) is None


def test_policy_rejects_bad_values_naming_them() -> None:
    with pytest.raises(ValueError, match="max_batch_size must be >= 1, got 0"):
        BatchPolicy(max_batch_size=0, max_wait_ms=1)
    with pytest.raises(ValueError, match="max_wait_ms"):
        BatchPolicy(max_batch_size=1, max_wait_ms=-1)


@settings(max_examples=200, deadline=None)
@given(
    max_batch=st.integers(1, 16),
    max_wait=st.integers(0, 50),
    arrivals=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 20)), min_size=1, max_size=40),
)
def test_batches_bounded_fifo_and_never_late(max_batch: int, max_wait: int, arrivals) -> None:
    """Drive the buffer the way the infer loop does: wake at each arrival and at each due time."""
    buf: BatchBuffer[tuple[int, float]] = BatchBuffer(BatchPolicy(max_batch, max_wait))
    now = 0.0
    taken: list[tuple[int, float]] = []
    counter = 0

    def dispatch(at: float) -> None:
        for batch in buf.take_ready(at):
            assert 1 <= len(batch) <= max_batch
            for _, arrived in batch:
                assert at - arrived <= max_wait + 1e-9  # nobody waited longer than allowed
            taken.extend(batch)

    for gap, count in arrivals:
        # wake up at every due time before the next arrival
        while (w := buf.wait_ms(now)) is not None and now + w <= now + gap:
            due = now + w
            dispatch(due)
            gap -= due - now
            now = due
            if w == 0 and buf.wait_ms(now) == 0:
                continue
        now += gap
        items = [(counter + i, now) for i in range(count)]
        counter += count
        buf.add(items, now)
        dispatch(now)
    for batch in buf.take_all():
        assert 1 <= len(batch) <= max_batch
        taken.extend(batch)
    assert [i for i, _ in taken] == list(range(counter))  # FIFO, nothing lost or duplicated
    assert len(buf) == 0


@given(max_batch=st.integers(1, 300), n=st.integers(1, 300))
def test_padding_buckets_hold_every_batch_with_at_most_double_waste(max_batch: int, n: int) -> None:
    from stream.core.batching import batch_buckets, padded_size

    buckets = batch_buckets(max_batch)
    assert buckets[-1] == max_batch and buckets == sorted(set(buckets))
    assert len(buckets) <= max_batch.bit_length() + 1
    if n <= max_batch:
        size = padded_size(n, buckets)
        assert size in buckets and n <= size < 2 * n


def test_choose_batch_size_takes_the_smallest_size_about_as_fast_as_the_best() -> None:
    from stream.core.batching import choose_batch_size

    # measured shapes: a tiny model gains to 16, a large one is flat from 2 and falls off at 16
    assert choose_batch_size({1: 1536, 2: 2228, 4: 2662, 8: 3026, 16: 3627}) == 16
    assert choose_batch_size({1: 1538, 2: 2025, 4: 2258, 8: 3105, 16: 3143}) == 8
    assert choose_batch_size({1: 227, 2: 249, 4: 255, 8: 249, 16: 214}) == 2
    assert choose_batch_size({1: 227, 2: 249, 4: 255, 8: 249, 16: 214}, tolerance=0.0) == 4
    assert choose_batch_size({8: 10.0}) == 8
    with pytest.raises(ValueError, match="no measured rates"):
        choose_batch_size({})


@given(st.dictionaries(st.integers(1, 64), st.floats(0.1, 1e4), min_size=1), st.floats(0, 0.5))
def test_chosen_batch_size_is_measured_and_within_tolerance(rates: dict[int, float], tol: float) -> None:
    from stream.core.batching import choose_batch_size

    size = choose_batch_size(rates, tol)
    assert size in rates
    assert rates[size] >= (1 - tol) * max(rates.values())
    assert all(rates[s] < (1 - tol) * max(rates.values()) for s in rates if s < size)
