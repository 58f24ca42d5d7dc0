"""Test input built in code: folders of small JPEG frames (some deliberately undecodable)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import cv2
import numpy as np

__all__ = ["CORRUPT_JPEG", "FRAME_SIZE", "jpeg_payloads", "write_frame_folder"]

FRAME_SIZE = (160, 120)
"""(width, height) of every test frame: small, so 10,000-20,000 frames replay quickly."""

CORRUPT_JPEG = b"\xff\xd8\xff\xe0" + b"this frame got corrupted on its way" * 8
"""Starts like a JPEG, then is not one: the ingest passes it on, preprocess cannot decode it."""


def jpeg_payloads(n: int = 16, size: tuple[int, int] = FRAME_SIZE, seed: int = 0) -> list[bytes]:
    """`n` distinct JPEG images (colour gradient + noise) of `size` = (width, height)."""
    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for i in range(n):
        x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
        base = (x * (i % 4) / 3 + y * (1 - (i % 4) / 3)) * np.array([1.0, 0.6, 0.3], np.float32)
        noisy = base + rng.normal(0, 20, (h, w, 3))
        ok, buf = cv2.imencode(
            ".jpg", np.clip(noisy, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 85]
        )
        assert ok
        out.append(buf.tobytes())
    return out


def write_frame_folder(folder: Path, n: int, *, corrupt: Collection[int] = ()) -> Path:
    """`n` JPEG files ``000000.jpg`` ... in `folder` (the ingest plays them in name order, so file
    i becomes seq i); the indices in `corrupt` hold `CORRUPT_JPEG` instead."""
    folder.mkdir(parents=True, exist_ok=True)
    payloads = jpeg_payloads()
    bad = set(corrupt)
    for i in range(n):
        (folder / f"{i:06d}.jpg").write_bytes(CORRUPT_JPEG if i in bad else payloads[i % len(payloads)])
    return folder
