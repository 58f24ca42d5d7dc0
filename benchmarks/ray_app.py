"""What Ray costs: the same clip through the stages as OS processes, through the Serve application,
and through a plain Ray Serve ``@serve.batch`` HTTP deployment (what a user might build instead).

    .venv/bin/python -m benchmarks.ray_app                              # v2-1.0-224, 600 frames
    .venv/bin/python -m benchmarks.ray_app --model mobilenet-v1-0.25-128-quant --rounds 2
    .venv/bin/python -m benchmarks.ray_app --json out/ray_app.json

The clip is the stages benchmark's (`benchmarks.pipeline.make_clip`: 640x480 H.264 photo scenes
with a slow pan/zoom from ../shared/images, generated shapes without them), played as fast as
ingest can. framestream's frames/s come from its own result stamps (first to last
result, so start-up and model compilation are not counted) and its latency is each frame's end to
end figure (capture -> result). The plain Serve row POSTs JPEG frames with 16 in flight from a
client that decodes the clip. Rounds alternate the systems so background load hits all alike;
the best round of each counts (least disturbed). Ratios: Ray app / stage processes (1 - that is
Ray's overhead) and Ray app / plain Serve.

Weights: FRAMESTREAM_WEIGHTS_DIR or ../shared/models for the real TFLite models; without them
the synthetic stand-in of the model is used (throughput is still meaningful, labels are not).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from loadtest.baselines import Measured

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("processes", "ray_app", "plain_serve")


def _weights_dir() -> Path | None:
    env = os.environ.get("FRAMESTREAM_WEIGHTS_DIR")
    if env:
        return Path(env)
    shared = ROOT.parent / "shared" / "models"
    return shared if shared.is_dir() else None


def make_clip(path: Path, frames: int) -> Path:
    """The stages benchmark's clip (same frames, same encoder settings)."""
    try:
        from benchmarks.pipeline import make_clip as stages_clip
    except ImportError:  # the stages benchmark is not in this checkout: the loadtest clip
        from loadtest.baselines import make_clip as loadtest_clip

        return loadtest_clip(path, frames=frames)
    return stages_clip(path, frames)


def measure(system: str, clip: Path, model: str, frames: int, weights_dir: Path | None) -> Measured:
    if system == "processes":
        from loadtest.bench import framestream_processes

        return framestream_processes(clip, model, frames=frames, weights_dir=weights_dir)
    if system == "ray_app":
        from loadtest.bench_ray import framestream_ray

        return framestream_ray(clip, model, frames=frames, weights_dir=weights_dir)
    from loadtest.bench_ray import plain_serve_batch

    return plain_serve_batch(clip, model, frames=frames, weights_dir=weights_dir)


def _best(rows: list[Measured]) -> Measured:
    done = [r for r in rows if r.fps]
    return max(done, key=lambda r: r.fps or 0.0) if done else rows[0]


def _f(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet-v2-1.0-224-quant")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {SYSTEMS}")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    weights_dir = _weights_dir()
    console = Console(width=max(120, Console().width))
    runs: dict[str, list[Measured]] = {s: [] for s in systems}
    with tempfile.TemporaryDirectory(prefix="framestream-bench-") as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", args.frames)
        for round_no in range(args.rounds):
            for system in systems:
                m = measure(system, clip, args.model, args.frames, weights_dir)
                console.print(f"round {round_no + 1} {system}: {_f(m.fps)} frames/s, p50 {_f(m.p50_ms)} ms")
                runs[system].append(m)
    best = {s: _best(r) for s, r in runs.items()}
    base = best.get("processes")
    plain = best.get("plain_serve")
    rows: list[dict[str, Any]] = []
    table = Table(title=f"{args.model}, {args.frames} frames 640x480 H.264, best of {args.rounds}")
    for col in ("system", "frames/s", "p50 ms", "p99 ms", "results", "x stage processes", "x plain Serve"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for system, m in best.items():
        vs_base = m.fps / base.fps if m.fps and base and base.fps else None
        vs_plain = m.fps / plain.fps if m.fps and plain and plain.fps else None
        rows.append({**asdict(m), "system": system, "vs_processes": vs_base, "vs_plain_serve": vs_plain})
        table.add_row(
            m.name,
            _f(m.fps),
            _f(m.p50_ms),
            _f(m.p99_ms),
            str(m.frames),
            _f(vs_base, "{:.2f}"),
            _f(vs_plain, "{:.2f}"),
        )
    console.print(table)
    ray_app = best.get("ray_app")
    if ray_app and ray_app.fps and base and base.fps:
        console.print(f"Ray overhead vs stage processes: {100 * (1 - ray_app.fps / base.fps):+.1f}% frames/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "frames": args.frames, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
