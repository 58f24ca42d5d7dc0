"""The four stages as OS processes on one redis-server vs a naive single process vs the ideal.

    .venv/bin/python -m benchmarks.pipeline                          # both real models, 2 rounds
    .venv/bin/python -m benchmarks.pipeline --frames 1200 --rounds 3 --json out/pipeline.json

A 640x480 H.264 clip (photo scenes from ../shared/images with a slow pan/zoom, or generated
shapes when ../shared is absent) is replayed as fast as possible. Per model:

- pipeline: `run_processes` (ingest, preprocess, infer, postprocess as separate processes, one
  private redis-server), frames/s from the first capture to the last result, mean batch size
  (per batch), p50/p99 end-to-end latency. Also with ingest downscaling frames to a 256 px
  shorter side (`ingest.frame_short_side_px`), which cuts the JPEG cost the pipeline pays and
  the naive loop does not.
- (a) naive: one process, OpenCV read -> resize -> synchronous OpenVINO, batch 1 (LATENCY hint).
- (b) ideal: 1 / (decode + preprocess + infer time per frame), each measured alone with both
  cores busy (PyAV frame-threaded decode; resize on two threads; THROUGHPUT engine, batch 16,
  every request in flight).

Rounds alternate the three so background load hits them alike; the best round of each counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from stream.adapters.image import fit_to_model
from stream.adapters.openvino_engine import Engine, open_engine
from stream.adapters.redis_server import RedisServer
from stream.adapters.video import VideoFileSource, write_demo_clip, write_video
from stream.settings import Settings
from stream.stages.runner import run_processes

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODELS = ["mobilenet-v1-0.25-128-quant", "mobilenet-v2-1.0-224-quant"]
PHOTOS = ("cat.bmp", "bird.bmp", "parrot.jpg", "hot_dog.jpg", "dragonfly.bmp", "sunflower.bmp")


def _cpu_self_s() -> float:
    """CPU seconds of this process, every thread (OpenCV, FFmpeg and OpenVINO threads included)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _cpu_pid_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(fn, *args):  # noqa: ANN001, ANN201 - (rate, CPU ms per item) of fn returning (rate, items)
    cpu0 = _cpu_self_s()
    rate, items, *rest = fn(*args)
    return (rate, (_cpu_self_s() - cpu0) * 1000.0 / items, *rest)


def make_clip(path: Path, frames: int) -> Path:
    images = SHARED / "images"
    if not images.is_dir():
        return write_demo_clip(path, frames=frames, size=(640, 480))
    per_scene = max(1, frames // len(PHOTOS))

    def scenes():
        for i in range(frames):
            bgr = cv2.imread(str(images / PHOTOS[(i // per_scene) % len(PHOTOS)]))
            h, w = bgr.shape[:2]
            t = (i % per_scene) / per_scene
            s = 1.0 - 0.15 * t
            ch, cw = int(h * s), int(w * s)
            y0, x0 = (h - ch) // 2, int((w - cw) * (0.5 + 0.4 * np.sin(t * 3.1)) / 1)
            x0 = min(max(0, x0), w - cw)
            crop = bgr[y0 : y0 + ch, x0 : x0 + cw]
            yield cv2.cvtColor(cv2.resize(crop, (640, 480), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)

    return write_video(path, scenes(), crf=23)


def naive(clip: Path, engine: Engine) -> tuple[float, int]:
    """(a) frames/s of read -> resize -> synchronous batch-1 inference in one loop."""
    cap = cv2.VideoCapture(str(clip))
    n = 0
    start = time.perf_counter()
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        x = fit_to_model(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), engine.spec)
        engine.infer(x[None])
        n += 1
    cap.release()
    return n / (time.perf_counter() - start), n


def decode_fps(clip: Path) -> tuple[float, int, list[np.ndarray]]:
    """Decode-only frames/s (PyAV, as ingest decodes); keeps 64 frames for the next step."""
    src = VideoFileSource(str(clip))
    kept: list[np.ndarray] = []
    n = 0
    start = time.perf_counter()
    while (frame := src.read()) is not None:
        n += 1
        if len(kept) < 64 and (rgb := frame.to_rgb()) is not None:
            kept.append(rgb)
    elapsed = time.perf_counter() - start
    src.close()
    return n / elapsed, n, kept


def preprocess_fps(frames: list[np.ndarray], engine: Engine, total: int) -> tuple[float, int]:
    """Resize/crop frames/s with two threads (cv2 releases the GIL)."""
    spec = engine.spec

    def work(k: int) -> None:
        for i in range(k):
            fit_to_model(frames[i % len(frames)], spec)

    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(work, [total // 2, total - total // 2]))
    return total / (time.perf_counter() - start), total


def infer_fps(engine: Engine, total: int, batch: int = 16) -> tuple[float, int]:
    h, w = engine.spec.input_hw
    x = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)

    async def run() -> tuple[float, int]:
        await asyncio.gather(*[engine.infer_async(x) for _ in range(engine.num_requests)])  # warm
        calls = max(engine.num_requests, total // batch)
        start = time.perf_counter()
        sem = asyncio.Semaphore(engine.num_requests)

        async def one() -> None:
            async with sem:
                await engine.infer_async(x)

        await asyncio.gather(*[one() for _ in range(calls)])
        return calls * batch / (time.perf_counter() - start), calls * batch

    return asyncio.run(run())


def pipeline(clip: Path, model: str, weights: Path | None, short_side: int | None, tmp: Path) -> dict:
    settings = Settings(
        streams={"pipeline": f"bench{int(time.time() * 1000) % 100000}"},
        infer={"max_batch_size": 16, "max_wait_ms": 10, "inflight": 2},
        ingest={"high_water": 256, "frame_short_side_px": short_side},
        models={"weights_dir": weights},
    )
    results_file = tmp / f"results-{model}.jsonl"
    with RedisServer() as server:
        assert server.process is not None
        redis_cpu0 = _cpu_pid_s(server.process.pid)
        report = asyncio.run(
            run_processes(
                settings, redis_url=server.url, sources=[str(clip)], models=[model], results_path=results_file
            )
        )
        redis_cpu = _cpu_pid_s(server.process.pid) - redis_cpu0
    rows = [json.loads(line) for line in results_file.read_text().splitlines()]
    span_s = (max(r["result_ms"] for r in rows) - min(r["capture_ms"] for r in rows)) / 1000.0
    return {
        "fps": len(rows) / span_s,
        "frames": len(rows),
        "mean_batch": report.mean_batch_size,
        "p50_ms": report.p50_ms,
        "p99_ms": report.p99_ms,
        "dead": report.dead_letters,
        # CPU of the four stages after start-up plus redis-server, per frame
        "cpu_ms": (sum(report.stage_cpu_s.values()) + redis_cpu) * 1000.0 / len(rows),
        "stage_cpu_ms": {k: v * 1000.0 / len(rows) for k, v in report.stage_cpu_s.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=900)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--weights-dir", type=Path, default=SHARED / "models" if SHARED.is_dir() else None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    models = args.models.split(",")
    out: dict[str, dict] = {}  # model -> {measure: (rate, cpu ms per item) or pipeline dict}
    with tempfile.TemporaryDirectory(prefix="framestream-bench-") as tmpdir:
        tmp = Path(tmpdir)
        clip = make_clip(tmp / "clip640x480.mp4", args.frames)
        load = os.getloadavg()[0]
        print(
            f"clip: {clip.stat().st_size / 1e6:.1f} MB, {args.frames} frames 640x480 H.264; load {load:.1f}"
        )
        for model in models:
            eng_lat = open_engine(model, weights_dir=args.weights_dir, performance_hint="LATENCY")
            eng_tp = open_engine(model, weights_dir=args.weights_dir, performance_hint="THROUGHPUT")
            best: dict[str, tuple | dict] = {}

            def keep(key: str, value: tuple | dict, best: dict = best) -> None:
                # best round = highest rate (least disturbed by other load)
                old = best.get(key)
                rate = value["fps"] if isinstance(value, dict) else value[0]
                if old is None or rate > (old["fps"] if isinstance(old, dict) else old[0]):
                    best[key] = value

            for rnd in range(args.rounds):
                keep("naive", measured(naive, clip, eng_lat))
                dec = measured(decode_fps, clip)
                keep("decode", dec[:2])
                keep("preprocess", measured(preprocess_fps, dec[2], eng_tp, 2000))
                keep("infer", measured(infer_fps, eng_tp, 2000))
                keep("pipeline", pipeline(clip, model, args.weights_dir, None, tmp))
                keep("pipeline_256", pipeline(clip, model, args.weights_dir, 256, tmp))
                print(f"  {model} round {rnd + 1}: done (load {os.getloadavg()[0]:.1f})", flush=True)
            parts = [best[k] for k in ("decode", "preprocess", "infer")]
            best["ideal"] = (
                1.0 / sum(1.0 / p[0] for p in parts),  # type: ignore[index]
                sum(p[1] for p in parts),  # type: ignore[index]
            )
            out[model] = best
    print()
    print("wall clock (frames/s; best round) and CPU cost (ms per frame, all threads and processes)")
    head = (
        f"{'model':28s} {'naive(a)':>9s} {'decode':>7s} {'prep':>7s} {'infer':>7s} {'ideal(b)':>9s} "
        f"{'variant':>13s} {'fps':>6s} {'x(a)':>5s} {'x(b)':>5s} {'batch':>5s} {'p50ms':>6s} {'p99ms':>6s} "
        f"{'cpu(a)':>6s} {'cpu(b)':>6s} {'cpu':>6s}"
    )
    print(head)
    for model, b in out.items():
        for variant in ("pipeline", "pipeline_256"):
            p = b[variant]
            print(
                f"{model:28s} {b['naive'][0]:9.0f} {b['decode'][0]:7.0f} {b['preprocess'][0]:7.0f} "
                f"{b['infer'][0]:7.0f} {b['ideal'][0]:9.0f} {variant:>13s} {p['fps']:6.0f} "
                f"{p['fps'] / b['naive'][0]:5.2f} {p['fps'] / b['ideal'][0]:5.2f} {p['mean_batch']:5.1f} "
                f"{p['p50_ms']:6.0f} {p['p99_ms']:6.0f} {b['naive'][1]:6.2f} {b['ideal'][1]:6.2f} "
                f"{p['cpu_ms']:6.2f}"
            )
    for model, b in out.items():
        for variant in ("pipeline", "pipeline_256"):
            stages = ", ".join(f"{k} {v:.2f}" for k, v in b[variant]["stage_cpu_ms"].items())
            print(f"{model} {variant} CPU ms/frame by stage: {stages}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
