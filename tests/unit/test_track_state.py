"""A postprocess track saved and resumed: the resumed smoother goes on exactly as the original
would have (bit for bit), and state that is not what `encode_track` wrote is refused clearly."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.smoothing import LabelSmoother
from stream.core.track_state import decode_track, encode_track

CLASSES = 7


def frames(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):  # scenes of a few frames each, noisy, so labels change and hysteresis runs
        p = rng.random(CLASSES).astype(np.float32) * 0.3
        p[(i // 6) % CLASSES] += 1.0
        out.append(p / p.sum())
    return out


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000), cut=st.integers(0, 40), alpha=st.floats(0.05, 1.0), hyst=st.integers(1, 5)
)
def test_a_resumed_smoother_continues_exactly(seed: int, cut: int, alpha: float, hyst: int) -> None:
    data = frames(seed, 40)
    whole = LabelSmoother(alpha, hyst)
    expected = [whole.update(p) for p in data]

    first = LabelSmoother(alpha, hyst)
    for p in data[:cut]:
        first.update(p)
    text = encode_track(cut, first, {"results": cut, "skipped": 1, "gaps": 2, "late": 3})
    saved = decode_track(text.encode(), classes=CLASSES, alpha=alpha, hysteresis_frames=hyst)
    assert saved.next_seq == cut and saved.counters == {"results": cut, "skipped": 1, "gaps": 2, "late": 3}
    resumed = [saved.smoother.update(p) for p in data[cut:]]
    assert resumed == expected[cut:]  # labels, scores (float equality), leaders, changes


def test_a_fresh_track_saves_its_next_seq_alone_and_a_used_one_its_ema() -> None:
    text = encode_track(12, LabelSmoother(0.3, 3), {"results": 0})
    assert text == "12"  # an ended source: what a re-added one continues from, nothing else
    saved = decode_track(text, classes=1000, alpha=0.3, hysteresis_frames=3)
    assert saved.smoother.ema is None and saved.smoother.label is None and saved.next_seq == 12
    assert saved.counters == {"results": 0, "skipped": 0, "gaps": 0, "late": 0}
    assert json.loads(encode_track(12, LabelSmoother(0.3, 3), {"gaps": 1}))["gaps"] == 1
    s = LabelSmoother(0.3, 3)
    s.update(np.full(1000, 0.001, dtype=np.float32))
    assert len(encode_track(5, s, {})) < 5_600  # 1,000 float32 in base64 plus a few fields


def _doc(**changes: object) -> str:
    s = LabelSmoother(0.3, 3)
    s.update(np.eye(CLASSES, dtype=np.float32)[2])
    doc = json.loads(encode_track(3, s, {}))
    doc.update(changes)
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ("-3", "next seq must be >= 0"),
        ("true", "JSON object"),
        (_doc(v=2), "version 2"),
        (_doc(next_seq=-1), "'next_seq' must be an int >= 0"),
        (_doc(streak="3"), "'streak' must be an int >= 0"),
        (_doc(label=True), "'label' must be an int or null"),
        (_doc(label=CLASSES), f"label {CLASSES} is not a class index"),
        (_doc(ema="%%%"), "not base64"),
        (_doc(ema=base64.b64encode(b"\0" * 8).decode()), "expected 28"),
        (_doc(ema=base64.b64encode(np.full(CLASSES, np.nan, "<f4").tobytes()).decode()), "non-finite"),
        (_doc(ema=None, label=1), "label 1 is not a class index of a None-class"),
    ],
)
def test_state_that_is_not_what_was_written_is_refused_with_the_reason(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_track(raw, classes=CLASSES, alpha=0.3, hysteresis_frames=3)
