"""The `loadtest` command end to end, as a user runs it: record a clip, replay it into a private
(embedded) pipeline of stage processes, and turn the run into a report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clips import SCENE_PHOTOS, read_photo, scene_frames, write_clip

pytestmark = pytest.mark.slow
V1 = "mobilenet-v1-0.25-128-quant"


def _loadtest(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_record_replay_embedded_and_report(shared_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CI": "true", "FRAMESTREAM_MODELS__WEIGHTS_DIR": str(shared_dir / "models"),
           "FRAMESTREAM_MODELS__CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    env.pop("FRAMESTREAM_REDIS__URL", None)
    frames = scene_frames(read_photo(shared_dir / "images" / SCENE_PHOTOS[0]), 20, (320, 240))
    video = write_clip(tmp_path / "cat.mp4", frames)

    rec = _loadtest("record", str(video), "-o", str(tmp_path / "cat.fsr"), "--label", "Egyptian cat", env=env)
    assert rec.returncode == 0, rec.stderr
    assert "recorded 20 frames (20 labelled" in rec.stdout

    run_json = tmp_path / "run.json"
    replay = _loadtest(
        "replay", str(tmp_path / "cat.fsr"), "--model", V1, "--sources", "2", "--speed", "2",
        "--max-loss", "0", "--json", str(run_json), "--report", str(tmp_path / "report"), env=env,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "PASS" in replay.stdout
    run = json.loads(run_json.read_text())
    assert run["config"]["mode"] == "embedded" and run["config"]["model"] == V1
    assert run["delivery"]["sent"] == 40 and run["delivery"]["distinct"] == 40
    assert run["accuracy"]["labelled"] == 40 and run["accuracy"]["top1"] > 0.8
    assert (tmp_path / "report" / "report.html").stat().st_size > 20_000
    # no TTY: progress is plain lines, not terminal control sequences
    assert "\x1b[?25l" not in replay.stderr

    report = _loadtest("report", str(run_json), "--out", str(tmp_path / "again"), env=env)
    assert report.returncode == 0 and (tmp_path / "again" / "series.csv").exists()

    bad = _loadtest("replay", str(tmp_path / "missing.fsr"), "--redis", "redis://127.0.0.1:1", env=env)
    assert bad.returncode == 2 and "cannot open" in bad.stderr
