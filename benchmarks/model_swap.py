"""A model version swapped in live, and a shadow beside it: what they cost.

    .venv/bin/python -m benchmarks.model_swap [--seconds 8] [--json out/model_swap.json]

One redis-server, the four stages as OS processes (``framestream stage``), a model repository
holding two versions of one model (synthetic stand-ins of mobilenet-v1-0.25-128 with different
weights) and a clip looping at full speed. It measures:

- the time from ``models activate`` (serving.yml written) to the first result of the new version
  (the replica's poll, `models.poll_s` = 1 s here, then the paced load and warm-up);
- results/s and p50/p99 latency (capture to result) over `seconds` before the activation, from
  the activation to 1 s after the first new result (the swap), and over `seconds` after;
- the shadow's cost: the Infer process's CPU per result over `seconds` without and then with a
  shadow (the other version), next to the candidate's bare inference CPU per frame (the engine
  alone in this process, at the mean batch size the pipeline ran).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from loadtest.bench.baselines import make_clip
from stream.adapters.redis.client import connect
from stream.adapters.redis.entries import text
from stream.adapters.redis.server import RedisServer
from stream.adapters.redis.source_registry import SourceSpec, add_source
from stream.core.codec import decode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.latency import LatencyHistogram
from stream.runners.processes import StageProcess, create_groups
from stream.settings import Settings
from stream.zoo.repository import ModelRepository
from tests.model_versions import add_version

MODEL = "bench-model"


class Results:
    """Every result's (result_ms, latency_ms, model_version, batch_size), read by cursor."""

    def __init__(self, client: Any, keys: PipelineKeys) -> None:
        self.client, self.keys = client, keys
        self.rows: list[tuple[float, float, int, int]] = []
        self._last = "$"

    async def poll(self) -> None:
        reply = await self.client.xread({self.keys.results: self._last}, count=1000, block=100)
        for _, items in reply or []:
            for entry_id, fields in items:
                self._last = text(entry_id)
                meta = decode_message(fields[FIELD.encode()]).meta
                if meta.get("kind") == "result":
                    row = (meta["result_ms"], meta["latency_ms"], meta["model_version"], meta["batch_size"])
                    self.rows.append(row)

    async def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await self.poll()


def window(rows: list[tuple[float, float, int, int]], start_ms: float, end_ms: float) -> dict[str, Any]:
    lat = [r[1] for r in rows if start_ms <= r[0] < end_ms]
    hist = LatencyHistogram()
    hist.record_many(lat)
    seconds = (end_ms - start_ms) / 1000.0
    return {
        "seconds": round(seconds, 2),
        "results_per_s": round(len(lat) / seconds, 1) if seconds > 0 else None,
        "p50_ms": hist.percentile(50.0),
        "p99_ms": hist.percentile(99.0),
    }


def bare_cpu_ms_per_frame(repo: ModelRepository, settings: Settings, version: int, batch: int) -> float:
    """CPU ms per frame of `version` alone (this process), at batch size `batch`."""
    from stream.stages.infer.stage import open_stage_engine

    engine = open_stage_engine(settings, MODEL, repo.spec(MODEL, version))
    h, w = engine.spec.input_hw
    x = np.random.default_rng(0).integers(0, 255, (batch, h, w, 3), dtype=np.uint8)
    for _ in range(20):
        engine.infer(x)
    start, frames, started = os.times(), 0, time.monotonic()
    while time.monotonic() - started < 3.0:
        engine.infer(x)
        frames += batch
    end = os.times()
    engine.close()
    return (end.user + end.system - start.user - start.system) * 1000.0 / frames


async def _wait(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 180.0) -> None:
    """Wait for `condition`, or end the benchmark naming what did not happen: a version or a
    shadow that fails to load never gives a result, and the benchmark must not wait for ever."""
    end = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > end:
            raise SystemExit(
                f"model_swap: {what} did not happen within {timeout_s:.0f} s (see the stage logs)"
            )


async def measure(tmp: Path, seconds: float) -> dict[str, Any]:
    repo = ModelRepository(tmp / "repo")
    add_version(repo, MODEL, seed=1)
    add_version(repo, MODEL, seed=2, activate=False)
    settings = Settings(models={"repository": tmp / "repo", "cache_dir": tmp / "cache", "poll_s": 1.0})
    dumped = settings.dump_without_secrets()
    dumped["redis"].pop("url", None)
    config = tmp / "settings.yaml"
    config.write_text(yaml.safe_dump(dumped))
    clip = make_clip(tmp / "clip.mp4", frames=300)
    keys = PipelineKeys()
    with RedisServer() as server:
        client = await connect(server.url)
        await create_groups(client, keys, [MODEL])
        stages = {
            s: StageProcess(s, MODEL, server.url, config, f"{s}-bench")
            for s in ("preprocess", "infer", "postprocess")
        }
        stages["ingest"] = StageProcess("ingest", None, server.url, config, "ingest-bench")
        try:

            async def ready() -> bool:
                await asyncio.sleep(0.1)
                return len(await client.hkeys(keys.stage_ready)) >= len(stages)

            await _wait(ready, "every stage ready")
            results = Results(client, keys)
            await add_source(client, keys, "loop", SourceSpec(uri=str(clip), loop=True))
            await results.run_for(5.0)  # warm
            before_ms = time.time() * 1000
            await results.run_for(seconds)
            activated_ms = time.time() * 1000
            repo.activate(MODEL, 2)

            async def swapped() -> bool:
                await results.poll()
                return any(r[2] == 2 for r in results.rows)

            await _wait(swapped, "a result of version 2")
            first_ms = min(r[0] for r in results.rows if r[2] == 2)
            await results.run_for(1.0 + seconds)
            after_ms = time.time() * 1000
            swap = {
                "activation_to_first_result_s": round((first_ms - activated_ms) / 1000.0, 2),
                "before": window(results.rows, before_ms, activated_ms),
                "during": window(results.rows, activated_ms, first_ms + 1000),
                "after": window(results.rows, first_ms + 1000, after_ms),
            }
            # the shadow's cost: the infer process's CPU per result, without and with a shadow
            infer = stages["infer"]
            n0, cpu0 = len(results.rows), infer.cpu_s() or 0.0
            await results.run_for(seconds)
            n1, cpu1 = len(results.rows), infer.cpu_s() or 0.0
            repo.set_shadow(MODEL, 1)

            async def shadowed_200() -> bool:
                await results.poll()
                return await client.xlen(keys.shadow(MODEL)) >= 200

            await _wait(shadowed_200, "200 shadow results")
            n2, cpu2 = len(results.rows), infer.cpu_s() or 0.0
            await results.run_for(seconds)
            n3, cpu3 = len(results.rows), infer.cpu_s() or 0.0
            shadowed = await client.xlen(keys.shadow(MODEL))
            batch = round(float(np.mean([r[3] for r in results.rows[n0:]])))
        finally:
            for proc in stages.values():
                proc.terminate()
            for proc in stages.values():
                proc.wait(30)
            await client.aclose()
    alone = (cpu1 - cpu0) * 1000.0 / max(1, n1 - n0)
    with_shadow = (cpu3 - cpu2) * 1000.0 / max(1, n3 - n2)
    shadow = {
        "infer_cpu_ms_per_result_alone": round(alone, 3),
        "infer_cpu_ms_per_result_with_shadow": round(with_shadow, 3),
        "shadow_cpu_ms_per_frame": round(with_shadow - alone, 3),
        "candidate_bare_cpu_ms_per_frame": round(bare_cpu_ms_per_frame(repo, settings, 1, max(1, batch)), 3),
        "results_per_s_alone": round((n1 - n0) / seconds, 1),
        "results_per_s_with_shadow": round((n3 - n2) / seconds, 1),
        "mean_batch_size": batch,
        "shadow_stream_entries": shadowed,
    }
    return {"swap": swap, "shadow": shadow}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(measure(Path(tmp), args.seconds))
    text_out = json.dumps(out, indent=2)
    print(text_out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text_out)


if __name__ == "__main__":
    main()
