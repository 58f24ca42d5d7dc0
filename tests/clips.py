"""Test clips built in code: H.264 files of photo scenes with a slight pan/zoom (PyAV)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import cv2
import numpy as np

__all__ = ["SCENE_PHOTOS", "expected_labels", "scene_frames", "write_clip"]

# Photos whose expected top-1 (EXPECTED.tsv, v2-1.0-224-quant) holds under a mild pan/zoom
# (owl.jpg flips between labels: left out on purpose).
SCENE_PHOTOS = ("cat.bmp", "bird.bmp", "parrot.jpg", "hot_dog.jpg", "dragonfly.bmp", "sunflower.bmp")


def expected_labels(
    images_dir: Path, model_file: str = "mobilenet_v2_1.0_224_quant.tflite"
) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (images_dir / "EXPECTED.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        image, model, label = line.split("\t")[:3]
        if model == model_file:
            out[image] = label
    return out


def scene_frames(
    photo_rgb: np.ndarray, n: int, size: tuple[int, int], zoom: float = 0.08
) -> list[np.ndarray]:
    """`n` frames (w, h = `size`) of one photo: the view zooms in by `zoom` and pans a little."""
    h, w = photo_rgb.shape[:2]
    out_w, out_h = size
    frames = []
    for i in range(n):
        t = i / max(1, n - 1)
        scale = 1.0 - zoom * t
        cw, ch = w * scale, h * scale
        cx = w / 2 + (w - cw) / 2 * 0.5 * np.sin(t * np.pi)
        cy = h / 2
        x0, y0 = int(max(0, cx - cw / 2)), int(max(0, cy - ch / 2))
        crop = photo_rgb[y0 : y0 + int(ch), x0 : x0 + int(cw)]
        frames.append(cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA))
    return frames


def write_clip(path: Path, frames: Sequence[np.ndarray], fps: int = 25, codec: str = "libx264") -> Path:
    """Encode RGB frames into an H.264 (yuv420p) file at `path`."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "20"}
        for rgb in frames:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_photo(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
