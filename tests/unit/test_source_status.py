"""The pure rules of source status: which changes are events, recent frames/s, last-frame age."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.core.sources.status import STATUSES, FpsMeter, frame_age_s, status_change


@pytest.mark.parametrize(
    ("previous", "status", "change"),
    [
        ("playing", "reconnecting", "reconnecting"),
        ("playing", "stalled", "stalled"),
        ("stalled", "reconnecting", "reconnecting"),
        ("reconnecting", "playing", "recovered"),
        ("stalled", "playing", "recovered"),
        ("playing", "failed", "failed"),
        (None, "failed", "failed"),
        (None, "playing", None),  # the first report is not a change
        (None, "reconnecting", None),
        ("playing", "finished", None),  # end-of-stream says that already
        ("playing", "playing", None),
        ("playing", "bogus", None),
    ],
)
def test_which_moves_are_events(previous: str | None, status: str, change: str | None) -> None:
    assert status_change(previous, status) == change


@given(st.sampled_from([None, *STATUSES]), st.sampled_from(STATUSES))
def test_an_event_names_the_new_status_or_a_recovery(previous: str | None, status: str) -> None:
    change = status_change(previous, status)
    assert change in (None, status, "recovered")
    assert (change == "recovered") == (status == "playing" and previous in ("reconnecting", "stalled"))


def test_fps_counts_frames_after_the_window_start_and_forgets_old_ones() -> None:
    meter = FpsMeter(window_s=5.0)
    assert meter.fps(0.0) is None
    for i in range(11):  # 8 frames every 0.5 s = 16 frames/s
        meter.add(8, i * 0.5)
    assert meter.fps(5.0) == pytest.approx(16.0)
    assert meter.fps(8.0) == pytest.approx(4 * 8 / 5)  # silent for 3 s: falling
    assert meter.fps(20.0) is None  # nothing in the window
    with pytest.raises(ValueError, match="window_s"):
        FpsMeter(0)


def test_frame_age() -> None:
    assert frame_age_s(None, 1000.0) is None
    assert frame_age_s(1000.0, 3500.0) == 2.5
    assert frame_age_s(2000.0, 1990.0) == 0.0  # another host's clock a little ahead
