"""Scenario 4: `kill -9` the redis-server mid-replay, keep it down, restart it on the same port and
data dir (AOF everysec): every frame the ingest stage had acknowledged gets a result, and the
pipeline resumes by itself. Negative control: the same with persistence switched off loses frames.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stream.adapters.redis.client import connect
from stream.adapters.redis.server import RedisServer
from stream.core.keys import PipelineKeys
from stream.core.sources.ids import source_id
from tests.faults.aof import rewrite_aof
from tests.faults.conftest import MODEL, Stack, fault_settings
from tests.faults.frames import write_frame_folder
from tests.faults.scenario import ROOT, Harness, Replay
from tests.faults.sink import FaultSink
from tests.waiting import poll

pytestmark = [pytest.mark.faults, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

FRAMES = 6_000
DOWN_S = 6.0
"""Longer than redis-py's own reconnect retries (10 attempts, backoff capped well under 1 s), so
the stages really see Redis gone."""


async def _acknowledged(harness: Harness, source: str) -> int:
    """Frames of `source` whose publish (XADD + progress, one MULTI/EXEC) Redis has confirmed."""
    raw = await harness.client.hget(harness.keys.source_state, source)
    return int(json.loads(raw)["next_seq"]) if raw else 0


async def _stage_lags(harness: Harness) -> dict[str, int | None]:
    """Redis's own lag of every stage group (None when it cannot tell)."""
    keys, model = harness.keys, harness.model
    out: dict[str, int | None] = {}
    for stream in (keys.frames, keys.tensors(model), keys.scores(model)):
        for g in await harness.client.xinfo_groups(stream):
            out[f"{stream}/{g['name'].decode()}"] = g["lag"]
    return out


@pytest.mark.ray
async def test_redis_sigkill_and_restart_with_aof_every_acknowledged_frame_gets_a_result(
    harness: Harness, stack: Stack
) -> None:
    replay = await harness.replay("4-redis-kill-aof", FRAMES)
    assert await harness.follow(replay, timeout_s=60, until=lambda: replay.sink.distinct >= FRAMES // 8)
    await rewrite_aof(harness.client)  # as Redis does by itself as its AOF grows (see the lag check)
    assert await harness.follow(replay, timeout_s=60, until=lambda: replay.sink.distinct >= FRAMES // 4)
    pids_before = {d: set(stack.app.pids(d)) for d in stack.app.replicas}
    acked = await _acknowledged(harness, replay.source)
    stack.redis.kill()
    replay.fault()
    killed_at = time.monotonic()
    await asyncio.sleep(DOWN_S)
    stack.redis.start()
    finished = await harness.follow(replay, timeout_s=180, stall_s=90)
    resumed_s = time.monotonic() - killed_at
    pending = await harness.settle(replay)
    replaced = {d: len(pids_before[d] - set(stack.app.pids(d))) for d in stack.app.replicas}
    how = "replicas reconnected" if not any(replaced.values()) else f"Serve replaced replicas {replaced}"
    outcome = await harness.outcome(
        "4 redis kill -9, AOF everysec",
        replay,
        pending=pending,
        note=f"Ray; down {DOWN_S:.0f} s; {acked} frames acked before the kill; {how}",
    )
    await harness.record(
        outcome, replay, runner="ray", acked_before_kill=acked, replaced=replaced, resumed_s=resumed_s
    )
    await harness.close(replay)
    missing = [seq for seq in range(acked) if (replay.source, seq) not in replay.sink.counts]
    assert not missing, f"{len(missing)} acknowledged frames never got a result, e.g. {missing[:5]}"
    assert finished, f"the pipeline did not resume: {replay.sink.distinct}/{FRAMES} results"
    assert not any(replaced.values()), f"stages crashed instead of reconnecting: {replaced}"
    assert (outcome.lost, outcome.pending) == (0, 0), outcome
    # logged without their read counter: each stage must mend its group's lag (else ingest pauses
    # on a phantom backlog and the autoscaler scales up on it)
    lags: dict[str, int | None] = {}

    async def lags_right() -> bool:
        lags.update(await _stage_lags(harness))
        return all(lag == 0 for lag in lags.values())

    assert await poll(lags_right, timeout_s=15), f"lag with nothing left to read: {lags}"


@pytest.mark.ray
async def test_negative_control_without_persistence_a_redis_crash_loses_frames(
    harness: Harness, stack: Stack
) -> None:
    """AOF switched off for the replay (CONFIG SET appendonly no): the restarted server comes back
    with what it had before the replay, and the checker must report the replay's frames lost."""
    await harness.client.config_set("appendonly", "no")
    replay = await harness.replay("4c-redis-kill-no-aof", 3_000)
    assert await harness.follow(replay, timeout_s=60, until=lambda: replay.sink.distinct >= 500)
    acked = await _acknowledged(harness, replay.source)
    stack.redis.kill()
    await asyncio.sleep(1.0)
    stack.redis.start()  # appendonly yes again, from its command line
    await harness.follow(replay, timeout_s=30, stall_s=20, until=lambda: replay.source in replay.sink.eos)
    pending = await harness.settle(replay, extra_s=30)
    outcome = await harness.outcome(
        "4c control: redis kill -9, no persistence",
        replay,
        pending=pending,
        note=f"negative control; {acked} frames acked before the kill",
    )
    await harness.record(outcome, replay, runner="ray", control=True, acked_before_kill=acked)
    await harness.close(replay)
    missing = [seq for seq in range(acked) if (replay.source, seq) not in replay.sink.counts]
    # The checker must see the loss. Which frames are lost depends on timing: when every frame
    # acked before the kill already had its result, the loss is all in the frames after it.
    assert outcome.lost > 0, (outcome, f"{len(missing)} of {acked} acked frames missing")


async def test_processes_runner_rides_out_a_redis_kill_and_restart(model_cache: Path, tmp_path: Path) -> None:
    """The same fault under `framestream run --runner processes` (no Ray, nobody restarts a crashed
    stage): the stage processes and the runner reconnect by themselves and the run exits 0.

    The test reads the results through consumer groups of its own. (It once shared the runner's
    group: then every result, the end-of-stream included, went to only one of the two readers, and
    a run whose end-of-stream the test had taken waited for it until its timeout.)"""
    settings = fault_settings(model_cache)
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    folder = write_frame_folder(tmp_path / "clip", FRAMES)
    source = source_id(str(folder))
    (tmp_path / "redis").mkdir()
    with RedisServer(aof=True, data_dir=tmp_path / "redis") as server:
        client = await connect(server.url)
        harness = Harness(client, PipelineKeys("p"), MODEL, tmp_path, settings.streams.claim_idle_ms)
        sink = await FaultSink(client, harness.keys, "faults-4b", {source}).start()
        replay = Replay(source, FRAMES, sink)
        cmd = [sys.executable, "-m", "stream.cli", "run", "--runner", "processes", "--redis", server.url]
        cmd += [
            "--config",
            str(config),
            "--model",
            MODEL,
            "--source",
            str(folder),
            "--timeout",
            "200",
            "--json",
        ]
        # its own process group, so a hung run can be killed with its stage processes (they hold
        # the output pipe open, and communicate() would wait for them forever)
        run = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True
        )
        try:
            assert await harness.follow(replay, timeout_s=120, until=lambda: sink.distinct >= FRAMES // 4)
            acked = await _acknowledged(harness, source)
            server.kill()
            replay.fault()
            await asyncio.sleep(DOWN_S)
            server.start()
            finished = await harness.follow(
                replay, timeout_s=150, until=lambda: replay.done or run.poll() is not None
            )
            try:
                output, errors = await asyncio.to_thread(run.communicate, timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                output, errors = run.communicate()
                raise AssertionError(
                    f"the run did not finish: {sink.distinct} results\n{errors[-3000:]}"
                ) from None
            await harness.follow(replay, timeout_s=10)
            pending = await harness.settle(replay)
            outcome = await harness.outcome(
                "4b redis kill -9, processes runner",
                replay,
                pending=pending,
                note=f"processes runner; down {DOWN_S:.0f} s; {acked} frames acked before the kill; "
                f"run exit {run.returncode}",
            )
            await harness.record(outcome, replay, runner="processes", acked_before_kill=acked)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
            await client.aclose()
    assert run.returncode == 0, errors[-3000:]
    assert finished and (outcome.lost, outcome.pending) == (0, 0), outcome
    summary = json.loads(output)  # --json: the run's own summary, alone on stdout
    assert summary["results"] == FRAMES, summary  # it saw every frame
