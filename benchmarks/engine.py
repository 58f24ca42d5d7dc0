"""Engine throughput vs OpenVINO's own `benchmark_app` on the same model file, as a ratio.

    .venv/bin/python -m benchmarks.engine                      # the two real TFLite models
    .venv/bin/python -m benchmarks.engine --synthetic          # plus the four synthetic seeds
    .venv/bin/python -m benchmarks.engine --seconds 5 --rounds 3 --json out/engine.json

For each model: `benchmark_app -hint throughput` at batch 1 (its inference-only number, random
input), then the engine (`open_engine`, THROUGHPUT hint, `num_requests` batches in flight through
`infer_async`, uint8 pipeline input, preprocessing and softmax inside the compiled model) at each
batch size. Rounds alternate the two so background load hits both alike; the best round of each
counts (least disturbed). Ratio = engine images/s at its best batch size / benchmark_app FPS.

On a shared machine wall-clock rates swing with other load, so the script also reports images per
CPU-second (process CPU time, all threads; benchmark_app's from a short and a long run, so its
start-up cancels): how much CPU each image costs, which other load barely changes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stream.adapters.openvino.engine import Engine, open_engine
from stream.commands.model_check import pump

REAL = ["mobilenet-v1-0.25-128-quant", "mobilenet-v2-1.0-224-quant"]
SEEDS = ["mobilenet-v1-0.25-128", "mobilenet-v3-small-1.0-224-tf", "mobilenet-v2-pytorch", "mobilenetv2-7"]
ROOT = Path(__file__).resolve().parents[1]


def _benchmark_app_once(engine: Engine, seconds: float) -> tuple[float, int, float]:
    """(FPS, images, CPU seconds incl. startup) of one benchmark_app run, throughput hint, batch 1."""
    exe = Path(sys.executable).parent / "benchmark_app"
    shape = ",".join(str(d) for d in engine.spec.input_shape)
    # benchmark_app's -t takes whole seconds: round a fractional duration up rather than fail
    cmd = [
        str(exe),
        "-m",
        str(engine.model_path),
        "-d",
        "CPU",
        "-hint",
        "throughput",
        "-t",
        str(math.ceil(seconds)),
    ]
    cmd += ["-shape", f"{engine.spec.input_name}[{shape}]"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 10 + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    fps = re.search(r"Throughput:\s+([\d.]+)\s+FPS", out.stdout)
    count = re.search(r"Count:\s+(\d+)\s+iterations", out.stdout)
    if out.returncode != 0 or not fps or not count:
        raise RuntimeError(
            f"benchmark_app failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(fps.group(1)), int(count.group(1)), cpu


def benchmark_app(engine: Engine, seconds: float) -> tuple[float, float]:
    """(FPS, images per CPU-second) of benchmark_app on the engine's model file.

    CPU cost per image comes from the difference of a short and a long run, which cancels the
    start-up and compile cost; it is far less sensitive to other load on the machine than FPS.
    """
    _, n_short, cpu_short = _benchmark_app_once(engine, 1.0)
    fps, n_long, cpu_long = _benchmark_app_once(engine, seconds + 1.0)
    return fps, (n_long - n_short) / max(cpu_long - cpu_short, 1e-9)


def engine_rate(engine: Engine, batch_size: int, seconds: float) -> tuple[float, float]:
    """(images/s, images per CPU-second of this whole process) at `batch_size`."""
    h, w = engine.spec.input_hw
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, h, w, 3), dtype=np.uint8)
    asyncio.run(pump(engine, batch, min(1.0, seconds / 4)))  # warm-up: first inferences of a new shape
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    ips = asyncio.run(pump(engine, batch, seconds))
    images = ips * (time.perf_counter() - wall0)
    return ips, images / max(time.process_time() - cpu0, 1e-9)


def run(
    names: list[str],
    batch_sizes: list[int],
    seconds: float,
    rounds: int,
    weights_dir: Path,
    static: list[int],
) -> list[dict]:
    rows = []
    for name in names:
        engine = open_engine(name, weights_dir=weights_dir, cache_dir=None, static_batch_sizes=tuple(static))
        app: list[tuple[float, float]] = []
        rates: dict[int, list[tuple[float, float]]] = {b: [] for b in batch_sizes}
        for r in range(rounds):
            app.append(benchmark_app(engine, seconds))
            for b in batch_sizes:
                rates[b].append(engine_rate(engine, b, seconds))
            eng = ", ".join(f"b{b} {rates[b][-1][0]:.0f} ({rates[b][-1][1]:.0f}/cpu-s)" for b in batch_sizes)
            fps, per_cpu = app[-1]
            print(
                f"  {name} round {r + 1}: benchmark_app {fps:.0f} FPS ({per_cpu:.0f}/cpu-s), engine {eng}",
                file=sys.stderr,
            )
        best_app = max(a[0] for a in app)
        app_eff = float(np.median([a[1] for a in app]))
        best = {b: max(v[0] for v in vals) for b, vals in rates.items()}
        eff = {b: float(np.median([v[1] for v in vals])) for b, vals in rates.items()}
        best_b = max(best, key=lambda b: best[b])
        best_eff_b = max(eff, key=lambda b: eff[b])
        rows.append(
            {
                "model": name,
                "file": str(engine.model_path),
                "synthetic": engine.synthetic,
                "requests": engine.num_requests,
                "static_batch_sizes": list(engine.static_batch_sizes),
                "benchmark_app_fps": best_app,
                "benchmark_app_images_per_cpu_s": app_eff,
                "engine_ips": best,
                "engine_images_per_cpu_s": eff,
                "best_batch": best_b,
                "ratio": best[best_b] / best_app,
                "cpu_ratio": eff[best_eff_b] / app_eff,
                "cpu_best_batch": best_eff_b,
            }
        )
        engine.close()
    return rows


def _table(rows: list[dict], batch_sizes: list[int]) -> str:
    cols = " | ".join(f"engine b{b}" for b in batch_sizes)
    head = f"| model | benchmark_app b1 | {cols} | best / benchmark_app | per CPU-second ratio |\n"
    head += "|---|---:|" + "---:|" * len(batch_sizes) + "---:|---:|\n"
    lines = []
    for r in rows:
        cells = " | ".join(
            f"{r['engine_ips'][b]:,.0f} ({r['engine_images_per_cpu_s'][b]:,.0f})" for b in batch_sizes
        )
        name = r["model"] + (" (synthetic)" if r["synthetic"] else "")
        lines.append(
            f"| {name} | {r['benchmark_app_fps']:,.0f} ({r['benchmark_app_images_per_cpu_s']:,.0f}) "
            f"| {cells} "
            f"| {r['ratio']:.2f}x (b{r['best_batch']}) | {r['cpu_ratio']:.2f}x (b{r['cpu_best_batch']}) |"
        )
    note = "\nimages/s, best round (images per CPU-second, median of rounds, in brackets)"
    return head + "\n".join(lines) + note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=None, help=f"default: {' '.join(REAL)}")
    ap.add_argument("--synthetic", action="store_true", help="add the four synthetic seeds")
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 4, 8, 16, 32, 64])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--weights-dir", type=Path, default=ROOT.parent / "shared" / "models")
    ap.add_argument(
        "--static-batch-sizes", type=int, nargs="*", default=[1], help="engine option (default 1)"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    names = args.models or (REAL + (SEEDS if args.synthetic else []))
    rows = run(names, args.batch_sizes, args.seconds, args.rounds, args.weights_dir, args.static_batch_sizes)
    print(f"engine: THROUGHPUT hint, static batch sizes {args.static_batch_sizes}, dynamic batch otherwise")
    print(_table(rows, args.batch_sizes))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
