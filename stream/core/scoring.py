"""Class scores to probabilities and top-k, and what a usable scores message is (pure numpy).

Models differ in what they emit: probabilities, raw scores (logits), or independent per-class
logits (multi-label, sigmoid), over any number of classes, some with a background class at index 0.
`to_probabilities` turns any of them into scores over the named classes, so everything downstream
sees one shape: [N, classes without background].
"""

from __future__ import annotations

import numpy as np

from stream.core.codec import Message
from stream.core.messages import EOS, FRAME, SKIP

__all__ = ["above", "drop_background", "scores_problem", "sigmoid", "softmax", "to_probabilities", "top_k"]


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float32."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Elementwise logistic function in float32 (no overflow warnings for large |x|)."""
    x = np.asarray(logits, dtype=np.float32)
    return np.exp(-np.logaddexp(np.float32(0), -x)).astype(np.float32)


def drop_background(scores: np.ndarray, offset: int) -> np.ndarray:
    """[N, classes] scores without their first `offset` columns (1: a background class at index 0)."""
    if offset not in (0, 1):
        raise ValueError(f"background offset must be 0 or 1, got {offset}")
    if scores.shape[-1] - offset < 2:
        raise ValueError(f"scores have {scores.shape[-1]} columns; a classifier has at least 2 classes")
    return scores[..., offset:]


def to_probabilities(
    raw: np.ndarray, kind: str, *, background: int = 0, sigmoid_on: bool = True
) -> np.ndarray:
    """[N, classes] model output -> float32 [N, classes - background] scores.

    Logits get a softmax over all columns first (a background column takes its share of the mass),
    multi-label scores a sigmoid each (unless `sigmoid_on` is False: the model applied it), then the
    background column is dropped. Probabilities are not renormalized. Quantized outputs must be
    dequantized before (they are probabilities then).
    """
    if kind not in ("probabilities", "logits", "quantized", "multi-label"):
        raise ValueError(f"kind must be probabilities, logits, quantized or multi-label, got {kind!r}")
    x = np.asarray(raw, dtype=np.float32)
    if kind == "logits":
        x = softmax(x, axis=-1)
    elif kind == "multi-label" and sigmoid_on:
        x = sigmoid(x)
    return drop_background(x, background)


def above(scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(indices, values) of every score over `threshold` in a [C] row, best first (a multi-label
    model's labels of one frame)."""
    p = np.asarray(scores)
    idx = np.flatnonzero(p > threshold)
    idx = idx[np.argsort(-p[idx].astype(np.float64), kind="stable")]
    return idx, p[idx]


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, values) of the `k` largest per row, best first; ties go to the lower index.

    `probs` is [C] or [N, C]; results have the same leading shape with last dimension min(k, C).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    p = np.asarray(probs)
    k = min(k, p.shape[-1])
    if p.ndim == 1 and k < p.shape[0]:
        # one row (postprocess scores every frame alone): sort only the scores that can make the
        # top k, every one tied with the k-th included, 4x faster than sorting a thousand classes
        kth = np.partition(p, p.shape[0] - k)[p.shape[0] - k]
        candidates = np.flatnonzero(p >= kth)  # in index order; none when `kth` is NaN
        if candidates.size >= k:
            order = np.argsort(-p[candidates].astype(np.float64), kind="stable")[:k]
            idx = candidates[order]
            return idx, p[idx]
    # stable sort of the negated values keeps equal scores in index order
    idx = np.argsort(-p.astype(np.float64, copy=False), axis=-1, kind="stable")[..., :k]
    return idx, np.take_along_axis(p, idx, axis=-1)


def scores_problem(message: Message, model: str, classes: int) -> str | None:
    """Why `message` is not a scores entry postprocess can use for `model` (`classes` classes),
    or None when it is one: a frame with float scores [classes], an end-of-stream or a skip
    marker, each with a source and a seq >= 0."""
    meta = message.meta
    kind = meta.get("kind")
    if kind not in (FRAME, EOS, SKIP):
        return f"unknown message kind {kind!r}"
    if not isinstance(meta.get("source"), str) or not isinstance(meta.get("seq"), int) or meta["seq"] < 0:
        return "message has no valid source/seq"
    if meta.get("model") not in (None, model):
        return f"scores are for model {meta.get('model')!r}, this stage serves {model!r}"
    if kind == FRAME:
        a = message.array
        if a is None or a.ndim != 1 or a.shape[0] != classes or a.dtype.kind != "f":
            got = "no array" if a is None else f"{a.dtype} {a.shape}"
            return f"expected float scores [{classes}], got {got}"
    return None
