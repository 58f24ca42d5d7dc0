"""`framestream run` stopped the ways services are stopped: Ctrl-C (SIGINT to its process group),
SIGTERM (``kill``, ``timeout``, systemd, Docker, Kubernetes), SIGINT then SIGTERM a second later,
and SIGKILL. Whichever it was, nothing the run started (its private redis-server, the stage
processes, the local Ray with its agents and workers) outlives it for more than
``streams.drain_timeout_s`` + 5 s; SIGINT and SIGTERM drain and print the summary with exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from stream.watchdog import running, stop_processes
from tests.clips import write_clip
from tests.waiting import poll

DRAIN_TIMEOUT_S = {"processes": 2.0, "ray": 5.0}
"""Short, so a test is quick; the Ray runner's stop also deletes the Serve application (3 s here)
and stops Ray (1.5 s) after its drain."""
MODEL = "mobilenet-v1-0.25-128-quant"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second of moving colour bars, played in a loop until the run is stopped."""
    frames = []
    for i in range(25):
        x = (np.arange(160)[None, :, None] + 6 * i) % 160
        frames.append(np.broadcast_to(x * [1, 2, 3] % 256, (120, 160, 3)).astype(np.uint8))
    return write_clip(tmp_path_factory.mktemp("clip") / "bars.mp4", frames)


class Run:
    """`framestream run` in its own process group (a terminal's job), with its output in files."""

    def __init__(self, runner: str, clip: Path, tmp_path: Path, shared_dir: Path) -> None:
        self.drain_timeout_s = DRAIN_TIMEOUT_S[runner]
        self.results = tmp_path / "results.jsonl"
        self.out_path, self.err_path = tmp_path / "out.txt", tmp_path / "err.txt"
        env = {
            **os.environ,
            "CI": "true",
            "FRAMESTREAM_MODELS__WEIGHTS_DIR": str(shared_dir / "models"),
            "FRAMESTREAM_STREAMS__DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S[runner]),
        }
        cmd = [sys.executable, "-m", "stream.cli", "run", "--runner", runner, "--redis", "auto", "--json"]
        cmd += ["--source", str(clip), "--loop", "--model", MODEL, "--results", str(self.results)]
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )
        self.tree: list[psutil.Process] = []

    def output(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()

    def summary(self) -> dict:
        """The summary `--json` printed on stdout (alone there)."""
        return json.loads(self.out_path.read_text())

    def results_written(self) -> int:
        return len(self.results.read_text().splitlines()) if self.results.exists() else 0

    async def wait_playing(self, timeout_s: float) -> None:
        """Until results flow; then record every process the run has started (pid and start time:
        those that outlive it are adopted by init, and a reused pid is not one of them)."""
        playing = await poll(
            lambda: self.results_written() >= 50 or self.proc.poll() is not None, timeout_s=timeout_s
        )
        assert playing and self.proc.poll() is None, self.output()[-4000:]
        self.tree = psutil.Process(self.proc.pid).children(recursive=True)
        names = {p.name() for p in self.tree}
        assert "redis-server" in names, names  # the private one: it must go too

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)  # what a terminal's Ctrl-C does

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def remaining_after(self, timeout_s: float) -> list[str]:
        """Wait up to `timeout_s` for the run and all it started to end (a zombie has ended: it
        waits only for init to reap it); what is left, described."""

        def left() -> list[psutil.Process]:
            return [p for p in self.tree if running(p)]

        await poll(lambda: self.proc.poll() is not None and not left(), timeout_s=timeout_s, every_s=0.1)
        described = [] if self.proc.poll() is not None else [f"{self.proc.pid} framestream run"]
        for proc in left():
            with contextlib.suppress(psutil.Error):
                described.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        return described

    def kill_all(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        stop_processes([p for p in self.tree if running(p)], grace_s=1.0)


@pytest.fixture
def start_run(clip: Path, tmp_path: Path, shared_dir: Path):
    runs: list[Run] = []

    def start(runner: str) -> Run:
        runs.append(Run(runner, clip, tmp_path, shared_dir))
        return runs[-1]

    yield start
    for run in runs:  # a failed test must not leave its run behind either
        run.kill_all()


async def _assert_stopped_cleanly(run: Run, signalled_at: float) -> None:
    left = await run.remaining_after(run.drain_timeout_s + 5 - (time.monotonic() - signalled_at))
    assert not left, "still running:\n" + "\n".join(left) + "\n" + run.output()[-3000:]


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
async def test_processes_runner_drains_prints_the_summary_and_exits_0(start_run, how: str) -> None:
    run = start_run("processes")
    await run.wait_playing(timeout_s=150)
    signalled_at = time.monotonic()
    if how == "SIGINT":
        run.signal_group(signal.SIGINT)  # Ctrl-C at the terminal
    else:
        run.signal(signal.SIGTERM)  # kill, timeout, Kubernetes: the run alone
    await _assert_stopped_cleanly(run, signalled_at)
    assert run.proc.returncode == 0, run.output()[-4000:]
    summary = run.summary()
    assert summary["interrupted"] and summary["results"] > 0, run.output()[-4000:]


async def test_processes_runner_second_signal_skips_the_drain_and_exits_143(start_run) -> None:
    run = start_run("processes")
    await run.wait_playing(timeout_s=150)
    (infer,) = [p for p in run.tree if "infer" in p.cmdline()]
    infer.suspend()  # a stage that does not finish its drain: the run waits for it, up to a point
    signalled_at = time.monotonic()
    run.signal_group(signal.SIGINT)
    await asyncio.sleep(1.0)  # the second signal comes a second later, as the acceptance puts it
    run.signal(signal.SIGTERM)
    await _assert_stopped_cleanly(run, signalled_at)
    assert run.proc.returncode == 128 + signal.SIGTERM, run.output()[-4000:]
    assert "stopped without draining" in run.output()


async def test_processes_runner_sigkilled_leaves_nothing_running(start_run) -> None:
    run = start_run("processes")
    await run.wait_playing(timeout_s=150)
    signalled_at = time.monotonic()
    run.signal(signal.SIGKILL)
    await _assert_stopped_cleanly(run, signalled_at)
    assert run.proc.returncode == -signal.SIGKILL


@pytest.mark.ray
async def test_ray_runner_sigterm_drains_prints_the_summary_and_stops_ray(start_run) -> None:
    run = start_run("ray")
    await run.wait_playing(timeout_s=280)
    assert any(p.name() == "raylet" for p in run.tree), [p.name() for p in run.tree]
    signalled_at = time.monotonic()
    run.signal(signal.SIGTERM)
    await _assert_stopped_cleanly(run, signalled_at)
    assert run.proc.returncode == 0, run.output()[-4000:]
    summary = run.summary()
    assert summary["interrupted"] and summary["results"] > 0, run.output()[-4000:]


@pytest.mark.ray
async def test_ray_runner_sigkilled_leaves_no_ray_or_redis_running(start_run) -> None:
    run = start_run("ray")
    await run.wait_playing(timeout_s=280)
    signalled_at = time.monotonic()
    run.signal(signal.SIGKILL)
    await _assert_stopped_cleanly(run, signalled_at)
