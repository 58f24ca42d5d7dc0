"""Class scores to probabilities and top-k, and what a usable scores message is (pure numpy).

Models differ in what they emit: probabilities or raw scores (logits), over 1000 ImageNet classes or
1001 with a background class at index 0. `to_probabilities` turns any of them into probabilities
over the 1000 classes, so everything downstream sees one shape.
"""

from __future__ import annotations

import numpy as np

from stream.core.codec import Message
from stream.core.messages import EOS, FRAME, SKIP

__all__ = ["drop_background", "scores_problem", "softmax", "to_probabilities", "top_k"]


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float32."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def drop_background(scores: np.ndarray, classes: int) -> np.ndarray:
    """The 1000 ImageNet columns of [N, classes] scores (drops column 0 of 1001-class models)."""
    if classes not in (1000, 1001):
        raise ValueError(f"classes must be 1000 or 1001, got {classes}")
    if scores.shape[-1] != classes:
        raise ValueError(f"scores have {scores.shape[-1]} columns, expected {classes}")
    return scores[..., classes - 1000 :]


def to_probabilities(raw: np.ndarray, classes: int, kind: str) -> np.ndarray:
    """[N, classes] model output -> float32 [N, 1000] probabilities.

    Logits get a softmax over all `classes` first (the background column takes its share of the
    mass), then the background column is dropped. Probabilities are not renormalized.
    """
    if kind not in ("probabilities", "logits"):
        raise ValueError(f"kind must be 'probabilities' or 'logits', got {kind!r}")
    x = np.asarray(raw, dtype=np.float32)
    if kind == "logits":
        x = softmax(x, axis=-1)
    return drop_background(x, classes)


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, values) of the `k` largest per row, best first; ties go to the lower index.

    `probs` is [C] or [N, C]; results have the same leading shape with last dimension min(k, C).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    p = np.asarray(probs)
    k = min(k, p.shape[-1])
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
