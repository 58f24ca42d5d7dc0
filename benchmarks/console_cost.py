"""What the web console costs: the ingress replica's CPU with 0, 1 and 3 open console feeds, how
often snapshots come, and how often ingest writes thumbnails.

    .venv/bin/python -m benchmarks.console_cost [--window-s 30] [--model mobilenet-v1-0.25-128]

Starts ``framestream run --loop`` (Ray runner, a private redis-server) with two generated 640x480
clips, then for each number of feeds opens that many ``GET /v1/console/events`` streams and reads
the ingress replica's CPU time (/proc) over `--window-s`. Linux only; the synthetic stand-in
unless FRAMESTREAM_MODELS__WEIGHTS_DIR points at real weights.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis

from benchmarks.procs import descendants

_PRINTED = {
    "console": r"console: (http://[\d.:]+/)",
    "redis": r"redis-server \(private\) at 127\.0\.0\.1:(\d+)",
}
"""What `framestream run` prints that this needs."""


def _follow(url: str, stop: threading.Event, snapshots: list[int]) -> None:
    """Read one console feed until `stop`; the `t_ms` of every snapshot into `snapshots`."""
    with httpx.Client(timeout=None) as http, http.stream("GET", url) as response:
        event = ""
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "snapshot":
                snapshots.append(json.loads(line[6:])["t_ms"])


def _ingress_cpu_s(run_pid: int) -> float:
    return sum(p.cpu_s for p in descendants(run_pid) if p.role == "Ingress")


def _measure(run_pid: int, console: str, feeds: int, window_s: float) -> tuple[float, list[int]]:
    """(ingress CPU seconds over `window_s` with `feeds` open, the first feed's snapshot times)."""
    stop = threading.Event()
    times: list[list[int]] = [[] for _ in range(feeds)]
    threads = [
        threading.Thread(target=_follow, args=(f"{console}v1/console/events", stop, t), daemon=True)
        for t in times
    ]
    for thread in threads:
        thread.start()
    time.sleep(2.0)  # the feeds' start (recent results and events) is not what a page costs later
    before = _ingress_cpu_s(run_pid)
    time.sleep(window_s)
    used = _ingress_cpu_s(run_pid) - before
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    return used, times[0] if times else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--model", default="mobilenet-v1-0.25-128")
    args = parser.parse_args()
    from stream.adapters.media.video import write_demo_clip
    from stream.core.keys import PipelineKeys

    with tempfile.TemporaryDirectory(prefix="framestream-console-") as tmp:
        clips = [write_demo_clip(Path(tmp) / f"{n}.mp4", frames=300, size=(640, 480)) for n in "ab"]
        env = {**os.environ, "CI": "true", "PYTHONUNBUFFERED": "1",
               "FRAMESTREAM_MODELS__CACHE_DIR": str(Path(tmp) / "cache")}  # fmt: skip
        cmd = [
            sys.executable,
            "-m",
            "stream.cli",
            "run",
            "--model",
            args.model,
            "--loop",
            "--timeout",
            "1800",
        ]
        for clip in clips:
            cmd += ["--source", str(clip)]
        run = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output: list[str] = []
        found: dict[str, str] = {}

        def read() -> None:
            assert run.stdout is not None
            for line in run.stdout:
                output.append(line)
                for name, pattern in _PRINTED.items():
                    if m := re.search(pattern, line):
                        found[name] = m[1]

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + 400
        while "console" not in found and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            if "console" not in found:
                sys.exit("framestream run did not print its console address:\n" + "".join(output[-40:]))
            time.sleep(10.0)  # results flowing
            for feeds in (0, 1, 3):
                used, snaps = _measure(run.pid, found["console"], feeds, args.window_s)
                line = f"{feeds} feed(s): ingress CPU {used:.2f} s in {args.window_s:.0f} s"
                line += f" ({100 * used / args.window_s:.1f}% of a core)"
                if len(snaps) > 2:
                    gaps = [b - a for a, b in zip(snaps, snaps[1:], strict=False)]
                    median = statistics.median(gaps)
                    line += f"; snapshots every {median:.0f} ms (median, {min(gaps)}-{max(gaps)})"
                print(line, flush=True)
            store = redis.Redis(port=int(found["redis"]))
            store.config_resetstat()
            time.sleep(20.0)
            sets = int(store.info("commandstats").get("cmdstat_set", {}).get("calls", 0))
            keys = PipelineKeys()
            sizes = [store.strlen(keys.for_source(s).thumbnail(s)) for s in ("a", "b")]
            print(f"thumbnails: {sets} writes in 20 s for 2 sources; {sizes} bytes now")
            store.close()
        finally:
            run.send_signal(signal.SIGINT)
            run.wait(timeout=180)
            reader.join(timeout=30)


if __name__ == "__main__":
    main()
