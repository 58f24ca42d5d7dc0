"""`replay:FILE` works as an ingest source in any process, through the source-kind plugin hook."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np

from loadtest.replayfile import ReplayWriter


def test_a_fresh_process_opens_replay_sources_without_importing_loadtest_itself(tmp_path):
    path = tmp_path / "clip.fsr"
    writer = ReplayWriter(path)
    for i in range(3):
        ok, jpg = cv2.imencode(".jpg", np.full((48, 64, 3), i * 60, np.uint8))
        assert ok
        writer.add_jpeg(jpg.tobytes(), i * 33.0, label="kite")
    writer.close()
    code = (
        "from stream.adapters.media.video import open_source\n"
        f"src = open_source('replay:{path}')\n"
        "print(sum(1 for _ in iter(src.read, None)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"
