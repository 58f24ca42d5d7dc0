"""CPU a second of every process while the pipeline waits for frames: the Ray Serve app against
the stage processes.

    FRAMESTREAM_MODELS__WEIGHTS_DIR=../shared/models .venv/bin/python -m benchmarks.idle_cpu \\
        [--model mobilenet-v1-0.25-128-quant] [--seconds 30] [--only ray|processes]

Starts each pipeline with no source, the way `framestream run` (a local Ray, the Serve config with
its head environment, `deployments.serve.config.RAY_HEAD_ENV`) and `loadtest bench` (the four stage
processes, `loadtest.embedded`) do, lets it settle for 15 s, then reads every descendant process's
CPU time from /proc over `--seconds`. What a pipeline spends idle it spends every second under
load too (timers, health checks, metrics, Ray's own processes): at 500 frames/s, 10 ms a second
is 0.02 ms a frame. Set RAY_SERVE_CONTROL_LOOP_INTERVAL_S to compare another controller period
(a value already in the environment wins over RAY_HEAD_ENV). Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from rich.console import Console
from rich.table import Table

from benchmarks.stage_cpu import SELF, cpu_by_process
from stream.core.messages import STAGES

_SETTLE_S = 15.0


def _cpu_by_role() -> dict[str, float]:
    """`stage_cpu.cpu_by_process` without this process, a replica named by its stage."""
    out: dict[str, float] = {}
    for role, cpu in cpu_by_process().items():
        if role != SELF:
            name = role.lower() if role.lower() in STAGES else role
            out[name] = out.get(name, 0.0) + cpu
    return out


def _rates(seconds: float) -> dict[str, float]:
    """CPU ms a second of each role over the next `seconds` (this process left out: it sleeps)."""
    before, t0 = _cpu_by_role(), time.monotonic()
    time.sleep(seconds)
    after, elapsed = _cpu_by_role(), time.monotonic() - t0
    return {role: (cpu - before.get(role, 0.0)) * 1000.0 / elapsed for role, cpu in after.items()}


def ray_app(model: str, seconds: float) -> dict[str, float]:
    """The Serve application on a local Ray started as `framestream run` starts it, no source."""
    import ray
    from ray import serve

    from deployments.serve.config import deploy, load_config, override, start_local_ray
    from loadtest.embedded import embedded_settings
    from stream.adapters.redis.server import RedisServer, find_free_port

    dumped = embedded_settings(pipeline="idle").model_dump(mode="json")
    dumped.pop("api", None)
    with RedisServer() as server:
        dumped["redis"] = {"url": server.url}
        start_local_ray()
        try:
            config = override(load_config(), args={"model": model, "settings": dumped},
                              http={"host": "127.0.0.1", "port": find_free_port()})  # fmt: skip
            deploy(config)
            time.sleep(_SETTLE_S)
            return _rates(seconds)
        finally:
            serve.shutdown()
            ray.shutdown()


def stage_processes(model: str, seconds: float) -> dict[str, float]:
    """The four stage processes and redis-server, warm, no source."""
    from loadtest.embedded import EmbeddedPipeline

    async def go() -> dict[str, float]:
        async with EmbeddedPipeline(model=model, pipeline="idle"):
            await asyncio.sleep(_SETTLE_S)
            return await asyncio.to_thread(_rates, seconds)

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mobilenet-v1-0.25-128-quant")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--only", choices=("ray", "processes"))
    args = parser.parse_args()
    runs = {"stage processes": stage_processes, "Ray Serve app": ray_app}
    if args.only:
        runs = {k: v for k, v in runs.items() if (k == "Ray Serve app") == (args.only == "ray")}
    measured = {name: run(args.model, args.seconds) for name, run in runs.items()}
    table = Table(title=f"{args.model}, idle: CPU ms a second over {args.seconds:.0f} s")
    table.add_column("process")
    for name in measured:
        table.add_column(name, justify="right")
    roles = sorted(
        {r for m in measured.values() for r in m},
        key=lambda r: -max(m.get(r, 0.0) for m in measured.values()),
    )
    for role in roles:
        if max(m.get(role, 0.0) for m in measured.values()) >= 0.5:
            table.add_row(role, *(f"{m[role]:.1f}" if role in m else "-" for m in measured.values()))
    table.add_row("total", *(f"{sum(m.values()):.1f}" for m in measured.values()), end_section=True)
    table.caption = (
        f"RAY_SERVE_CONTROL_LOOP_INTERVAL_S={os.environ.get('RAY_SERVE_CONTROL_LOOP_INTERVAL_S', 'unset')}"
    )
    Console().print(table)


if __name__ == "__main__":
    main()
