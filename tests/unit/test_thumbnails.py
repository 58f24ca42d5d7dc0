"""The thumbnail throttle: at most one JPEG per source per interval, bounded in size."""

from __future__ import annotations

import pytest

from stream.core.thumbnails import ThumbnailThrottle, is_jpeg

JPEG = b"\xff\xd8\xff\xe0" + b"x" * 100


def test_one_thumbnail_per_source_per_interval() -> None:
    throttle = ThumbnailThrottle(1000, 10_000)
    taken = [t for t in range(0, 5000, 40) if throttle.take("cam", JPEG, float(t))]  # 25 frames/s for 5 s
    assert taken == [0, 1000, 2000, 3000, 4000]


def test_sources_are_throttled_apart() -> None:
    throttle = ThumbnailThrottle(1000, 10_000)
    assert throttle.take("a", JPEG, 0.0) and throttle.take("b", JPEG, 10.0)
    assert not throttle.take("a", JPEG, 500.0)
    throttle.forget("a")
    assert throttle.take("a", JPEG, 600.0)  # a stopped source starts afresh


def test_too_large_or_not_jpeg_is_never_kept_and_does_not_use_up_the_interval() -> None:
    throttle = ThumbnailThrottle(1000, 50)
    assert not throttle.take("cam", JPEG, 0.0)  # 104 bytes > 50
    assert not throttle.take("cam", b"\x89PNG....", 1.0)
    assert throttle.take("cam", JPEG[:40], 2.0)


def test_interval_zero_turns_thumbnails_off_and_bad_values_are_named() -> None:
    assert not ThumbnailThrottle(0, 10_000).take("cam", JPEG, 0.0)
    with pytest.raises(ValueError, match="-1"):
        ThumbnailThrottle(-1, 10)
    with pytest.raises(ValueError, match="max_bytes"):
        ThumbnailThrottle(1000, 0)


def test_is_jpeg_takes_bytes_and_views() -> None:
    assert is_jpeg(JPEG) and is_jpeg(memoryview(JPEG))
    assert not is_jpeg(b"") and not is_jpeg(b"\xff\xd8")
