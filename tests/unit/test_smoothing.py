"""Temporal smoothing: EMA + hysteresis never flips on a blip and follows a lasting change."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.smoothing import LabelSmoother


def one_hot(i: int, n: int = 5, p: float = 0.9) -> np.ndarray:
    v = np.full(n, (1 - p) / (n - 1), dtype=np.float32)
    v[i] = p
    return v


def test_single_odd_frame_does_not_flip_the_label() -> None:
    s = LabelSmoother(alpha=0.5, hysteresis_frames=3)
    for _ in range(5):
        s.update(one_hot(1))
    out = s.update(one_hot(2))
    assert out.index == 1 and not out.changed
    assert s.update(one_hot(1)).index == 1


def test_lasting_change_switches_after_k_leads_and_reports_previous() -> None:
    s = LabelSmoother(alpha=0.6, hysteresis_frames=3)
    first = s.update(one_hot(0))
    assert first.changed and first.previous is None and first.index == 0
    labels = [s.update(one_hot(4)) for _ in range(6)]
    changes = [o for o in labels if o.changed]
    assert len(changes) == 1 and changes[0].previous == 0 and changes[0].index == 4
    assert labels[-1].index == 4


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="alpha"):
        LabelSmoother(alpha=0, hysteresis_frames=1)
    with pytest.raises(ValueError, match="hysteresis_frames"):
        LabelSmoother(alpha=0.5, hysteresis_frames=0)


frames = st.lists(st.integers(0, 4), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(seq=frames, alpha=st.floats(0.05, 1.0), k=st.integers(1, 6))
def test_label_changes_only_to_a_leader_that_led_k_frames(seq: list[int], alpha: float, k: int) -> None:
    s = LabelSmoother(alpha=alpha, hysteresis_frames=k)
    leaders: list[int] = []
    prev_label = None
    for i, cls in enumerate(seq):
        out = s.update(one_hot(cls))
        leaders.append(out.leader)
        assert out.changed == (out.index != prev_label)
        if out.changed and prev_label is not None:
            # the new label led the EMA for the last k frames (never a one-frame blip)
            assert len(leaders) >= k and leaders[-k:] == [out.index] * k, (i, leaders)
        assert 0.0 <= out.score <= 1.0 + 1e-6
        prev_label = out.index


@given(cls=st.integers(0, 4), n=st.integers(1, 30), alpha=st.floats(0.05, 1.0), k=st.integers(1, 6))
def test_constant_input_keeps_its_label(cls: int, n: int, alpha: float, k: int) -> None:
    s = LabelSmoother(alpha=alpha, hysteresis_frames=k)
    outs = [s.update(one_hot(cls)) for _ in range(n)]
    assert all(o.index == cls for o in outs)
    assert sum(o.changed for o in outs) == 1


@given(seq=frames)
def test_alpha_one_k_one_is_plain_argmax(seq: list[int]) -> None:
    s = LabelSmoother(alpha=1.0, hysteresis_frames=1)
    assert [s.update(one_hot(c)).index for c in seq] == seq
