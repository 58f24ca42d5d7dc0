"""Comparing a shadow version with the active one frame by frame (stream.core.agreement)."""

from __future__ import annotations

import pytest

from stream.core.agreement import compare_versions


def test_only_frames_both_answered_count_and_disagreements_rank_by_frequency() -> None:
    active = {
        ("a", 0): "cat",
        ("a", 1): "cat",
        ("a", 2): "dog",
        ("a", 3): "dog",
        ("b", 0): "cat",
        ("b", 9): "x",
    }
    shadow = {
        ("a", 0): ("cat", 2.0),
        ("a", 1): ("lynx", 4.0),
        ("a", 2): ("wolf", 2.0),
        ("a", 3): ("wolf", 4.0),
        ("b", 0): ("lynx", 3.0),
        ("c", 0): ("cat", 1.0),  # no active result for it: not compared
    }
    got = compare_versions(active, shadow, active_version=1, shadow_version=2)
    assert (got.frames, got.agreed) == (5, 1)
    assert got.top1_agreement == pytest.approx(0.2)
    # ties in frequency: by label pair, so the order is stable
    assert got.disagreements == (("cat", "lynx", 2), ("dog", "wolf", 2))
    assert got.shadow_infer_ms == pytest.approx(3.0)
    assert got.as_dict()["disagreements"][0] == {"active": "cat", "shadow": "lynx", "frames": 2}


def test_nothing_in_common_is_no_agreement_figure_rather_than_zero() -> None:
    got = compare_versions({("a", 0): "cat"}, {("a", 1): ("cat", None)}, active_version=1, shadow_version=2)
    assert got.frames == 0 and got.top1_agreement is None and got.shadow_infer_ms is None
