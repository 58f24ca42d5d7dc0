"""Scores to probabilities and top-k: what a user reads as the answer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stream.core.scoring import above, drop_background, softmax, to_probabilities, top_k

logit_rows = arrays(np.float32, (3, 12), elements=st.floats(-50, 50, width=32))


@given(logit_rows)
def test_softmax_is_a_distribution_and_keeps_the_order(x):
    p = softmax(x)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    # the most probable class is a largest logit (up to float ties)
    best = np.take_along_axis(x, np.argmax(p, axis=1)[:, None], axis=1)[:, 0]
    assert (best >= x.max(axis=1) - 1e-6).all()


def test_softmax_survives_huge_logits():
    p = softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0]], atol=1e-7)


def test_background_column_is_dropped_so_index_i_is_imagenet_class_i():
    raw = np.zeros((2, 1001), np.float32)
    raw[:, 0] = 0.5  # background
    raw[:, 286] = 0.4  # file line 286 = class 285 (Egyptian cat) in 1000-class numbering
    probs = to_probabilities(raw, "probabilities", background=1)
    assert probs.shape == (2, 1000)
    assert (np.argmax(probs, axis=1) == 285).all()
    assert drop_background(raw[:, 1:], 0).shape == (2, 1000)


def test_logits_get_softmax_over_all_classes_before_the_background_goes():
    raw = np.zeros((1, 1001), np.float32)
    probs = to_probabilities(raw, "logits", background=1)
    np.testing.assert_allclose(probs, 1 / 1001, rtol=1e-5)
    np.testing.assert_allclose(to_probabilities(np.zeros((1, 12)), "logits").sum(), 1.0, rtol=1e-5)


def test_multi_label_scores_are_independent_sigmoids_and_above_lists_every_label_over_the_threshold():
    raw = np.array([[4.0, -4.0, 0.0, 2.0, -80.0]], np.float32)
    scores = to_probabilities(raw, "multi-label")
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-raw.astype(np.float64))), rtol=1e-6)
    idx, vals = above(scores[0], 0.5)
    assert idx.tolist() == [0, 3] and (vals > 0.5).all()
    assert above(scores[0], 0.99)[0].tolist() == []
    # the model applied the sigmoid itself: the scores pass as they are
    np.testing.assert_array_equal(to_probabilities(scores, "multi-label", sigmoid_on=False), scores)


def test_top_k_best_first_ties_to_lower_index():
    idx, val = top_k(np.array([[0.1, 0.3, 0.3, 0.2], [0.0, 0.0, 1.0, 0.0]]), 3)
    assert idx.tolist() == [[1, 2, 3], [2, 0, 1]]
    np.testing.assert_allclose(val[0], [0.3, 0.3, 0.2])
    idx1, _ = top_k(np.array([5, 1, 9], np.uint8), 10)  # k beyond C is clipped; uint8 does not wrap
    assert idx1.tolist() == [2, 0, 1]


@given(
    arrays(np.float32, st.integers(1, 40), elements=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, np.nan])),
    st.integers(1, 8),
)
def test_top_k_of_one_row_is_the_rows_best_first_with_ties_to_the_lower_index(row, k):
    """One frame's scores (postprocess's case) give what sorting every class gives: NaN last."""
    idx, val = top_k(row, k)
    want = np.argsort(-row.astype(np.float64), kind="stable")[: min(k, row.size)]
    assert idx.tolist() == want.tolist()
    np.testing.assert_array_equal(val, row[want])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: top_k(np.ones(3), 0), "k must be"),
        (lambda: drop_background(np.ones((1, 2)), 1), "at least 2"),
        (lambda: drop_background(np.ones((1, 10)), 2), "offset"),
        (lambda: to_probabilities(np.ones((1, 10)), "scores"), "kind"),
    ],
)
def test_bad_arguments_say_what_is_wrong(call, match):
    with pytest.raises(ValueError, match=match):
        call()
