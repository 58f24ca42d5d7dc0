"""The single-process systems `loadtest bench` compares framestream with, and the parts of the
sum-of-parts ideal. Each returns a `Measured` row: frames/s and per-frame latency.

- naive: OpenCV read -> resize -> synchronous OpenVINO, batch 1 (what one writes first);
- best single process: FFmpeg-threaded decode and resize in a thread, batches on OpenVINO's
  AsyncInferQueue with several requests in flight (THROUGHPUT hint), no Redis;
- ideal parts: decode alone, preprocess alone, inference alone (best batch), each per frame;
- benchmark_app: OpenVINO's own tool on the bare model file (the inference ceiling);
- the limit: what decoding and the bare model allow on this machine's cores, from the CPU each
  needs per frame (`decode_cpu` with the pipeline's own decoder, `cores / benchmark_app's frames/s`).
"""

from __future__ import annotations

import asyncio
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from loadtest.stats import sustained_rate
from stream.core.latency import LatencyHistogram

__all__ = [
    "Measured",
    "best_single_process",
    "cores",
    "decode_cost",
    "decode_cpu",
    "hardware_limit",
    "infer_cost",
    "decode_frames",
    "make_clip",
    "measured_from_results",
    "naive_loop",
    "preprocess_cost",
    "run_benchmark_app",
]


@dataclass
class Measured:
    """One system's figures: `fps` end to end, latency per frame (ms) where it has a meaning."""

    name: str
    fps: float | None
    p50_ms: float | None = None
    p99_ms: float | None = None
    frames: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def percentiles(latencies_ms: list[float]) -> tuple[float | None, float | None]:
    """p50 and p99 by the project's one definition (`LatencyHistogram`)."""
    hist = LatencyHistogram()
    hist.record_many(latencies_ms)
    return hist.percentile(50), hist.percentile(99)


def make_clip(path: Path, *, frames: int = 300, width: int = 640, height: int = 480, fps: int = 30) -> Path:
    """An H.264 clip of moving shapes on a drifting gradient (PyAV/libx264), so frames differ."""
    import av

    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(frames):
            img = np.empty((height, width, 3), np.uint8)
            img[..., 0] = (xx + 3 * i) % 256
            img[..., 1] = (yy + 2 * i) % 256
            img[..., 2] = ((xx + yy) // 2 + i) % 256
            cx, cy = (
                int(width / 2 + width / 3 * np.sin(i / 15)),
                int(height / 2 + height / 3 * np.cos(i / 20)),
            )
            cv2.circle(img, (cx, cy), 60, (255, 255, 255), -1)
            cv2.rectangle(img, (i * 7 % width, 50), (i * 7 % width + 80, 170), (20, 20, 200), -1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _cv2_frames(clip: Path, limit: int) -> Any:
    """BGR frames from OpenCV, looping the clip until `limit` frames."""
    n = 0
    while n < limit:
        cap = cv2.VideoCapture(str(clip))
        got = False
        while n < limit:
            ok, bgr = cap.read()
            if not ok:
                break
            got = True
            n += 1
            yield bgr
        cap.release()
        if not got:
            raise ValueError(f"{clip}: OpenCV cannot read any frame")


def naive_loop(clip: Path, model: str, *, frames: int, weights_dir: Path | None) -> Measured:
    """OpenCV read -> RGB -> resize -> synchronous OpenVINO batch 1, one frame at a time."""
    from stream.adapters.media.image import fit_to_model
    from stream.adapters.openvino.engine import open_engine

    with open_engine(model, weights_dir=weights_dir, performance_hint="LATENCY") as engine:
        latencies: list[float] = []
        t0 = time.perf_counter()
        for bgr in _cv2_frames(clip, frames):
            start = time.perf_counter()
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            engine.infer(fit_to_model(rgb, engine.spec)[None])
            latencies.append((time.perf_counter() - start) * 1000.0)
        elapsed = time.perf_counter() - t0
    p50, p99 = percentiles(latencies)
    return Measured("naive loop", len(latencies) / elapsed, p50, p99, len(latencies),
                    "OpenCV read, resize, sync OpenVINO batch 1 (latency: read done -> result)")  # fmt: skip


def decode_frames(clip: Path, limit: int) -> Any:
    """RGB frames from PyAV (FFmpeg frame threads), looping the clip until `limit` frames."""
    import av

    n = 0
    while n < limit:
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if n >= limit:
                    return
                n += 1
                yield frame.to_ndarray(format="rgb24")


def _take_batch(handoff: queue.Queue[Any], batch: int) -> list[Any]:
    """Block for one item, then take whatever else is ready, up to `batch` (dynamic batching)."""
    items = [handoff.get()]
    while len(items) < batch and items[-1] is not None:
        try:
            items.append(handoff.get_nowait())
        except queue.Empty:
            break
    return items


def best_single_process(
    clip: Path, model: str, *, frames: int, weights_dir: Path | None, batch: int = 8, hint: str = "THROUGHPUT"
) -> Measured:
    """Decode (OpenCV/FFmpeg) + resize in one thread; in the other, take what is ready (up to
    `batch`) and run it split over OpenVINO's request pool, so decode and inference overlap."""
    from stream.adapters.media.image import fit_to_model
    from stream.adapters.openvino.engine import open_engine

    engine = open_engine(model, weights_dir=weights_dir, performance_hint=hint)
    handoff: queue.Queue[tuple[np.ndarray, float] | None] = queue.Queue(maxsize=4 * batch)

    def produce() -> None:
        try:
            for bgr in _cv2_frames(clip, frames):
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                handoff.put((fit_to_model(rgb, engine.spec), time.perf_counter()))
        finally:
            handoff.put(None)

    latencies: list[float] = []
    with engine:
        producer = threading.Thread(target=produce, daemon=True)
        t0 = time.perf_counter()
        producer.start()
        finished = False
        while not finished:
            items = _take_batch(handoff, batch)
            if items[-1] is None:
                finished = True
                items.pop()
            if items:
                engine.infer(np.stack([t for t, _ in items]))
                done = time.perf_counter()
                latencies.extend((done - s) * 1000.0 for _, s in items)
        elapsed = time.perf_counter() - t0
        producer.join()
    p50, p99 = percentiles(latencies)
    note = f"decode+resize thread, dynamic batches <= {batch} over the {hint} request pool, no Redis"
    return Measured("best single process", len(latencies) / elapsed, p50, p99, len(latencies), note)


def _rate(times_ms: list[float]) -> float | None:
    if len(times_ms) < 2:
        return None
    span = max(times_ms) - min(times_ms)
    return (len(times_ms) - 1) / (span / 1000.0) if span > 0 else None


def measured_from_results(name: str, rows: list[Any], expected: int, note: str) -> Measured:
    """A row from framestream results (`stats.ResultRow`): frames/s sustained while every stage
    was busy (`stats.sustained_rate`: start-up, fill and the drain after ingest finished are not
    counted), latency = each frame's end-to-end figure. The first-to-last-result rate, which
    overstates a short run, is kept in ``extra`` for comparison."""
    if not rows:
        return Measured(name, None, note=f"no results ({note})")
    p50, p99 = percentiles([r.latency_ms for r in rows])
    batches = [r.batch_size for r in rows if r.batch_size]
    mean_batch = len(batches) / sum(1.0 / b for b in batches) if batches else None
    first_to_last = _rate([r.result_ms for r in rows])
    extra = {"expected": expected, "mean_batch": mean_batch, "first_to_last_fps": first_to_last}
    fps = sustained_rate(rows)
    if fps is None:
        fps, note = first_to_last, f"{note}; run too short for a sustained rate: first to last result"
    return Measured(name, fps, p50, p99, len(rows), note, extra)


def _time_per_item(fn: Callable[[], int], min_s: float = 1.0) -> float:
    """Seconds per item: call `fn` (returns items done) until `min_s` passed."""
    done = 0
    t0 = time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s and done:
            return elapsed / done


def decode_cost(clip: Path, *, frames: int) -> float:
    """Seconds per frame to decode the clip to RGB (PyAV, FFmpeg threads on every core)."""
    return _time_per_item(lambda: sum(1 for _ in decode_frames(clip, frames)), min_s=0.5)


def decode_cpu(clip: Path, *, frames: int, min_s: float = 2.0) -> float:
    """CPU seconds per frame (every thread of this process) to decode the clip the way ingest does:
    `VideoFileSource`, FFmpeg's slice threads, frames left in the decoder's own pixel format."""
    from stream.adapters.media.video import VideoFileSource

    def decode_once() -> int:
        source = VideoFileSource(str(clip))
        try:
            n = 0
            while n < frames and source.read() is not None:
                n += 1
            return n
        finally:
            source.close()

    decode_once()  # warm-up: the file in the page cache, FFmpeg's threads started
    done, cpu0, t0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < min_s or not done:
        done += decode_once()
    return (time.process_time() - cpu0) / done


def hardware_limit(decode_cpu_s: float, bare_fps: float, n_cores: int | None = None) -> float:
    """Frames/s that decoding plus the bare model allow: cores / (decode CPU + model CPU per frame),
    the model's CPU per frame being `cores / bare_fps` (benchmark_app keeps every core busy)."""
    n = n_cores or cores()
    return n / (decode_cpu_s + n / bare_fps)


def preprocess_cost(clip: Path, model: str) -> float:
    """Seconds per frame for the model's resize/crop of a decoded frame (one thread per core)."""
    from concurrent.futures import ThreadPoolExecutor

    from stream.adapters.media.image import fit_to_model
    from stream.settings import load_settings
    from stream.zoo.repository import load_spec

    spec = load_spec(model, load_settings().models.repository)
    sample = list(decode_frames(clip, 64))
    with ThreadPoolExecutor(max_workers=max(1, cores())) as pool:
        return _time_per_item(lambda: len(list(pool.map(lambda f: fit_to_model(f, spec), sample))))


def infer_cost(model: str, *, weights_dir: Path | None, batch: int = 8) -> float:
    """Seconds per frame of batched async inference alone, several requests in flight."""
    from stream.adapters.openvino.engine import open_engine

    with open_engine(model, weights_dir=weights_dir, performance_hint="THROUGHPUT") as engine:
        h, w = engine.input_hw
        x = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)

        async def burst() -> int:
            await asyncio.gather(*(engine.infer_async(x) for _ in range(engine.num_requests * 4)))
            return batch * engine.num_requests * 4

        asyncio.run(burst())  # warm-up
        return _time_per_item(lambda: asyncio.run(burst()), min_s=2.0)


def cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_LAT = re.compile(r"Median:\s+([\d.]+)\s*(us|ms)")
_FPS = re.compile(r"Throughput:\s+([\d.]+)\s*FPS")


def run_benchmark_app(model_file: Path, *, seconds: int = 10) -> Measured:
    """OpenVINO's benchmark_app on the bare model (throughput hint, CPU); p50 is its median."""
    exe = Path(sys.executable).with_name("benchmark_app")
    binary = str(exe) if exe.exists() else shutil.which("benchmark_app")
    if binary is None:
        return Measured(
            "benchmark_app", None, note="benchmark_app not found (pip install openvino-dev tools)"
        )
    cmd = [binary, "-m", str(model_file), "-d", "CPU", "-hint", "throughput", "-t", str(seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
    text = proc.stdout + proc.stderr
    fps = _FPS.search(text)
    if proc.returncode != 0 or fps is None:
        tail = text.strip().splitlines()[-1:] or ["no output"]
        return Measured("benchmark_app", None, note=f"benchmark_app failed: {tail[0]}")
    lat = _LAT.search(text)
    p50 = None if lat is None else float(lat.group(1)) / (1000.0 if lat.group(2) == "us" else 1.0)
    return Measured("benchmark_app", float(fps.group(1)), p50, None, 0,
                    f"bare model {model_file.name}, -hint throughput, batch 1, {seconds} s")  # fmt: skip
