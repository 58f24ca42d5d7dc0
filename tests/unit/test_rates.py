"""RateMeter: counts per second between samples (the runner's live view and the console)."""

from __future__ import annotations

import pytest

from stream.core.rates import RateMeter


def test_rates_are_the_change_over_the_time_between_samples() -> None:
    meter = RateMeter(min_interval_s=0.9)
    assert meter.update({"infer": 100}, 10.0) == {}  # one sample: no rate yet
    assert meter.update({"infer": 150}, 10.5) == {}  # too close: wait for a full interval
    assert meter.update({"infer": 300}, 12.0) == {"infer": 100.0}
    assert meter.update({"infer": 300}, 13.0) == {"infer": 0.0}
    assert meter.intervals == 2  # the sample 0.5 s after the first rated nothing


def test_a_counter_that_went_down_or_appeared_rates_zero() -> None:
    meter = RateMeter()
    meter.update({"a": 500}, 0.0)
    assert meter.update({"a": 10, "b": 70}, 1.0) == {"a": 0.0, "b": 0.0}
    assert meter.update({"a": 20, "b": 80}, 2.0) == {"a": 10.0, "b": 10.0}


def test_bad_interval_is_named() -> None:
    with pytest.raises(ValueError, match="0"):
        RateMeter(0)
