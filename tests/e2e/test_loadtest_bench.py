"""`loadtest bench` runs every single-process system on one clip and writes the table of docs/performance.md.
(The framestream and Ray rows take tens of seconds each; `make bench` runs them.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_bench_rows_have_fps_latency_and_ratios(shared_dir: Path, tmp_path: Path) -> None:
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    env = {**os.environ, "CI": "true", "FRAMESTREAM_MODELS__WEIGHTS_DIR": str(shared_dir / "models")}
    cmd = [
        sys.executable, "-m", "loadtest", "bench", "--model", "mobilenet-v1-0.25-128-quant", "--frames", "60",
        "--systems", "naive,best_single,ideal,limit", "--repeat", "2",
        "--json", str(out), "--markdown", str(md),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    rows = {r["system"]: r for r in result["rows"]}
    # --repeat 2: every system measured twice (rounds alternate), the best kept
    assert result["repeat"] == 2 and proc.stdout.count("measuring naive loop") == 2
    assert set(rows) == {"naive", "best_single", "ideal", "limit"}
    for r in rows.values():
        assert {
            "name",
            "fps",
            "p50_ms",
            "p99_ms",
            "ratio_to_naive",
            "ratio_to_ideal",
            "ratio_to_limit",
        } <= set(r)
        assert r["fps"] > 0 and r["ratio_to_ideal"] > 0 and r["ratio_to_limit"] > 0
    assert rows["naive"]["ratio_to_naive"] == 1.0 and rows["ideal"]["ratio_to_ideal"] == 1.0
    assert rows["limit"]["ratio_to_limit"] == 1.0
    # the limit is cores / (decode CPU + bare-model CPU per frame), from the parts it shows
    lim = rows["limit"]["extra"]
    assert set(lim) == {"decode_cpu_ms", "model_cpu_ms", "cores"} and lim["decode_cpu_ms"] > 0
    expected = lim["cores"] * 1000 / (lim["decode_cpu_ms"] + lim["model_cpu_ms"])
    assert rows["limit"]["fps"] == pytest.approx(expected)
    assert rows["naive"]["p50_ms"] <= rows["naive"]["p99_ms"]
    assert set(rows["ideal"]["extra"]) == {"decode_ms", "preprocess_ms", "infer_ms"}
    table = md.read_text().splitlines()
    assert table[0].startswith("| model | system | frames/s") and len(table) == 2 + 4
    assert "naive loop" in proc.stdout and "sum-of-parts ideal" in proc.stdout and "x limit" in table[0]
