"""CPU per frame of every process of the Ray Serve application, over its sustained window.

    FRAMESTREAM_MODELS__WEIGHTS_DIR=../shared/models .venv/bin/python -m benchmarks.ray_cpu \\
        [--model mobilenet-v1-0.25-128-quant] [--frames 1800]

Runs the clip the way `loadtest bench` does (`framestream run --runner ray` against a private
redis-server), samples every descendant process's CPU time from /proc five times a second, and
reports the CPU each process spent per result inside `loadtest.stats.sustained_rate`'s window
(pipeline filled, ingest still reading). Tells Ray's own processes (controller, proxy, GCS,
raylet, agents) apart from the stage replicas. Linux only.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.procs import descendants
from benchmarks.stage_cpu import SELF, cpu_by_process
from loadtest.bench.baselines import make_clip
from loadtest.stats import ResultRow, sustained_window

Sample = tuple[float, dict[str, float], dict[str, int]]
"""(epoch ms, CPU seconds by role, processes by role)."""


def _sample() -> Sample:
    """A sample; the driver's CPU excludes this sampling thread's (a walk of all of /proc, five
    times a second, costs more than the driver itself on a machine with many processes)."""
    counts: dict[str, int] = {}
    for proc in descendants(os.getpid()):
        counts[proc.role] = counts.get(proc.role, 0) + 1
    cpu = cpu_by_process()
    cpu[SELF] -= time.thread_time()
    return time.time() * 1000.0, cpu, counts


def _run(clip: Path, model: str, samples: list[Sample]) -> list[ResultRow]:
    from deployments.local.runner import ray_stages
    from loadtest.bench.ray_systems import _all_results
    from loadtest.embedded import embedded_settings
    from stream.adapters.redis.server import RedisServer
    from stream.runners import RunRequest
    from stream.runners.play import run_pipeline

    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(_sample())
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        settings = embedded_settings(pipeline="p")
        with RedisServer() as server:
            request = RunRequest(sources=[str(clip)], models=[model], redis=server.url)
            run_pipeline(settings, request, ray_stages(), Console(quiet=True))
            return _all_results(server.url, settings.streams.pipeline)
    finally:
        stop.set()
        sampler.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mobilenet-v1-0.25-128-quant")
    parser.add_argument("--frames", type=int, default=1800)
    args = parser.parse_args()
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory() as tmp:
        rows = _run(make_clip(Path(tmp) / "clip.mp4", frames=args.frames), args.model, samples)
    window = sustained_window(rows)
    if len(rows) < 10 or len(samples) < 2:
        raise SystemExit(f"too few results ({len(rows)}) or CPU samples ({len(samples)}) to measure")
    if window is None:
        raise SystemExit("the sustained window is empty: use more --frames")
    first = min(samples, key=lambda s: abs(s[0] - window[0]))
    last = min(samples, key=lambda s: abs(s[0] - window[1]))
    results = sum(1 for r in rows if first[0] < r.result_ms <= last[0])
    seconds = (last[0] - first[0]) / 1000.0
    if results == 0 or seconds <= 0:
        raise SystemExit("the sustained window is empty: use more --frames")
    spent = {k: v - first[1].get(k, 0.0) for k, v in last[1].items()}
    table = Table(title=f"{args.model}, Ray Serve app: {results / seconds:.0f} frames/s over {seconds:.1f} s")
    table.add_column("process")
    table.add_column("processes", justify="right")
    table.add_column("CPU ms / frame", justify="right")
    inside = [s for s in samples if first[0] <= s[0] <= last[0]]
    for role in sorted(spent, key=spent.__getitem__, reverse=True):
        if spent[role] * 1000 / results >= 0.005:
            seen = sorted({s[2].get(role, 0) for s in inside})
            table.add_row(role, "-".join(str(n) for n in (seen[0], seen[-1]) if n) if seen else "-",
                          f"{spent[role] / results * 1000:.2f}")  # fmt: skip
    total = sum(v for v in spent.values() if v > 0)
    table.add_row("total", "", f"{total / results * 1000:.2f}", end_section=True)
    table.caption = f"{total / seconds:.2f} cores busy"
    Console().print(table)


if __name__ == "__main__":
    main()
