"""The replay schedule: open-loop due times, looping, merging sources, and the rate search."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.schedule import Pace, RateSearch, Scheduler, pass_offsets_ms, source_slots


def test_original_timing_keeps_recorded_gaps_and_speed_scales_them() -> None:
    ts = [1000.0, 1040.0, 1100.0, 1200.0]
    offsets, period = pass_offsets_ms(ts, Pace())
    assert offsets == [0.0, 40.0, 100.0, 200.0]
    assert period == pytest.approx(200.0 + 60.0)  # median gap starts the next pass
    fast, _ = pass_offsets_ms(ts, Pace(speed=2.0))
    assert fast == [0.0, 20.0, 50.0, 100.0]


def test_fixed_fps_ignores_recorded_timing() -> None:
    offsets, period = pass_offsets_ms([0.0, 1.0, 500.0], Pace("fps", fps=10))
    assert offsets == [0.0, 100.0, 200.0]
    assert period == 300.0


def test_max_pace_makes_everything_due_at_once() -> None:
    slots = list(source_slots([0, 33, 66], Pace("max"), loops=2))
    assert [s.due_ms for s in slots] == [0.0] * 6
    assert [s.seq for s in slots] == list(range(6))
    assert [s.frame for s in slots] == [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError, match="duration"):
        list(source_slots([0, 33], Pace("max"), duration_s=1))


def test_duration_loops_the_recording_until_the_end() -> None:
    slots = list(source_slots([0.0, 100.0, 200.0], Pace(), duration_s=1.0))
    assert len(slots) == 10  # 100 ms apart, 0..900 ms
    assert [s.frame for s in slots] == [0, 1, 2] * 3 + [0]
    assert slots[-1].due_ms == pytest.approx(900.0)
    assert slots[-1].loop == 3


def test_timestamps_going_backwards_never_make_a_frame_due_early() -> None:
    offsets, _ = pass_offsets_ms([0.0, 50.0, 20.0, 80.0], Pace())
    assert offsets == [0.0, 50.0, 50.0, 80.0]


def test_bad_paces_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="fps"):
        Pace("fps")
    with pytest.raises(ValueError, match="speed"):
        Pace(speed=0)
    with pytest.raises(ValueError, match="pace mode"):
        Pace("warp")  # type: ignore[arg-type]


def test_scheduler_hands_out_due_slots_in_time_order_and_never_skips() -> None:
    a = source_slots([0, 100, 200], Pace(), source=0)
    b = source_slots([0, 100, 200], Pace(), source=1, phase_ms=50)
    sched = Scheduler([a, b])
    assert [(s.source, s.seq) for s in sched.take_due(0)] == [(0, 0)]
    assert sched.next_due_ms() == 50
    # far behind schedule: everything due comes out at once, in order, nothing dropped
    late = sched.take_due(10_000)
    assert [s.due_ms for s in late] == [50, 100, 150, 200, 250]
    assert sched.done and sched.taken == 6


@given(
    gaps=st.lists(st.floats(0, 1000), min_size=1, max_size=30),
    sources=st.integers(1, 4),
    now=st.lists(st.floats(0, 40_000), min_size=1, max_size=10),
)
def test_scheduler_yields_every_slot_once_in_nondecreasing_order(
    gaps: list[float], sources: int, now: list[float]
) -> None:
    ts = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    sched = Scheduler([source_slots(ts, Pace(), source=i, loops=2) for i in range(sources)])
    out = []
    for t in sorted(now):
        got = sched.take_due(t, limit=1000)
        assert all(s.due_ms <= t for s in got)
        out += got
    out += sched.take_due(float("inf"), limit=10_000)
    assert [s.due_ms for s in out] == sorted(s.due_ms for s in out)
    assert sorted((s.source, s.seq) for s in out) == [
        (i, q) for i in range(sources) for q in range(2 * len(ts))
    ]


def test_rate_search_steps_up_then_bisects_to_the_highest_passing_rate() -> None:
    capacity = 37.0
    search = RateSearch(start=5, factor=2, resolution=0.05, max_steps=20)
    while (rate := search.next_rate()) is not None:
        search.record(rate, rate <= capacity)
    assert search.passed is not None and search.failed is not None
    assert search.passed <= capacity < search.failed
    assert search.failed - search.passed <= 0.05 * search.passed
    assert [r for r, _ in search.tried[:4]] == [5, 10, 20, 40]


def test_rate_search_in_whole_sources_stops_at_adjacent_counts() -> None:
    search = RateSearch(start=1, integer=True, max_steps=20)
    while (rate := search.next_rate()) is not None:
        search.record(rate, rate <= 6)
    assert (search.passed, search.failed) == (6, 7)
    assert all(float(r).is_integer() for r, _ in search.tried)


def test_rate_search_respects_max_steps_and_maximum() -> None:
    search = RateSearch(start=1, max_steps=3, maximum=3)
    rates = []
    while (rate := search.next_rate()) is not None:
        rates.append(rate)
        search.record(rate, True)
    assert rates == [1, 2, 3]
