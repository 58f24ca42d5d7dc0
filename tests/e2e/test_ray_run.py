"""`framestream run` with no arguments (what `make run` does): finishes by itself, prints a summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_framestream_run_without_arguments_plays_the_demo_and_prints_the_summary(tmp_path: Path):
    env = {**os.environ, "CI": "true", "FRAMESTREAM_MODELS__CACHE_DIR": str(tmp_path / "cache")}
    env.pop("FRAMESTREAM_WEIGHTS_DIR", None)
    if (SHARED / "models").is_dir():  # real weights when the checkout has them, else the stand-in
        env["FRAMESTREAM_WEIGHTS_DIR"] = str(SHARED / "models")
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=280,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "framestream run: finished" in out
    published = re.search(r"frames in \(published\)\s*│\s*([\d,]+)", out)
    results = re.search(r"frames out \(distinct results\)\s*│\s*([\d,]+)", out)
    assert published and results, out[-4000:]
    assert int(published[1].replace(",", "")) == 300
    assert int(results[1].replace(",", "")) == 300
    assert re.search(r"latency p99 \(end to end\)\s*│\s*[\d,.]+ ms", out)
    if "FRAMESTREAM_WEIGHTS_DIR" not in env:
        assert "SYNTHETIC" in out
