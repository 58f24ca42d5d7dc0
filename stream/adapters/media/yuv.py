"""Planar YCbCr 4:2:0 (I420) frames: what video decoders produce and what JPEG stores.

A decoded H.264 frame is already Y, Cb and Cr planes with chroma at half resolution, which is
exactly what a JPEG holds. Encoding the planes as they are skips two colour conversions (YUV ->
RGB in the decoder's scaler, RGB -> YCbCr plus chroma subsampling in libjpeg): 0.78x the CPU
per decoded-and-encoded 640x480 frame, 0.5x when frames are also halved to the size a model
needs (`python -m benchmarks.ingest`).

The convention here: an I420 array is one packed uint8 array of shape ``(h * 3 // 2, w)`` (the
layout of FFmpeg's ``yuv420p`` and OpenCV's ``COLOR_YUV2*_I420``): ``h`` rows of Y, then Cb and
Cr at ``(h // 2, w // 2)`` each. JPEG (JFIF) wants **full range** (0..255); video is usually
limited range (Y 16..235): `to_full_range` converts it, best after `shrink_i420` (fewer pixels).
`stream.adapters.media.jpeg.encode_jpeg_i420` takes full-range planes; `i420_to_rgb` either range.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "i420_planes",
    "i420_shape",
    "i420_to_rgb",
    "resize_i420",
    "shrink_i420",
    "shrink_planes",
    "to_full_range",
]

# limited ("MPEG", Y 16..235, C 16..240) -> full ("JPEG", 0..255) range, per plane
_Y_LUT = np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)
_C_LUT = np.clip(np.round((np.arange(256) - 128) * 255.0 / 224.0 + 128), 0, 255).astype(np.uint8)


def i420_shape(i420: np.ndarray) -> tuple[int, int]:
    """(height, width) of the picture an I420 array holds; ValueError if it is not one."""
    if i420.dtype != np.uint8 or i420.ndim != 2 or i420.shape[0] % 3 or i420.shape[1] % 2:
        raise ValueError(f"not a packed I420 array: {i420.dtype} {i420.shape}")
    h = i420.shape[0] * 2 // 3
    if h % 2:
        raise ValueError(f"not a packed I420 array: {i420.dtype} {i420.shape}")
    return h, i420.shape[1]


def i420_planes(i420: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y [h, w], Cb [h/2, w/2] and Cr [h/2, w/2] planes."""
    h, w = i420_shape(i420)
    chroma = i420[h:].reshape(2, h // 2, w // 2)
    return i420[:h], chroma[0], chroma[1]


def to_full_range(i420: np.ndarray) -> np.ndarray:
    """A limited-range (video) I420 array converted to full range (a new array)."""
    h, _ = i420_shape(i420)
    out = np.empty_like(i420)
    cv2.LUT(i420[:h], _Y_LUT, dst=out[:h])
    cv2.LUT(i420[h:], _C_LUT, dst=out[h:])
    return out


def shrink_i420(i420: np.ndarray, short_side: int | None) -> np.ndarray:
    """Halve the frame as often as its shorter side stays >= `short_side` (a box filter).

    Halving is INTER_AREA on OpenCV's fast path (a 2x2 average, ~0.03 ms for 640x480 luma; an
    arbitrary ratio costs 10x that). Odd edge rows/columns that do not fill a box are dropped.
    Never upscales; `short_side` None or too large returns the frame as it is.
    """
    h, w = i420_shape(i420)
    if not short_side or min(h, w) // 2 < short_side:
        return i420
    return shrink_planes(*i420_planes(i420), short_side)


def shrink_planes(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, short_side: int | None) -> np.ndarray:
    """`shrink_i420` of separate Y, Cb, Cr planes (views into a decoder's buffers, say): one new
    packed I420 array, halved as often as the shorter side stays >= `short_side`.

    Halving straight from the planes saves packing the full-size frame first (~0.05 ms of the
    ~1 ms a 640x480 H.264 frame costs ingest). The Y plane's sides must be even.
    """
    half = (y.shape[0] // 2, y.shape[1] // 2)
    if y.shape[0] % 2 or y.shape[1] % 2 or cb.shape != half or cr.shape != half:
        raise ValueError(f"not I420 planes: Y {y.shape}, Cb {cb.shape}, Cr {cr.shape}")
    while short_side and min(y.shape) // 2 >= short_side and min(cb.shape) >= 2:
        y, cb, cr = (_halve(y, 2), _halve(cb, 1), _halve(cr, 1))
    return np.concatenate([y.ravel(), cb.ravel(), cr.ravel()]).reshape(-1, y.shape[1])


def _halve(plane: np.ndarray, multiple: int) -> np.ndarray:
    """The plane at half size, its sides kept multiples of `multiple` (2 for luma, so chroma fits)."""
    h, w = plane.shape[0] // (2 * multiple) * multiple, plane.shape[1] // (2 * multiple) * multiple
    return cv2.resize(plane[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)


def resize_i420(i420: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The frame resized to `hw` (both even), plane by plane, before any colour conversion (which
    then touches only the output's pixels).

    Each plane is halved (a 2x2 box, `_halve`) while both its sides stay >= the target's, then
    bilinearly resized by what is left: 640x480 to 128x128 in ~0.06 ms of CPU, against ~0.35 ms
    for INTER_AREA at the same arbitrary ratio (OpenCV's fast box path is 2x2 only).
    """
    h, w = hw
    if h < 2 or w < 2 or h % 2 or w % 2:
        raise ValueError(f"I420 sides must be even and >= 2, got {w}x{h}")
    if i420_shape(i420) == (h, w):
        return i420
    y, cb, cr = i420_planes(i420)
    out = np.empty((h * 3 // 2, w), np.uint8)
    out[:h] = _resize_plane(y, h, w)
    chroma = out[h:].reshape(2, h // 2, w // 2)
    chroma[0] = _resize_plane(cb, h // 2, w // 2)
    chroma[1] = _resize_plane(cr, h // 2, w // 2)
    return out


def _resize_plane(plane: np.ndarray, h: int, w: int) -> np.ndarray:
    while plane.shape[0] // 2 >= h and plane.shape[1] // 2 >= w:
        plane = _halve(plane, 1)
    if plane.shape == (h, w):
        return plane
    return cv2.resize(plane, (w, h), interpolation=cv2.INTER_LINEAR)


def i420_to_rgb(i420: np.ndarray, *, limited: bool = False) -> np.ndarray:
    """uint8 [h, w, 3] RGB of an I420 array: BT.601 in video range when `limited` (one OpenCV
    conversion, no range table first), else full range (JFIF's conversion)."""
    h, w = i420_shape(i420)
    if limited:
        return cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
    y, cb, cr = i420_planes(i420)
    up = cv2.resize(np.dstack((cr, cb)), (w, h), interpolation=cv2.INTER_LINEAR)
    ycrcb = np.dstack((y, up))
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)
