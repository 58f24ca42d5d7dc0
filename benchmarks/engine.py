"""Engine throughput vs OpenVINO's own `benchmark_app` on the same model file, as a ratio.

    .venv/bin/python -m benchmarks.engine                      # the two real TFLite models
    .venv/bin/python -m benchmarks.engine --synthetic          # plus the four synthetic seeds
    .venv/bin/python -m benchmarks.engine --seconds 5 --rounds 3 --json out/engine.json

For each model: `benchmark_app -hint throughput` at batch 1 (its inference-only number, random
input), then the engine (`open_engine`, THROUGHPUT hint, `num_requests` batches in flight through
`infer_async`, uint8 pipeline input, preprocessing and softmax inside the compiled model) at each
batch size. Rounds alternate the two so background load hits both alike; the best round of each
counts (least disturbed). Ratio = engine images/s at its best batch size / benchmark_app FPS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stream.adapters.openvino_engine import Engine, open_engine

REAL = ["mobilenet-v1-0.25-128-quant", "mobilenet-v2-1.0-224-quant"]
SEEDS = ["mobilenet-v1-0.25-128", "mobilenet-v3-small-1.0-224-tf", "mobilenet-v2-pytorch", "mobilenetv2-7"]
ROOT = Path(__file__).resolve().parents[1]


def benchmark_app(engine: Engine, seconds: float) -> float:
    """benchmark_app FPS on the engine's model file, throughput hint, batch 1."""
    exe = Path(sys.executable).parent / "benchmark_app"
    shape = ",".join(str(d) for d in engine.spec.input_shape)
    cmd = [str(exe), "-m", str(engine.model_path), "-d", "CPU", "-hint", "throughput", "-t", f"{seconds:g}"]
    cmd += ["-shape", f"{engine.spec.input_name}[{shape}]"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 10 + 120)
    found = re.search(r"Throughput:\s+([\d.]+)\s+FPS", out.stdout)
    if out.returncode != 0 or not found:
        raise RuntimeError(
            f"benchmark_app failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
        )
    return float(found.group(1))


async def _pump(engine: Engine, batch: np.ndarray, seconds: float) -> float:
    done = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await engine.infer_async(batch)
            done += len(batch)

    await asyncio.gather(*(worker() for _ in range(engine.num_requests)))
    return done / (time.perf_counter() - start)


def engine_rate(engine: Engine, batch_size: int, seconds: float) -> float:
    h, w = engine.spec.input_hw
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, h, w, 3), dtype=np.uint8)
    asyncio.run(_pump(engine, batch, min(1.0, seconds / 4)))  # warm-up: first inferences of a new shape
    return asyncio.run(_pump(engine, batch, seconds))


def run(
    names: list[str], batch_sizes: list[int], seconds: float, rounds: int, weights_dir: Path
) -> list[dict]:
    rows = []
    for name in names:
        engine = open_engine(name, weights_dir=weights_dir, cache_dir=None)
        app_fps: list[float] = []
        rates: dict[int, list[float]] = {b: [] for b in batch_sizes}
        for r in range(rounds):
            app_fps.append(benchmark_app(engine, seconds))
            for b in batch_sizes:
                rates[b].append(engine_rate(engine, b, seconds))
            print(f"  {name} round {r + 1}: benchmark_app {app_fps[-1]:.0f} FPS, engine "
                  + ", ".join(f"b{b} {rates[b][-1]:.0f}" for b in batch_sizes), file=sys.stderr)  # fmt: skip
        best_app = max(app_fps)
        best = {b: max(v) for b, v in rates.items()}
        best_b = max(best, key=lambda b: best[b])
        rows.append(
            {
                "model": name,
                "file": str(engine.model_path),
                "synthetic": engine.synthetic,
                "requests": engine.num_requests,
                "benchmark_app_fps": best_app,
                "engine_ips": best,
                "best_batch": best_b,
                "ratio": best[best_b] / best_app,
            }
        )
        engine.close()
    return rows


def _table(rows: list[dict], batch_sizes: list[int]) -> str:
    head = "| model | benchmark_app b1 FPS | " + " | ".join(f"engine b{b}" for b in batch_sizes)
    head += " | best / benchmark_app |\n|---|---:|" + "---:|" * len(batch_sizes) + "---:|\n"
    lines = []
    for r in rows:
        cells = " | ".join(f"{r['engine_ips'][b]:,.0f}" for b in batch_sizes)
        name = r["model"] + (" (synthetic)" if r["synthetic"] else "")
        lines.append(
            f"| {name} | {r['benchmark_app_fps']:,.0f} | {cells} | {r['ratio']:.2f}x (b{r['best_batch']}) |"
        )
    return head + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=None, help=f"default: {' '.join(REAL)}")
    ap.add_argument("--synthetic", action="store_true", help="add the four synthetic seeds")
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 4, 8, 16, 32, 64])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--weights-dir", type=Path, default=ROOT.parent / "shared" / "models")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    names = args.models or (REAL + (SEEDS if args.synthetic else []))
    rows = run(names, args.batch_sizes, args.seconds, args.rounds, args.weights_dir)
    print(_table(rows, args.batch_sizes))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
