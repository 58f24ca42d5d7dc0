"""Frame sources: kinds by spec, image folders passing JPEG bytes on, live sources reconnecting
forever with backoff and noticing a stall."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.adapters.media.video import (
    ImageFolderSource,
    LiveCaptureSource,
    LiveOptions,
    VideoFileSource,
    open_source,
    register_source_kind,
    write_demo_clip,
)
from stream.errors import SourceError
from tests.waiting import wait_until


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


def test_live_source_reconnects_forever_and_reports_what_it_goes_through() -> None:
    attempts: list[str] = []
    script = ["ok:2", *["fail"] * 12, "ok:1", "fail"]  # then fails for good

    def opener():
        step = script[len(attempts)] if len(attempts) < len(script) else "fail"
        attempts.append(step)
        if step == "fail":
            raise SourceError("connection refused")
        return _FlakyCapture(int(step.split(":")[1]))

    options = LiveOptions(reconnect_initial_backoff_s=0.001, reconnect_max_backoff_s=0.005)
    src = LiveCaptureSource("rtsp://camera/stream", "x", opener=opener, options=options)
    assert attempts == []  # the constructor does not connect: an unreachable camera blocks nobody
    assert [src.read() is not None for _ in range(3)] == [True] * 3  # 2 frames, 12 failures, 1 frame
    health = src.health()
    assert health.status == "playing" and health.reconnects == 13 == len(attempts) - 1
    assert ("reconnecting", "connection refused") in health.passed
    assert health.last_frame_age_s is not None and health.last_frame_age_s < 1

    # never fails for good: it keeps trying, well past a handful of attempts, until it is closed
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(src.read()))
    reader.start()
    wait_until(lambda: len(attempts) >= 60, timeout_s=30, what="60 reconnect attempts", every_s=0.01)
    assert src.health().status == "reconnecting"
    assert src.health().reason == "connection refused"
    src.close()
    reader.join(timeout=5)
    assert not reader.is_alive() and got == [None]


class _SilentCapture:
    """Connected, but its read blocks (a backend without a read timeout) until let go."""

    def __init__(self) -> None:
        self.let_go = threading.Event()
        self.released = threading.Event()
        self.reads = 0

    def read(self):
        self.reads += 1
        if self.reads == 1:
            return True, np.zeros((4, 4, 3), np.uint8)
        self.let_go.wait(30)
        return False, None

    def release(self) -> None:
        self.released.set()


def test_a_read_that_blocks_past_the_stall_limit_shows_as_stalled_and_close_waits_for_it() -> None:
    capture = _SilentCapture()
    src = LiveCaptureSource("webcam:9", 9, opener=lambda: capture, options=LiveOptions(stall_after_s=0.3))
    assert src.read() is not None and src.health().status == "playing"
    reader = threading.Thread(target=src.read)
    reader.start()
    wait_until(lambda: src.health().status == "stalled", timeout_s=10, what="status stalled", every_s=0.02)
    health = src.health()
    assert health.status == "stalled" and "no frame" in (health.reason or "")
    assert health.last_frame_age_s is not None and health.last_frame_age_s >= 0.3
    src.close()  # the reader is inside read(): releasing under it would crash OpenCV
    assert not capture.released.is_set()
    capture.let_go.set()
    reader.join(timeout=5)
    assert not reader.is_alive() and capture.released.is_set()


def test_a_motion_jpeg_camera_passes_its_jpeg_images_on_undecoded() -> None:
    from tests.faults.frames import jpeg_payloads
    from tests.faults.mjpeg import MjpegCamera

    payloads = jpeg_payloads(4)
    with MjpegCamera(payloads, fps=500, frames=20) as camera:
        src = LiveCaptureSource(camera.url, camera.url)
        try:
            frames = [src.read() for _ in range(20)]
        finally:
            src.close()
    assert src.jpeg_packets
    assert [f.jpeg for f in frames] == [payloads[i % 4] for i in range(20)]  # byte for byte
    assert all(f.rgb is None and f.capture_ms is not None for f in frames)
