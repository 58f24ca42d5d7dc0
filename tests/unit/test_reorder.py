"""Reorder buffer: never emits out of order, never holds more than its bound, loses nothing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.reorder import ReorderBuffer


def test_holds_until_the_gap_fills_then_releases_the_run() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(max_frames=8, max_wait_ms=100)
    assert buf.push(1, "b", now_ms=0).ordered == []
    assert buf.push(2, "c", now_ms=1).ordered == []
    out = buf.push(0, "a", now_ms=2)
    assert out.ordered == [(0, "a"), (1, "b"), (2, "c")] and buf.held == 0


def test_gives_up_on_a_gap_after_max_wait() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(max_frames=8, max_wait_ms=100)
    buf.push(0, "a", now_ms=0)
    buf.push(2, "c", now_ms=10)
    assert buf.due_in_ms(50) == 60
    assert buf.expire(109).ordered == []
    out = buf.expire(110)
    assert out.ordered == [(2, "c")] and out.skipped == 1
    late = buf.push(1, "b", now_ms=120)
    assert late.late == [(1, "b")] and late.ordered == []


def test_frame_bound_forces_release() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_frames=2, max_wait_ms=10_000)
    buf.push(5, 5, 0)
    buf.push(6, 6, 0)
    out = buf.push(7, 7, 0)
    assert out.ordered == [(5, 5), (6, 6), (7, 7)] and out.skipped == 5 and buf.held == 0


def test_bad_bounds_are_named() -> None:
    with pytest.raises(ValueError, match="max_frames"):
        ReorderBuffer(max_frames=0, max_wait_ms=1)


@settings(max_examples=300, deadline=None)
@given(
    perm=st.permutations(list(range(30))),
    dups=st.lists(st.integers(0, 29), max_size=5),
    max_frames=st.integers(1, 10),
    max_wait=st.integers(0, 40),
    steps=st.lists(st.integers(0, 15), min_size=35, max_size=35),
)
def test_never_out_of_order_never_over_bound_nothing_lost(perm, dups, max_frames, max_wait, steps) -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_frames=max_frames, max_wait_ms=max_wait)
    ordered: list[int] = []
    late: list[int] = []
    now = 0.0
    for i, seq in enumerate(list(perm) + list(dups)):
        now += steps[i % len(steps)]
        out = buf.push(seq, seq, now)
        ordered += [s for s, _ in out.ordered]
        late += [s for s, _ in out.late]
        assert buf.held <= max_frames
        if (due := buf.due_in_ms(now)) is not None:
            assert due <= max_wait  # nothing is held longer than max_wait_ms
    out = buf.flush()
    ordered += [s for s, _ in out.ordered]
    assert all(a < b for a, b in zip(ordered, ordered[1:], strict=False)), ordered
    # every input comes out exactly once, either in order or flagged late
    assert sorted(ordered + late) == sorted(list(perm) + list(dups))
    assert set(ordered) | set(late) == set(range(30))
