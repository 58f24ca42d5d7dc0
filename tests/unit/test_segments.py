"""The segment builder: a segment opens with a smoothed label, closes when that label changes or
the source ends, carries seqs, capture times, frames and the mean score; its id depends on
(source, model, first seq) only, and a builder resumed from a saved track state (a failover)
closes exactly the segments the uninterrupted one closes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.segments import Segment, SegmentBuilder, segment_id
from stream.core.smoothing import LabelSmoother
from stream.core.track_state import decode_open_segment, decode_track, encode_track


def feed(builder: SegmentBuilder, frames: list[tuple[int, str, float]]) -> list[Segment]:
    closed = []
    for seq, label, score in frames:
        segment = builder.frame(seq, label, score, 1000.0 + 40 * seq)
        if segment is not None:
            closed.append(segment)
    return closed


def test_a_label_change_closes_the_segment_and_the_changing_frame_opens_the_next() -> None:
    builder = SegmentBuilder("cam", "m")
    closed = feed(builder, [(0, "cat", 0.5), (1, "cat", 0.7), (2, "cat", 0.9), (3, "dog", 0.6)])
    assert [c.to_meta() for c in closed] == [
        {
            "kind": "segment",
            "id": "cam/m/0",
            "source": "cam",
            "model": "m",
            "label": "cat",
            "first_seq": 0,
            "last_seq": 2,
            "start_ms": 1000.0,
            "end_ms": 1080.0,
            "frames": 3,
            "score": 0.7,
            "open": False,
            "closed_by": "label_change",
        }
    ]
    assert builder.open is not None and builder.open.open
    assert (builder.open.label, builder.open.first_seq, builder.open.frames) == ("dog", 3, 1)
    assert builder.open.to_meta()["open"] is True and builder.open.to_meta()["closed_by"] is None


def test_the_end_of_the_source_closes_the_open_segment_and_nothing_stays_open() -> None:
    builder = SegmentBuilder("cam", "m")
    feed(builder, [(0, "cat", 0.5), (1, "dog", 0.5), (2, "dog", 0.25)])
    last = builder.end()
    assert last is not None
    assert (last.label, last.first_seq, last.last_seq, last.frames, last.closed_by) == ("dog", 1, 2, 2, "eos")
    assert last.score == pytest.approx(0.375)
    assert builder.open is None and builder.end() is None  # a second end closes nothing


def test_lost_seqs_are_not_counted_as_frames_and_an_old_seq_is_not_taken_twice() -> None:
    builder = SegmentBuilder("cam", "m")
    feed(builder, [(0, "cat", 1.0), (3, "cat", 1.0), (3, "cat", 1.0), (2, "cat", 1.0), (7, "cat", 0.0)])
    segment = builder.end()
    assert segment is not None
    assert (segment.first_seq, segment.last_seq, segment.frames) == (0, 7, 3)
    assert segment.end_ms == 1000.0 + 40 * 7 and segment.score == pytest.approx(2 / 3)


def test_the_id_depends_on_source_model_and_first_seq_alone() -> None:
    a = feed(SegmentBuilder("cam", "m"), [(5, "cat", 0.1), (6, "dog", 0.1)])[0]
    b = feed(SegmentBuilder("cam", "m"), [(5, "cat", 0.9), (6, "cat", 0.9), (9, "tree", 0.9)])[0]
    assert a.id == b.id == segment_id("cam", "m", 5) == "cam/m/5"
    assert len({segment_id("cam", "m", 5), segment_id("cam", "m2", 5), segment_id("cam2", "m", 5),
                segment_id("cam", "m", 6)}) == 4  # fmt: skip


def test_only_an_open_segment_can_be_resumed() -> None:
    closed = feed(SegmentBuilder("cam", "m"), [(0, "cat", 0.1), (1, "dog", 0.1)])[0]
    with pytest.raises(ValueError, match="closed"):
        SegmentBuilder("cam", "m", closed)


def _probs(seed: int, n: int, classes: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):  # scenes of a few frames, noisy: labels change, hysteresis runs
        p = rng.random(classes).astype(np.float32) * 0.4
        p[(i // 7) % classes] += 1.0
        out.append(p / p.sum())
    return out


def _run(
    smoother: LabelSmoother, builder: SegmentBuilder, probs: list[np.ndarray], first: int
) -> list[Segment]:
    closed = []
    for i, p in enumerate(probs):
        s = smoother.update(p)
        segment = builder.frame(first + i, f"class-{s.index}", s.score, 40.0 * (first + i))
        if segment is not None:
            closed.append(segment)
    return closed


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(0, 60))
def test_a_builder_resumed_from_the_saved_track_state_closes_the_same_segments(seed: int, cut: int) -> None:
    probs = _probs(seed, 60)
    whole_builder = SegmentBuilder("cam", "m")
    whole = _run(LabelSmoother(0.3, 3), whole_builder, probs, 0)
    whole_last = whole_builder.end()

    smoother, builder = LabelSmoother(0.3, 3), SegmentBuilder("cam", "m")
    before = _run(smoother, builder, probs[:cut], 0)
    text = encode_track(cut, smoother, {"results": cut}, builder.open)  # what the commit saves
    saved = decode_track(text, classes=5, alpha=0.3, hysteresis_frames=3)
    assert saved.segment == builder.open
    assert decode_open_segment(text) == builder.open  # what the API reads
    resumed = SegmentBuilder("cam", "m", saved.segment)
    after = _run(saved.smoother, resumed, probs[cut:], cut)

    assert before + after == whole  # ids, labels, seqs, frames, scores: equal, bit for bit
    assert resumed.end() == whole_last
    chain = [*whole, whole_last]
    assert all(b.first_seq == a.last_seq + 1 for a, b in zip(chain, chain[1:], strict=False))  # no gap


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": ""}, "'label' must be a non-empty string"),
        ({"frames": 0}, "with 0 frames"),
        ({"last_seq": -1}, "'last_seq' must be an int >= 0"),
        ({"first_seq": 9}, "seqs 9..4"),
        ({"start_ms": "soon"}, "'start_ms' must be a finite number or null"),
        ({"score_sum": None}, "'score_sum' must be a number"),
        ({"score_sum": float("nan")}, "'score_sum' must be a finite number"),
    ],
)
def test_a_saved_segment_that_is_not_what_was_written_is_refused_with_the_reason(
    change: dict, message: str
) -> None:
    builder = SegmentBuilder("cam", "m")
    feed(builder, [(2, "cat", 0.5), (4, "cat", 0.5)])
    assert builder.open is not None
    smoother = LabelSmoother(0.3, 3)
    smoother.update(np.array([1.0, 0.0], dtype=np.float32))
    doc = json.loads(encode_track(5, smoother, {}, builder.open))
    doc["segment"] = {**doc["segment"], **change}
    with pytest.raises(ValueError, match=message):
        decode_track(json.dumps(doc), classes=2, alpha=0.3, hysteresis_frames=3)
    with pytest.raises(ValueError, match=message):
        decode_open_segment(json.dumps(doc))


def test_a_state_saved_without_a_segment_field_has_none_open() -> None:
    smoother = LabelSmoother(0.3, 3)
    smoother.update(np.array([1.0, 0.0], dtype=np.float32))
    doc = json.loads(encode_track(1, smoother, {"results": 1}))
    assert doc["segment"] is None
    del doc["segment"]
    assert decode_track(json.dumps(doc), classes=2, alpha=0.3, hysteresis_frames=3).segment is None
    assert decode_open_segment("17") is None  # an ended source's short form
