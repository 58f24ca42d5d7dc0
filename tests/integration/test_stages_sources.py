"""Frame sources: kinds by spec, image folders passing JPEG bytes on, live reconnect with backoff."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.adapters.video import (
    ImageFolderSource,
    LiveCaptureSource,
    VideoFileSource,
    open_source,
    register_source_kind,
    write_demo_clip,
)
from stream.errors import SourceError


def test_open_source_picks_the_kind_and_names_unknown_ones(tmp_path: Path) -> None:
    clip = write_demo_clip(tmp_path / "c.mp4", frames=5, size=(64, 48))
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "imgs" / f"{i}.jpg"), np.full((20, 30, 3), 40 * i, np.uint8))
    src = open_source(str(clip))
    assert isinstance(src, VideoFileSource) and not src.live
    frames = [src.read() for _ in range(6)]
    assert [f is None for f in frames] == [False] * 5 + [True]
    assert frames[0].to_rgb().shape == (48, 64, 3) and frames[1].pts_ms > frames[0].pts_ms
    folder = open_source(str(tmp_path / "imgs"))
    assert isinstance(folder, ImageFolderSource)
    first = folder.read()
    assert first.jpeg == (tmp_path / "imgs" / "0.jpg").read_bytes()  # passed on, not re-encoded
    assert len(open_source(str(tmp_path / "imgs" / "*.jpg")).files) == 3
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    register_source_kind("const", lambda rest: folder)
    assert open_source("const:anything") is folder


class _FlakyCapture:
    def __init__(self, frames: int) -> None:
        self.left = frames

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self) -> None:
        pass


def test_live_source_reconnects_with_backoff_then_gives_up() -> None:
    attempts: list[str] = []
    script = ["fail", "ok:2", "fail", "ok:1", "fail", "fail", "fail"]

    def opener():
        step = script[len(attempts)] if len(attempts) < len(script) else "fail"
        attempts.append(step)
        if step == "fail":
            raise SourceError("connection refused")
        return _FlakyCapture(int(step.split(":")[1]))

    src = LiveCaptureSource("rtsp://camera/stream", "x", opener=opener, max_attempts=3, max_backoff_s=0.01)
    got = 0
    with pytest.raises(SourceError, match="connection refused"):
        while src.read() is not None:
            got += 1
    assert got == 3 and src.reconnects == 2  # 2 frames, drop, reconnect, 1 frame, drop, give up
    assert attempts == script[:7]


def test_a_motion_jpeg_camera_passes_its_jpeg_images_on_undecoded() -> None:
    from tests.faults.frames import jpeg_payloads
    from tests.faults.mjpeg import MjpegCamera

    payloads = jpeg_payloads(4)
    with MjpegCamera(payloads, fps=500, frames=20) as camera:
        src = LiveCaptureSource(camera.url, camera.url, max_attempts=1, max_backoff_s=0.01)
        try:
            frames = [src.read() for _ in range(20)]
        finally:
            src.close()
    assert src.jpeg_packets
    assert [f.jpeg for f in frames] == [payloads[i % 4] for i in range(20)]  # byte for byte
    assert all(f.rgb is None and f.capture_ms is not None for f in frames)
