"""Image decoding and model-input fitting with OpenCV (the only cv2 user for still images)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from stream.core.geometry import ModelInput, plan_resize
from stream.core.image_header import image_size
from stream.errors import CodecError, SourceError
from stream.zoo.descriptors import ModelSpec

__all__ = [
    "decode_image",
    "fit_image",
    "fit_to_model",
    "model_input",
    "read_image",
    "use_one_opencv_thread",
]

# One decoded image may not exceed this many pixels (a 16k x 16k bomb stops here, not in RAM).
_MAX_PIXELS = 100_000_000


def use_one_opencv_thread() -> None:
    """Run OpenCV's resizes and conversions on the calling thread (unless OPENCV_FOR_THREADS_NUM says
    otherwise). Stages scale by processes; OpenCV's own pool on top costs CPU per frame (a 200x150
    -> 128x128 INTER_AREA resize: 0.20 ms of CPU with 2 threads, 0.17 ms with 1) and only helps when
    cores sit idle."""
    if "OPENCV_FOR_THREADS_NUM" not in os.environ:
        cv2.setNumThreads(1)


def decode_image(data: bytes, max_pixels: int = _MAX_PIXELS) -> np.ndarray:
    """JPEG/PNG/BMP bytes -> uint8 [H, W, 3] RGB. CodecError if the bytes are not such an image,
    or one of more than `max_pixels` pixels (read from the header, before decoding)."""
    if not data:
        raise CodecError("image bytes are empty")
    size = image_size(data[:65536])
    if size is None:
        raise CodecError("not a JPEG, PNG or BMP image (its size cannot be read from its header)")
    if size[0] * size[1] > max_pixels:  # checked before decoding: a small PNG can hold a huge image
        raise CodecError(f"image is {size[1]}x{size[0]}, over {max_pixels} pixels")
    buf = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise CodecError(f"{len(data)} bytes are not a decodable image (JPEG, PNG, BMP, ...)")
    if bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise CodecError(f"image is {bgr.shape[1]}x{bgr.shape[0]}, over {max_pixels} pixels")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: Path) -> np.ndarray:
    """The image file at `path` as uint8 [H, W, 3] RGB. SourceError if unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise SourceError(f"cannot read image {path}: {e.strerror or e}") from e
    try:
        return decode_image(data)
    except CodecError as e:
        raise SourceError(f"{path} is not a readable image: {e}") from e


def fit_image(
    image_rgb: np.ndarray, dst_hw: tuple[int, int], policy: str, shorter: int | None = None, pad: int = 0
) -> np.ndarray:
    """Resize (cv2.INTER_AREA) and center-crop or letterbox (bars of `pad`) an [H, W, 3] image to
    `dst_hw` under `policy`."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {image_rgb.shape}")
    plan = plan_resize((image_rgb.shape[0], image_rgb.shape[1]), dst_hw, policy, shorter)
    res_h, res_w = plan.resize_hw
    if (res_h, res_w) == image_rgb.shape[:2]:
        resized = image_rgb
    else:
        resized = cv2.resize(image_rgb, (res_w, res_h), interpolation=cv2.INTER_AREA)
    top, left, h, w = plan.crop_box
    kept = resized[top : top + h, left : left + w]
    if not plan.padded:
        return np.ascontiguousarray(kept)
    out = np.full((*plan.out_hw, 3), pad, np.uint8)
    out[plan.pad_top : plan.pad_top + h, plan.pad_left : plan.pad_left + w] = kept
    return out


def model_input(spec: ModelSpec) -> ModelInput:
    """The input size and fitting rule of the model `spec` describes."""
    return ModelInput(spec.input_hw, spec.resize, spec.resize_shorter, spec.pad)


def fit_to_model(image_rgb: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 [h, w, 3] RGB at `spec.input_hw`, per the model's resize policy."""
    return fit_image(image_rgb, spec.input_hw, spec.resize, spec.resize_shorter, spec.pad)
