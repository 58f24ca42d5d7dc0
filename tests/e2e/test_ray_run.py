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


def test_the_run_guards_its_api_with_a_generated_token_and_prints_one_console_line(tmp_path: Path):
    """No token configured: the run makes one, prints it once as a console link, and the API
    refuses requests without it. `--source` may name a file outside the API's allowed folders
    (the user's own command line); the same file POSTed to the API is refused."""
    import threading

    import httpx

    from stream.adapters.video import write_demo_clip

    clip = write_demo_clip(tmp_path / "own.mp4", frames=60)
    media = tmp_path / "media"
    media.mkdir()
    env = {**os.environ, "CI": "true", "FRAMESTREAM_MODELS__CACHE_DIR": str(tmp_path / "cache"),
           "FRAMESTREAM_INGEST__ALLOWED_SOURCES__ROOTS": str(media)}  # fmt: skip
    for name in ("FRAMESTREAM_WEIGHTS_DIR", "FRAMESTREAM_API__ADMIN_TOKENS", "FRAMESTREAM_API__READ_TOKENS"):
        env.pop(name, None)
    run = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "run", "--source", str(clip), "--loop", "--timeout", "40"],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    console = threading.Event()

    def read() -> None:
        assert run.stdout is not None
        for line in run.stdout:
            lines.append(line)
            if line.startswith("console: "):
                console.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert console.wait(timeout=240), "".join(lines[-40:])
        [line] = [line.strip() for line in lines if line.startswith("console: ")]
        found = re.fullmatch(r"console: (http://127\.0\.0\.1:\d+)/\?token=([A-Za-z0-9_-]{40,})", line)
        assert found, line
        base, token = found[1], found[2]
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/v1/sources").status_code == 401
            listed = http.get("/v1/sources", headers={"Authorization": f"Bearer {token}"})
            assert listed.status_code == 200, listed.text
            refused = http.post(
                "/v1/sources", json={"uri": str(clip)}, headers={"Authorization": f"Bearer {token}"}
            )
            assert refused.status_code == 403 and "outside the folders" in refused.json()["error"], (
                refused.text
            )
        assert run.wait(timeout=240) == 0, "".join(lines[-40:])
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        reader.join(timeout=30)
    out = "".join(lines)
    assert out.count("console: ") == 1 and out.count(token) == 1, "the token is printed once, in the link"
    # the --source outside the API's folders played: its row in the summary counts results
    played = re.search(r"│\s*own\s*│\s*([\d,]+)\s*│\s*([\d,]+)", out)
    assert played and int(played[2].replace(",", "")) > 0, out[-3000:]
