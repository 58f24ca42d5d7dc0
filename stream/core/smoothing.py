"""Temporal smoothing of class probabilities per source: EMA plus hysteresis.

The EMA of the probability vectors picks a leader (its argmax); the reported label changes to a
new leader only after that leader has led for `hysteresis_frames` consecutive frames, so one odd
frame never flips the label. Pure: feed frames in order (the reorder buffer's job).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LabelSmoother", "Smoothed"]


@dataclass(frozen=True)
class Smoothed:
    """What the smoother says after one frame."""

    index: int  # the reported (smoothed) class
    score: float  # its EMA probability
    leader: int  # the EMA's argmax this frame (may differ from `index` during hysteresis)
    changed: bool  # `index` differs from the previous frame's (True on the first frame)
    previous: int | None  # the reported class before this frame (None on the first frame)


class LabelSmoother:
    """EMA with weight `alpha` on the newest frame; label switches after `hysteresis_frames` leads."""

    def __init__(self, alpha: float, hysteresis_frames: int) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if hysteresis_frames < 1:
            raise ValueError(f"hysteresis_frames must be >= 1, got {hysteresis_frames}")
        self.alpha = alpha
        self.hysteresis_frames = hysteresis_frames
        self.ema: np.ndarray | None = None
        self.label: int | None = None
        self._candidate: int | None = None
        self._streak = 0
        self.frames = 0

    @property
    def candidate(self) -> int | None:
        """The leader waiting out its hysteresis (None when the leader is the label)."""
        return self._candidate

    @property
    def streak(self) -> int:
        """Consecutive frames `candidate` has led."""
        return self._streak

    def resume(
        self, ema: np.ndarray | None, label: int | None, candidate: int | None, streak: int, frames: int
    ) -> None:
        """Continue from a saved state (`stream.core.track_state`): the next `update` then gives
        exactly what it would have given in the smoother that state was saved from."""
        if ema is not None and ema.ndim != 1:
            raise ValueError(f"ema must be 1-D, got shape {ema.shape}")
        n = None if ema is None else ema.shape[0]
        for name, value in (("label", label), ("candidate", candidate)):
            if value is not None and (n is None or not 0 <= value < n):
                raise ValueError(f"{name} {value} is not a class index of a {n}-class ema")
        if streak < 0 or frames < 0:
            raise ValueError(f"streak and frames must be >= 0, got {streak}, {frames}")
        self.ema = None if ema is None else np.array(ema, dtype=np.float32)
        self.label, self._candidate, self._streak, self.frames = label, candidate, streak, frames

    def update(self, probs: np.ndarray) -> Smoothed:
        """Fold one frame's probabilities (1-D) into the state and report the smoothed label."""
        p = np.asarray(probs, dtype=np.float32).reshape(-1)
        if self.ema is None:
            self.ema = p.copy()
        else:
            if p.shape != self.ema.shape:
                raise ValueError(f"expected {self.ema.shape[0]} class scores, got {p.shape[0]}")
            self.ema += self.alpha * (p - self.ema)
        self.frames += 1
        leader = int(np.argmax(self.ema))
        previous = self.label
        if self.label is None:
            self.label = leader
        elif leader == self.label:
            self._candidate, self._streak = None, 0
        else:
            if leader == self._candidate:
                self._streak += 1
            else:
                self._candidate, self._streak = leader, 1
            if self._streak >= self.hysteresis_frames:
                self.label = leader
                self._candidate, self._streak = None, 0
        return Smoothed(
            index=self.label,
            score=float(self.ema[self.label]),
            leader=leader,
            changed=self.label != previous,
            previous=previous,
        )
