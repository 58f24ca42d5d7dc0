"""CPU cost of asking Serve for replica counts: `serve.status()` against the plain details dict.

    .venv/bin/python -m benchmarks.replica_counts [--calls 20]

Deploys the framestream application (synthetic mobilenet-v1-0.25-128, a private redis-server, a
local Ray) the way `framestream run` does, then asks for the replica counts `--calls` times each
way and reports the CPU each call costs in this process (the driver) and in the Serve controller
(from /proc). `serve.status()` validates the controller's details into Serve's pydantic models,
whose validators cloudpickle every deployment's request router and autoscaling policy on each
call; `deployments.serve.config.replica_counts` reads the same details as a dict. Linux only.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from benchmarks.procs import descendants


def _controller_cpu_s() -> float:
    return sum(p.cpu_s for p in descendants(os.getpid()) if p.role == "ray::ServeController")


def _status_counts(app: str) -> dict[str, int]:
    from ray import serve

    status = serve.status().applications[app]
    return {name: d.replica_states.get("RUNNING", 0) for name, d in status.deployments.items()}


def _cost(call: Callable[[], object], calls: int) -> tuple[float, float]:
    """(driver ms, controller ms) of CPU per call."""
    call()  # warm
    driver, controller = time.process_time(), _controller_cpu_s()
    for _ in range(calls):
        call()
    return (
        (time.process_time() - driver) * 1000.0 / calls,
        (_controller_cpu_s() - controller) * 1000.0 / calls,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()

    import ray

    from deployments.serve.config import app_names, deploy, load_config, override, start_local_ray
    from stream.adapters.redis.server import RedisServer, find_free_port
    from stream.runners.setup import choose_model
    from stream.settings import load_settings

    settings = load_settings()
    model, _ = choose_model("mobilenet-v1-0.25-128", settings)
    with RedisServer() as server:
        start_local_ray(num_cpus=2)
        try:
            config = override(
                load_config(),
                args={"model": model, "settings": {"redis": {"url": server.url}}},
                http={"host": "127.0.0.1", "port": find_free_port()},
            )
            deploy(config)
            (app,) = app_names(config).values()
            from deployments.serve.status import replica_counts

            rows = {
                "serve.status()": _cost(lambda: _status_counts(app), args.calls),
                "config.replica_counts()": _cost(lambda: replica_counts(app), args.calls),
            }
        finally:
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    table = Table(title=f"replica counts of a {len(config['applications'][0]['deployments'])}-deployment app")
    for col in ("way", "driver CPU ms / call", "controller CPU ms / call"):
        table.add_column(col, justify="left" if col == "way" else "right")
    for way, (driver_ms, controller_ms) in rows.items():
        table.add_row(way, f"{driver_ms:.1f}", f"{controller_ms:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
