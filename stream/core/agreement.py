"""How far a shadow version agrees with the active one, frame by frame (pure).

The active version's results and the shadow's scores are matched by (source, seq): only frames
both answered are compared, each once (a duplicate result, redelivered, counts once). Top-1
agreement is the share of those frames where both named the same top label; the most frequent
disagreements are (active label, shadow label) pairs; the cost is the shadow's mean inference
time per frame, beside the active version's when its results carry it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Agreement", "FrameKey", "compare_versions"]

FrameKey = tuple[str, int]
"""(source, seq): one frame."""


@dataclass(frozen=True)
class Agreement:
    """A shadow version compared with the active one over the frames both answered."""

    active_version: int
    shadow_version: int
    frames: int
    agreed: int
    disagreements: tuple[tuple[str, str, int], ...]
    """(active label, shadow label, frames), most frequent first."""
    shadow_infer_ms: float | None
    """The shadow's mean inference time per frame (its CPU cost), over the frames compared."""

    @property
    def top1_agreement(self) -> float | None:
        return self.agreed / self.frames if self.frames else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "active_version": self.active_version,
            "shadow_version": self.shadow_version,
            "frames": self.frames,
            "agreed": self.agreed,
            "top1_agreement": self.top1_agreement,
            "disagreements": [{"active": a, "shadow": s, "frames": n} for a, s, n in self.disagreements],
            "shadow_infer_ms": self.shadow_infer_ms,
        }


def compare_versions(
    active: Mapping[FrameKey, str],
    shadow: Mapping[FrameKey, tuple[str, float | None]],
    *,
    active_version: int,
    shadow_version: int,
    top: int = 5,
) -> Agreement:
    """`active`: each frame's top-1 label by the active version; `shadow`: each frame's top-1
    label and inference ms by the shadow version. Frames only one of them answered are left out."""
    both = [k for k in active if k in shadow]
    pairs: Counter[tuple[str, str]] = Counter()
    agreed = 0
    costs: list[float] = []
    for key in both:
        mine, (theirs, ms) = active[key], shadow[key]
        if mine == theirs:
            agreed += 1
        else:
            pairs[(mine, theirs)] += 1
        if ms is not None:
            costs.append(ms)
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, top)]
    return Agreement(
        active_version=active_version,
        shadow_version=shadow_version,
        frames=len(both),
        agreed=agreed,
        disagreements=tuple((a, s, n) for (a, s), n in ranked),
        shadow_infer_ms=sum(costs) / len(costs) if costs else None,
    )
