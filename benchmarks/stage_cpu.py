"""CPU per frame of every process of the stage-process pipeline, while it runs a clip flat out.

    FRAMESTREAM_MODELS__WEIGHTS_DIR=../shared/models .venv/bin/python -m benchmarks.stage_cpu \\
        [--model mobilenet-v1-0.25-128-quant] [--frames 600] [--clip FILE]

The four stage processes and redis-server are started warm (`loadtest.embedded`); their CPU
times (user + system, every thread, from /proc) are read just before ingest starts the clip and
again when its last result is in. CPU per frame is far less sensitive than frames/s to other work
on a shared machine, and says which process to make cheaper. Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.procs import descendants
from loadtest.bench.baselines import make_clip, measured_from_results
from loadtest.bench.run import play_and_collect
from loadtest.embedded import EmbeddedPipeline

SELF = "collector (this process)"
"""The role `cpu_by_process` gives this process's own CPU."""


def cpu_by_process() -> dict[str, float]:
    """CPU seconds of this process and every descendant, by role."""
    out: dict[str, float] = {}
    for proc in descendants(os.getpid()):
        out[proc.role] = out.get(proc.role, 0.0) + proc.cpu_s
    me = os.times()
    out[SELF] = me.user + me.system
    return out


async def _measure(clip: Path, model: str, frames: int) -> tuple[list, dict[str, float], dict[str, float]]:
    async with EmbeddedPipeline(model=model, pipeline="cpu") as emb:
        before = cpu_by_process()
        rows = await play_and_collect(emb.url, "cpu", model, clip, frames, timeout_s=600)
        after = cpu_by_process()
    return rows, before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mobilenet-v1-0.25-128-quant")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--clip", type=Path, help="a video file (default: a generated 640x480 H.264 clip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or make_clip(Path(tmp) / "clip.mp4", frames=args.frames)
        rows, before, after = asyncio.run(_measure(clip, args.model, args.frames))
    measured = measured_from_results("framestream", rows, args.frames, "")
    n = max(1, len(rows))
    latency = ", ".join(
        f"{name} {ms:.0f} ms"
        for name, ms in (("p50", measured.p50_ms), ("p99", measured.p99_ms))
        if ms is not None
    )
    table = Table(
        title=f"{args.model}: {measured.fps or 0:.0f} frames/s (latency {latency or 'unknown'}), "
        "CPU per frame by process"
    )
    table.add_column("process")
    table.add_column("CPU ms / frame", justify="right")
    total = 0.0
    for role in sorted(after, key=lambda r: after[r] - before.get(r, 0.0), reverse=True):
        spent = after[role] - before.get(role, 0.0)
        if spent <= 0:
            continue
        total += spent
        table.add_row(role, f"{spent / n * 1000:.2f}")
    table.add_row("total", f"{total / n * 1000:.2f}", end_section=True)
    cores = os.cpu_count() or 1
    table.caption = f"{cores} cores: at most {cores / (total / n):.0f} frames/s at this cost"
    Console().print(table)


if __name__ == "__main__":
    main()
