"""`framestream run` as a user runs it: with no source (what `make run` does) it plays the demo clip under
either runner and sums it up the same way; its secrets stay out of Ray's config and logs."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _framestream_run(env: dict[str, str], cwd: Path, *args: str) -> tuple[dict[str, Any], str]:
    """`framestream run --json [ARGS]`, no terminal: its summary (it must exit 0) and its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run", "--json", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return json.loads(done.stdout), done.stderr


def test_both_runners_play_the_same_demo_and_sum_it_up_the_same_way(tmp_path: Path):
    """`framestream run` with no source (what `make run` does) under either runner: the same demo
    clip, the same model choice and notice, a summary with the same keys and the same counts."""
    env = {**os.environ, "CI": "true", "FRAMESTREAM_MODELS__CACHE_DIR": str(tmp_path / "cache")}
    env.pop("FRAMESTREAM_MODELS__WEIGHTS_DIR", None)
    if (SHARED / "models").is_dir():  # real weights when the checkout has them, else the stand-in
        env["FRAMESTREAM_MODELS__WEIGHTS_DIR"] = str(SHARED / "models")
    summaries, notes = {}, {}
    for runner in ("ray", "processes"):
        summaries[runner], notes[runner] = _framestream_run(env, tmp_path, "--runner", runner)
    ray, processes = summaries["ray"], summaries["processes"]
    assert ray.keys() == processes.keys()
    assert (ray["runner"], processes["runner"]) == ("ray", "processes")
    counts = ("model", "synthetic", "interrupted", "published", "results", "duplicates", "dropped",
              "dead_lettered", "skipped", "unprocessed", "failed")  # fmt: skip
    assert {k: ray[k] for k in counts} == {k: processes[k] for k in counts}
    assert (ray["published"], ray["results"], ray["unprocessed"], ray["interrupted"]) == (300, 300, 0, False)
    assert (
        {name: (row["published"], row["results"]) for name, row in ray["sources"].items()}
        == {"demo": (300, 300)}
        == {name: (row["published"], row["results"]) for name, row in processes["sources"].items()}
    )
    assert ray["latency_ms"]["p99"] > 0 and processes["latency_ms"]["p99"] > 0
    for runner, stderr in notes.items():
        assert "demo clip: 300 generated frames, 640x480 H.264" in stderr, (runner, stderr[-2000:])
        assert ("SYNTHETIC MODEL" in stderr) == ray["synthetic"], (runner, stderr[-2000:])


def test_a_redis_password_reaches_the_replicas_but_not_rays_config_or_logs(tmp_path: Path):
    # The Serve application's args are logged by Serve's controller and shown by `serve config`:
    # a password inside the Redis URL must never land there (in the session's logs, on disk).
    password = f"pw-{secrets.token_hex(8)}"
    env = {**os.environ, "CI": "true", "FRAMESTREAM_MODELS__CACHE_DIR": str(tmp_path / "cache"),
           "FRAMESTREAM_REDIS__PASSWORD": password}  # fmt: skip
    env.pop("FRAMESTREAM_MODELS__WEIGHTS_DIR", None)  # the synthetic stand-in is enough here
    started = time.time()
    summary, stderr = _framestream_run(env, tmp_path)
    assert summary["results"] == 300, stderr[-4000:]  # the replicas logged in
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

    from stream.adapters.media.video import write_demo_clip

    clip = write_demo_clip(tmp_path / "own.mp4", frames=60)
    media = tmp_path / "media"
    media.mkdir()
    env = {**os.environ, "CI": "true", "FRAMESTREAM_MODELS__CACHE_DIR": str(tmp_path / "cache"),
           "FRAMESTREAM_INGEST__ALLOWED_SOURCES__ROOTS": str(media)}  # fmt: skip
    for name in (
        "FRAMESTREAM_MODELS__WEIGHTS_DIR",
        "FRAMESTREAM_API__ADMIN_TOKENS",
        "FRAMESTREAM_API__READ_TOKENS",
    ):
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
