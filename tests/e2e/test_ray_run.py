"""`framestream run` with no arguments (what `make run` does): finishes by itself, prints a summary."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import SHARED

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _framestream_run(env: dict[str, str], cwd: Path) -> str:
    """`framestream run` with no arguments, no terminal; its output (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run"],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=280,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    return out


def test_framestream_run_without_arguments_plays_the_demo_and_prints_the_summary(tmp_path: Path):
    env = {**os.environ, "CI": "true", "FRAMESTREAM_MODELS__CACHE_DIR": str(tmp_path / "cache")}
    env.pop("FRAMESTREAM_WEIGHTS_DIR", None)
    if (SHARED / "models").is_dir():  # real weights when the checkout has them, else the stand-in
        env["FRAMESTREAM_WEIGHTS_DIR"] = str(SHARED / "models")
    out = _framestream_run(env, tmp_path)
    assert "framestream run: finished" in out
    published = re.search(r"frames in \(published\)\s*│\s*([\d,]+)", out)
    results = re.search(r"frames out \(distinct results\)\s*│\s*([\d,]+)", out)
    assert published and results, out[-4000:]
    assert int(published[1].replace(",", "")) == 300
    assert int(results[1].replace(",", "")) == 300
    assert re.search(r"latency p99 \(end to end\)\s*│\s*[\d,.]+ ms", out)
    if "FRAMESTREAM_WEIGHTS_DIR" not in env:
        assert "SYNTHETIC" in out


def test_a_redis_password_reaches_the_replicas_but_not_rays_config_or_logs(tmp_path: Path):
    # The Serve application's args are logged by Serve's controller and shown by `serve config`:
    # a password inside the Redis URL used to land there (in the session's logs, on disk).
    password = f"pw-{secrets.token_hex(8)}"
    env = {**os.environ, "CI": "true", "FRAMESTREAM_MODELS__CACHE_DIR": str(tmp_path / "cache"),
           "FRAMESTREAM_REDIS__PASSWORD": password}  # fmt: skip
    env.pop("FRAMESTREAM_WEIGHTS_DIR", None)  # the synthetic stand-in is enough here
    started = time.time()
    out = _framestream_run(env, tmp_path)
    results = re.search(r"frames out \(distinct results\)\s*│\s*([\d,]+)", out)
    assert results and int(results[1].replace(",", "")) == 300, out[-4000:]  # replicas logged in
    session = (Path(tempfile.gettempdir()) / "ray" / "session_latest").resolve()
    assert session.is_dir() and session.stat().st_mtime >= started - 1, "no Ray session of this run"
    leaked = [p for p in session.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert not leaked, f"the Redis password is in {leaked}"
