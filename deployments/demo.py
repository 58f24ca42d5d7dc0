"""The demo clip `framestream run` plays when no source is given: generated, never downloaded."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

__all__ = ["write_demo_clip"]


def _frame(i: int, width: int, height: int) -> np.ndarray:
    """A moving pattern: drifting colour gradient, a bouncing disc and sliding stripes."""
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    t = i / 30.0
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = (127 + 127 * np.sin(x / 37.0 + t * 1.3)).astype(np.uint8)
    rgb[..., 1] = (127 + 127 * np.sin(y / 23.0 - t * 0.9)).astype(np.uint8)
    rgb[..., 2] = (127 + 127 * np.sin(x / 53.0 + t * 2.1) * np.cos(y / 53.0)).astype(np.uint8)
    cx = width * (0.5 + 0.35 * np.sin(t * 1.7))
    cy = height * (0.5 + 0.35 * np.cos(t * 1.1))
    rgb[(x - cx) ** 2 + (y - cy) ** 2 < (min(width, height) * 0.15) ** 2] = (240, 240, 240)
    rgb[((x + i * 4) // 24 % 2 == 0) & (y > height * 0.8)] = (20, 20, 20)
    return rgb


def write_demo_clip(
    path: Path, *, frames: int = 300, width: int = 640, height: int = 480, fps: int = 30
) -> Path:
    """Write an H.264 clip of `frames` generated frames to `path` (PyAV) and return `path`."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(frames):
            image = av.VideoFrame.from_ndarray(_frame(i, width, height), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
