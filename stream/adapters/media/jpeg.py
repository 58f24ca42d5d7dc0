"""JPEG encode/decode with libjpeg-turbo: simplejpeg, and OpenCV as the fallback decoder.

`decode_jpeg` lets libjpeg decode at a reduced scale (DCT scaling, several times faster than a
full decode) when the caller only needs an image at least `min_hw` large: that is what preprocess
asks for, since every model input is far smaller than a camera frame. `encode_jpeg_i420` writes
a decoded video frame's planes straight into a JPEG, with no colour conversion (see
`stream.adapters.media.yuv`).
"""

from __future__ import annotations

import cv2
import numpy as np
import simplejpeg

from stream.adapters.media.yuv import i420_planes
from stream.core.image_header import image_size, jpeg_size
from stream.errors import CodecError

__all__ = ["decode_jpeg", "encode_jpeg", "encode_jpeg_i420", "jpeg_size"]

# One decoded image may not exceed this many pixels (a 16k x 16k bomb stops here, not in RAM).
_MAX_PIXELS = 100_000_000

_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an HxWx3 uint8 RGB image."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise CodecError(f"expected uint8 HxWx3 RGB, got {rgb.dtype} {rgb.shape}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CodecError(f"JPEG encoding failed for an image of shape {rgb.shape}")
    return buf.tobytes()


def encode_jpeg_i420(i420: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a full-range I420 frame (planes as they are, 4:2:0 subsampling)."""
    try:
        y, cb, cr = i420_planes(i420)
    except ValueError as e:
        raise CodecError(str(e)) from e
    return simplejpeg.encode_jpeg_yuv_planes(y, cb, cr, quality=quality)


def decode_jpeg(data: bytes | np.ndarray, *, min_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode to uint8 HxWx3 RGB; with `min_hw`, at the smallest DCT scale still >= min_hw.

    simplejpeg (libjpeg-turbo, straight to RGB) first; bytes it refuses (CMYK JPEGs, some
    damaged files, another format such as PNG) get a second chance with OpenCV. `CodecError` when
    neither can decode them.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray) else data
    min_h, min_w = min_hw or (0, 0)
    try:
        h, w, _, _ = simplejpeg.decode_jpeg_header(buf, min_height=min_h, min_width=min_w)
    except ValueError:
        return _decode_with_opencv(buf, min_hw)  # not a JPEG libjpeg-turbo reads (a PNG, say)
    if h * w > _MAX_PIXELS:
        raise CodecError(f"JPEG is {w}x{h}, over {_MAX_PIXELS} pixels")
    try:
        return simplejpeg.decode_jpeg(buf, "RGB", min_height=min_h, min_width=min_w)
    except ValueError:
        return _decode_with_opencv(buf, min_hw)


def _decode_with_opencv(buf: np.ndarray, min_hw: tuple[int, int] | None) -> np.ndarray:
    flag = cv2.IMREAD_COLOR
    size = image_size(bytes(buf[:65536]))
    if size is not None and size[0] * size[1] > _MAX_PIXELS:  # before decoding: a PNG bomb stops here
        raise CodecError(f"image is {size[1]}x{size[0]}, over {_MAX_PIXELS} pixels")
    if min_hw is not None:
        size = jpeg_size(bytes(buf[:65536]))
        if size is not None:
            for factor, reduced in _REDUCED:
                if size[0] // factor >= min_hw[0] and size[1] // factor >= min_hw[1]:
                    flag = reduced
                    break
    try:
        bgr = cv2.imdecode(buf, flag)
    except cv2.error as e:
        raise CodecError(f"cannot decode JPEG ({buf.size} bytes): {e}") from e
    if bgr is None:
        raise CodecError(f"cannot decode JPEG ({buf.size} bytes): not a valid image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
