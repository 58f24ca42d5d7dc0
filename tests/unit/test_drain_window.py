"""DrainWindow: the backlog a file source may keep, from the pipeline's measured drain rate."""

from __future__ import annotations

import pytest

from stream.core.drain_window import DrainWindow


def _window(**kw: float) -> DrainWindow:
    return DrainWindow(**{"queue_s": 0.25, "floor": 48, "high_water": 256, **kw})  # type: ignore[arg-type]


def test_no_rate_measured_yet_keeps_the_high_water_mark() -> None:
    drain = _window()
    assert drain.observe(0.0, published=0, backlog=0) == 256  # one reading: no interval yet
    assert drain.observe(0.3, published=200, backlog=100) == 256  # shorter than an interval
    assert drain.rate is None


def test_the_rate_is_frames_published_plus_the_backlog_s_decrease() -> None:
    drain = _window(queue_s=0.5)
    drain.observe(10.0, published=1_000, backlog=250)
    # 1 s later: 300 more published, the backlog down by 100: 400 frames left it, 400 frames/s
    assert drain.observe(11.0, published=1_300, backlog=150) == 200  # 400/s x 0.5 s
    assert drain.rate == pytest.approx(400.0)


def test_the_rate_is_smoothed_over_intervals() -> None:
    drain = _window(queue_s=1.0, floor=1, smoothing=0.5)
    drain.observe(0.0, published=0, backlog=0)
    drain.observe(1.0, published=200, backlog=0)  # 200/s
    assert drain.observe(2.0, published=200, backlog=0) == 100  # a second with nothing: halfway down
    assert drain.observe(2.2, published=200, backlog=0) == 100  # too soon: the rate as it was


def test_the_window_is_clamped_to_floor_and_high_water() -> None:
    fast = _window()
    fast.observe(0.0, published=0, backlog=0)
    assert fast.observe(1.0, published=5_000, backlog=0) == 256  # 1,250 frames wanted: the bound
    slow = _window()
    slow.observe(0.0, published=0, backlog=0)
    assert slow.observe(1.0, published=40, backlog=0) == 48  # 10 frames wanted: the floor
    assert slow.observe(2.0, published=1_000, backlog=0) == 79  # 960/s, smoothed: 316/s x 0.25 s


def test_a_stalled_pipeline_leaves_the_floor_never_zero() -> None:
    drain = _window(smoothing=1.0)
    drain.observe(0.0, published=100, backlog=300)
    for t in range(1, 6):  # nothing leaves the backlog, nothing is published
        assert drain.observe(float(t), published=100, backlog=300) == 48
    assert drain.rate == 0.0


def test_someone_else_s_publishes_count_as_no_drain_not_a_negative_one() -> None:
    drain = _window(smoothing=1.0)
    drain.observe(0.0, published=0, backlog=0)
    assert drain.observe(1.0, published=0, backlog=200) == 48
    assert drain.rate == 0.0


@pytest.mark.parametrize(
    ("kw", "named"),
    [({"queue_s": 0}, "queue_s"), ({"floor": 0}, "floor"), ({"high_water": 0}, "high_water"),
     ({"smoothing": 0}, "smoothing")],
)  # fmt: skip
def test_bad_arguments_are_named(kw: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        _window(**kw)
