"""CPU per frame of ingest's frame preparation: decode an H.264 clip and make the frame it publishes.

    .venv/bin/python -m benchmarks.ingest [--clip FILE] [--frames 600]

Rows (CPU time of this process, all threads, per frame, best of 3 passes):
- RGB path: FFmpeg converts each frame to RGB, OpenCV encodes the JPEG (what ingest did first);
- I420 planes: the decoded planes go into the JPEG as they are (``ingest.encoding: jpeg``);
- I420 planes at the size a 224 / 128 model needs (``frame_short_side_px: auto``);
- raw RGB made to a 128x128 model's input (``ingest.encoding: raw``, the default).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
from rich.console import Console
from rich.table import Table

from stream.adapters.media.jpeg import encode_jpeg
from stream.adapters.media.video import Frame, VideoFileSource, write_demo_clip
from stream.core.geometry import ModelInput
from stream.settings import IngestSettings
from stream.stages.ingest.frames import prepare_frame


def _rgb_path(clip: Path, n: int) -> float:
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = time.process_time()
        done = 0
        for frame in container.decode(stream):
            encode_jpeg(frame.to_ndarray(format="rgb24"), 90)
            done += 1
            if done == n:
                break
    return (time.process_time() - start) / done


def _planes_path(clip: Path, n: int, prepare: Callable[[Frame], object]) -> float:
    source = VideoFileSource(str(clip))
    start = time.process_time()
    done = 0
    while done < n and (frame := source.read()) is not None:
        prepare(frame)
        done += 1
    source.close()
    return (time.process_time() - start) / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", type=Path, help="H.264 clip (default: a generated 640x480 one)")
    parser.add_argument("--frames", type=int, default=600)
    args = parser.parse_args()
    cfg = IngestSettings(encoding="jpeg")
    raw = IngestSettings(encoding="raw")
    v1 = ModelInput((128, 128), "stretch")
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or write_demo_clip(Path(tmp) / "clip.mp4", frames=args.frames, size=(640, 480))
        rows: dict[str, Callable[[], float]] = {
            "RGB path (rgb24 + OpenCV JPEG)": lambda: _rgb_path(clip, args.frames),
            "I420 planes -> JPEG": lambda: _planes_path(clip, args.frames, lambda f: prepare_frame(f, cfg)),
            "I420 planes, auto size for a 224 model": lambda: _planes_path(
                clip, args.frames, lambda f: prepare_frame(f, cfg, 224)
            ),
            "I420 planes, auto size for a 128 model": lambda: _planes_path(
                clip, args.frames, lambda f: prepare_frame(f, cfg, 128)
            ),
            "I420 planes -> raw RGB made to a 128x128 model input": lambda: _planes_path(
                clip, args.frames, lambda f: prepare_frame(f, raw, 128, v1)
            ),
        }
        results: dict[str, float] = {name: float("inf") for name in rows}
        for _ in range(3):  # alternate the rows, keep each one's best pass
            for name, run in rows.items():
                results[name] = min(results[name], run())
    table = Table(title=f"ingest: CPU per frame, {clip.name if args.clip else 'generated 640x480 H.264'}")
    table.add_column("path")
    table.add_column("CPU ms / frame", justify="right")
    table.add_column("x RGB path", justify="right")
    base = results["RGB path (rgb24 + OpenCV JPEG)"]
    for name, value in results.items():
        table.add_row(name, f"{value * 1000:.2f}", f"{value / base:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
