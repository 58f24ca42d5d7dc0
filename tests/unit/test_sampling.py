"""Frame sampling (target fps / every Nth) and live-source drop policies."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.core.sampling import DropBuffer, FrameSampler


def test_every_nth_keeps_one_in_n() -> None:
    s = FrameSampler(every_nth=3)
    assert [s.keep(i * 33.3) for i in range(7)] == [True, False, False, True, False, False, True]


@given(src_fps=st.sampled_from([24.0, 25.0, 30.0, 60.0]), target=st.sampled_from([1.0, 5.0, 10.0, 12.5]))
def test_target_fps_rate_matches_over_a_minute(src_fps: float, target: float) -> None:
    s = FrameSampler(target_fps=target)
    kept = sum(s.keep(i * 1000.0 / src_fps) for i in range(int(60 * src_fps)))
    assert abs(kept - 60 * target) <= 1


def test_drop_oldest_keeps_the_newest_and_counts() -> None:
    b: DropBuffer[int] = DropBuffer(3, "drop_oldest")
    dropped = [b.put(i) for i in range(5)]
    assert dropped == [None, None, None, 0, 1] and b.dropped == 2
    assert b.take(10) == [2, 3, 4]


def test_drop_newest_keeps_the_oldest_and_counts() -> None:
    b: DropBuffer[int] = DropBuffer(3, "drop_newest")
    dropped = [b.put(i) for i in range(5)]
    assert dropped == [None, None, None, 3, 4] and b.dropped == 2
    assert b.take(10) == [0, 1, 2]


@given(n=st.integers(0, 50), cap=st.integers(1, 8), policy=st.sampled_from(["drop_oldest", "drop_newest"]))
def test_every_frame_is_either_kept_or_counted(n: int, cap: int, policy) -> None:
    b: DropBuffer[int] = DropBuffer(cap, policy)
    for i in range(n):
        b.put(i)
    assert len(b) <= cap and len(b) + b.dropped == n
