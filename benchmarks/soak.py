"""Memory of `framestream run` (the driver) and of every stage replica while a looping source plays.

    .venv/bin/python -m benchmarks.soak [--minutes 5] [--model mobilenet-v1-0.25-128-quant]

Starts ``framestream run --loop --timeout`` (Ray runner, a private redis-server, the demo clip), adds a
second source over the HTTP API that loops a clip until the run's timeout, samples the resident
memory (VmRSS from /proc) of the driver and of each process it started every 10 s, and prints one
row per minute plus the growth from the first minute to the last. At the end it checks that the
summary lists the source added over HTTP. Linux only; uses the synthetic stand-in unless
FRAMESTREAM_MODELS__WEIGHTS_DIR points at real weights.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from rich.console import Console

from benchmarks.procs import descendants, own
from stream.tables import Column, print_table

_MB = 1024 * 1024


def _rss_by_role(root_pid: int) -> dict[str, int]:
    """Resident bytes of `root_pid` ("driver") and every descendant, summed by role."""
    me = own(root_pid)
    out = {"driver": me.rss_bytes if me else 0}
    for proc in descendants(root_pid):
        out[proc.role] = out.get(proc.role, 0) + proc.rss_bytes
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--model", default="mobilenet-v1-0.25-128-quant")
    args = parser.parse_args()
    from stream.adapters.media.video import write_demo_clip

    console = Console()
    with tempfile.TemporaryDirectory(prefix="framestream-soak-") as tmp:
        clip = write_demo_clip(Path(tmp) / "loop.mp4", frames=300)
        env = {**os.environ, "CI": "true", "FRAMESTREAM_MODELS__CACHE_DIR": str(Path(tmp) / "cache")}
        for name in ("FRAMESTREAM_API__ADMIN_TOKENS", "FRAMESTREAM_API__READ_TOKENS"):
            env.pop(name, None)  # so the run makes its own token and prints it
        cmd = [sys.executable, "-m", "stream.cli", "run", "--model", args.model]
        cmd += ["--loop", "--timeout", str(args.minutes * 60)]
        run = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output: list[str] = []
        api: list[str] = []

        def read() -> None:
            assert run.stdout is not None
            for line in run.stdout:
                output.append(line)
                found = re.search(r"^console: (http://[\d.:]+)/\?token=(\S+)", line)
                if found:  # the run's generated admin token guards its API
                    api.extend([found[1], found[2]])

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + 300
        while not api and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if not api:
            run.kill()
            sys.exit("framestream run did not print its console link:\n" + "".join(output[-40:]))
        added = httpx.post(
            f"{api[0]}/v1/sources",
            json={"uri": str(clip), "loop": True},
            headers={"Authorization": f"Bearer {api[1]}"},
            timeout=30,
        )
        added.raise_for_status()
        source = added.json()["id"]
        started = time.monotonic()
        samples: list[tuple[float, dict[str, int]]] = []
        while run.poll() is None:
            samples.append((time.monotonic() - started, _rss_by_role(run.pid)))
            time.sleep(10)
        reader.join(timeout=30)
    playing = [(t, sample) for t, sample in samples if t < args.minutes * 60 - 5]  # not the drain
    _report(console, playing)
    out = Path("out")
    out.mkdir(exist_ok=True)
    (out / "soak.json").write_text(json.dumps({"samples": samples}))
    summary = "".join(output)
    listed = source in summary
    console.print(
        f"source added over HTTP ({source}) in the summary: {listed}; run exit code {run.returncode}"
    )
    print(summary[-3000:])
    if not listed or run.returncode != 0:
        sys.exit(1)


def _report(console: Console, samples: list[tuple[float, dict[str, int]]]) -> None:
    """One row per process role: resident MB at the end of each minute, and the growth from the
    end of the first minute (everything warm) to the last sample."""
    if not samples:
        return
    by_minute: dict[int, dict[str, int]] = {}
    for t, sample in samples:
        by_minute[int(t // 60)] = sample
    warm = by_minute[min(by_minute)]
    last = samples[-1][1]
    roles = sorted({r for _, s in samples for r in s}, key=lambda r: (r != "driver", -last.get(r, 0)))
    minutes = sorted(by_minute)
    columns = [Column("process", key=True), *(Column(f"min {m + 1}", justify="right") for m in minutes)]
    columns.append(Column("growth after min 1", justify="right"))
    rows = [
        [role, *(f"{by_minute[m].get(role, 0) / _MB:.0f}" for m in minutes),
         f"{(last.get(role, 0) - warm.get(role, 0)) / _MB:+.1f}"]
        for role in roles
    ]  # fmt: skip
    print_table(columns, rows, title="resident memory (MB) while looping sources play", console=console)


if __name__ == "__main__":
    main()
