"""The report: JSON + per-second CSV + a self-contained HTML page whose plots are real images."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from loadtest.cli import app
from loadtest.report import PLOTS, SERIES_COLUMNS, write_report
from loadtest.stats import ResultRow
from loadtest.summary import summarize_run


def _synthetic_run() -> dict:
    """A 6-second run at 50 fps whose latency climbs in the second half (an overload)."""
    rng = np.random.default_rng(1)
    start = 1_700_000_000_000.0
    due = [start + 20.0 * i for i in range(300)]
    rows = []
    for i, d in enumerate(due):
        stages = {"preprocess": 2 + rng.random(), "infer": 10 + 5 * rng.random(), "postprocess": 1.0}
        queue = 0.0 if i < 150 else (i - 150) * 2.0
        latency = sum(stages.values()) + queue + rng.random()
        rows.append(
            ResultRow(
                "cam-0",
                i,
                d,
                d + latency,
                latency,
                stages,
                batch_size=int(rng.integers(1, 9)),
                label="cat" if i % 10 else "dog",
                truth="cat",
            )
        )
    return summarize_run(
        config={"name": "synthetic", "pace": "50 fps"},
        sent={"cam-0": 302},
        sent_due_ms=due + [due[-1] + 20, due[-1] + 40],
        start_ms=start,
        received=rows + rows[:3],
        dead_lettered=1,
        slo={"max_p99_ms": 100.0, "min_fps": None, "max_loss": 0.0},
    )


def _pngs(page: str) -> dict[str, np.ndarray]:
    found = re.findall(r'<img alt="([a-z_]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return {
        name: cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        for name, data in found
    }


def test_report_writes_json_csv_and_html_with_real_plots(tmp_path: Path) -> None:
    run = _synthetic_run()
    assert run["delivery"]["duplicates"] == 3 and run["delivery"]["missing"] == 2
    assert run["delivery"]["lost"] == 1  # one of the two missing frames was dead-lettered
    assert run["accuracy"] == {"top1": 0.9, "labelled": 300}
    assert run["slo"]["passed"] is False  # the overload pushed p99 over 100 ms, and frames are missing

    paths = write_report(run, tmp_path / "report")
    assert json.loads(paths["json"].read_text())["delivery"]["sent"] == 302

    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == SERIES_COLUMNS
    assert sum(int(r["offered"]) for r in table) == 302
    assert sum(int(r["results"]) for r in table) == 300
    late = [float(r["p99_ms"]) for r in table if r["p99_ms"]]
    assert late[-1] > 5 * late[0], "latency over time should show the overload"

    page = paths["html"].read_text()
    assert "FAIL" in page and "p99 latency" in page
    assert "http://" not in page and "https://" not in page, "the page must be self-contained"
    images = _pngs(page)
    assert set(images) == set(PLOTS)
    for name, img in images.items():
        assert img is not None, f"{name}: not a decodable PNG"
        h, w, _ = img.shape
        assert h >= 200 and w >= 400, f"{name}: {w}x{h} is too small"
        # a plot with data has many colours and a good share of non-background pixels
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20, f"{name}: looks blank"
        assert (img.min(axis=2) < 200).mean() > 0.02, f"{name}: almost nothing drawn"


def test_report_command_reads_a_run_json(tmp_path: Path) -> None:
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps(_synthetic_run()))
    result = CliRunner().invoke(app, ["report", str(run_json), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000
    assert (tmp_path / "out" / "series.csv").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = CliRunner().invoke(app, ["report", str(bad), "--out", str(tmp_path / "o2")])
    assert result.exit_code != 0 and "not a loadtest replay result" in result.output
