"""The run loop (`stream.runners.drive.drive`, what `framestream run` runs with either runner
runs while the application works) rides out a `kill -9` + restart of redis-server (AOF everysec).

The loop talks only to Redis, so the pipeline behind it here is the four stages as
`framestream stage` processes (the same stage code the Serve replicas run) rather than a Serve
application: the test needs no Ray and stays quick. The run must not end at the first Redis
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path

import pytest
from rich.console import Console

from stream.adapters.redis.client import connect
from stream.adapters.redis.server import RedisServer
from stream.core.keys import PipelineKeys
from stream.runners.drive import DriveOptions, drive
from stream.runners.processes import StageProcess, create_groups
from tests.faults.conftest import MODEL, fault_settings
from tests.faults.frames import write_frame_folder
from tests.faults.sink import FaultSink
from tests.waiting import poll

pytestmark = [pytest.mark.faults, pytest.mark.slow]

FRAMES = 3_000
DOWN_S = 6.0
"""Longer than redis-py's own reconnect retries, so the loop really sees Redis gone."""


async def test_the_ray_runners_results_loop_rides_out_a_redis_kill_and_restart(
    model_cache: Path, tmp_path: Path
) -> None:
    settings = fault_settings(model_cache)
    keys = PipelineKeys(settings.streams.pipeline)
    folder = write_frame_folder(tmp_path / "clip", FRAMES)
    (tmp_path / "redis").mkdir()
    config = tmp_path / "settings.yaml"
    config.write_text(settings.model_dump_json())  # JSON is YAML
    procs: list[StageProcess] = []
    out = io.StringIO()
    with RedisServer(aof=True, data_dir=tmp_path / "redis") as server:
        client = await connect(server.url)
        run: asyncio.Task | None = None
        try:
            await create_groups(client, keys, [MODEL])
            for stage in ("preprocess", "infer", "postprocess", "ingest"):
                model = None if stage == "ingest" else MODEL
                procs.append(StageProcess(stage, model, server.url, config, f"{stage}-drive"))

            async def all_ready() -> bool:
                ready = {k.decode() for k in await client.hkeys(keys.stage_ready)}
                return {p.consumer for p in procs} <= ready

            assert await poll(all_ready, timeout_s=120), "the stage processes did not start"
            watch = await FaultSink(client, keys, "drive-watch").start()
            options = DriveOptions(models=[MODEL], synthetic=[], stall_timeout_s=120)
            console = Console(file=out, width=200)
            run = asyncio.create_task(drive(options, settings, server.url, [str(folder)], console))
            assert await watch.follow(lambda: watch.distinct >= FRAMES // 4 or run.done(), timeout_s=120)
            assert not run.done(), out.getvalue()
            server.kill()
            await asyncio.sleep(DOWN_S)
            assert not run.done(), f"the run ended while Redis was down:\n{out.getvalue()}"
            server.start()
            summary = (await asyncio.wait_for(run, timeout=180)).summary
        finally:
            if run is not None and not run.done():
                run.cancel()
                with contextlib.suppress(BaseException):
                    await run
            for proc in procs:
                proc.terminate()
            for proc in procs:
                await asyncio.to_thread(proc.wait, 15)
            await client.aclose()
    assert not summary.interrupted, out.getvalue()
    assert (summary.published, summary.results, summary.unprocessed) == (FRAMES, FRAMES, 0), summary
