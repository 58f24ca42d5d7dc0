"""Resize / center-crop / letterbox geometry for feeding an image to a model (pure: no pixels
touched here).

Three policies, named as in model descriptors:
- ``stretch``: resize the whole image to the model input, ignoring aspect ratio.
- ``center-crop``: resize so the shorter side is `shorter` pixels (aspect kept, like torchvision's
  ``Resize(256)``), then cut the model-sized box from the centre (``CenterCrop(224)``).
- ``letterbox``: resize so the whole image fits the model input (aspect kept), centred, the rest
  filled with a pad value.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["POLICIES", "ModelInput", "ResizePlan", "plan_resize", "source_short_side"]

POLICIES = ("stretch", "center-crop", "letterbox")


@dataclass(frozen=True)
class ModelInput:
    """What a model needs from a frame: its input size and the rule that fits a frame to it."""

    hw: tuple[int, int]
    policy: str
    shorter: int | None = None
    pad: int = 0

    @property
    def key(self) -> str:
        """One string naming this input, carried by a frame made to it (``fit`` in its meta), so a
        reader with the same input passes the frame on instead of fitting it again."""
        return f"{self.policy} {self.hw[0]}x{self.hw[1]} shorter={self.shorter} pad={self.pad}"

    def plan(self, src_hw: tuple[int, int]) -> ResizePlan:
        """`plan_resize` of a `src_hw` frame to this input."""
        return plan_resize(src_hw, self.hw, self.policy, self.shorter)


@dataclass(frozen=True)
class ResizePlan:
    """Resize the source to `resize_hw`, then keep rows `top:top+height`, cols `left:left+width`,
    and place that at (`pad_top`, `pad_left`) of an `out_hw` canvas (letterbox: the rest is pad)."""

    resize_hw: tuple[int, int]
    top: int
    left: int
    height: int
    width: int
    out_hw: tuple[int, int] = (0, 0)
    pad_top: int = 0
    pad_left: int = 0

    def __post_init__(self) -> None:
        if self.out_hw == (0, 0):
            object.__setattr__(self, "out_hw", (self.height, self.width))

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        """(top, left, height, width) inside the resized image."""
        return (self.top, self.left, self.height, self.width)

    @property
    def padded(self) -> bool:
        """Whether the kept box fills less than the output (letterbox bars)."""
        return (self.height, self.width) != self.out_hw


def _check_hw(hw: tuple[int, int], what: str) -> None:
    if len(hw) != 2 or hw[0] < 1 or hw[1] < 1:
        raise ValueError(f"{what} must be (height, width) >= 1 pixel, got {hw}")


def plan_resize(
    src_hw: tuple[int, int], dst_hw: tuple[int, int], policy: str, shorter: int | None = None
) -> ResizePlan:
    """How to turn a `src_hw` image into a `dst_hw` model input under `policy`.

    `shorter` (pixels) is the shorter-side size for ``center-crop``; default max(dst_hw).
    """
    _check_hw(src_hw, "src_hw")
    _check_hw(dst_hw, "dst_hw")
    dst_h, dst_w = dst_hw
    src_h, src_w = src_hw
    if policy == "stretch":
        return ResizePlan(resize_hw=(dst_h, dst_w), top=0, left=0, height=dst_h, width=dst_w)
    if policy == "letterbox":
        scale = min(dst_h / src_h, dst_w / src_w)
        res_h = min(dst_h, max(1, round(src_h * scale)))
        res_w = min(dst_w, max(1, round(src_w * scale)))
        return ResizePlan(
            resize_hw=(res_h, res_w), top=0, left=0, height=res_h, width=res_w,
            out_hw=(dst_h, dst_w), pad_top=(dst_h - res_h) // 2, pad_left=(dst_w - res_w) // 2,
        )  # fmt: skip
    if policy != "center-crop":
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    short = max(dst_hw) if shorter is None else shorter
    if short < max(dst_hw):
        raise ValueError(f"shorter must be >= the crop size {dst_hw}, got {short}")
    # torchvision: the shorter side becomes `short`, the longer one int(short * long / short_src)
    if src_h <= src_w:
        res_h, res_w = short, max(short, int(short * src_w / src_h))
    else:
        res_h, res_w = max(short, int(short * src_h / src_w)), short
    top = int(round((res_h - dst_h) / 2.0))
    left = int(round((res_w - dst_w) / 2.0))
    return ResizePlan(resize_hw=(res_h, res_w), top=top, left=left, height=dst_h, width=dst_w)


def source_short_side(dst_hw: tuple[int, int], policy: str, shorter: int | None = None) -> int:
    """The smallest shorter side a source image can have without `plan_resize` upscaling it,
    whatever its aspect ratio: frames need not be larger than this for the model to see the same
    detail (ingest's ``frame_short_side_px: auto``)."""
    _check_hw(dst_hw, "dst_hw")
    if policy in ("stretch", "letterbox"):
        return max(dst_hw)
    if policy != "center-crop":
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    return max(max(dst_hw), shorter or 0)
