"""`loadtest bench` compares the Ray Serve app with the stage processes round by round: each round
runs the two back to back, so a slow minute of the machine weighs on both sides of a ratio."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.bench import run as bench
from loadtest.bench.baselines import Measured


def _runner(figures: list[float]):
    it = iter(figures)

    def run(clip: Path, model: str, *, frames: int, weights_dir: Path | None) -> Measured:
        return Measured("x", next(it))

    return run


def test_ray_row_carries_the_median_of_round_by_round_ratios(monkeypatch: pytest.MonkeyPatch) -> None:
    # the machine is fast in round 1 and slow in round 2: best-of per system would pair the stage
    # processes' fast round with the app's better (slow-round) figure
    monkeypatch.setitem(bench._RUNNERS, "framestream", _runner([600.0, 400.0, 500.0]))
    monkeypatch.setitem(bench._RUNNERS, "framestream_ray", _runner([570.0, 420.0, 450.0]))
    rows = bench.bench_model(Path("clip.mp4"), "m", frames=10, weights_dir=None,
                             systems=("framestream", "framestream_ray"), repeat=3)  # fmt: skip
    by = {r["system"]: r for r in rows}
    ray = by["framestream_ray"]
    assert ray["extra"]["ratio_to_processes_by_round"] == pytest.approx([0.95, 1.05, 0.9])
    assert ray["ratio_to_processes"] == pytest.approx(0.95)
    assert by["framestream"]["ratio_to_processes"] is None
    assert ray["fps"] == 570.0 and by["framestream"]["fps"] == 600.0  # the table still keeps the best
    table = bench.markdown_table(rows)
    assert "- m: Ray Serve app / stage processes, round by round 0.95, 1.05, 0.90; median 0.95" in table


def test_a_failed_round_is_left_out_of_the_ratios(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bench._RUNNERS, "framestream", _runner([500.0, 500.0]))
    monkeypatch.setitem(bench._RUNNERS, "framestream_ray", _runner([0.0, 450.0]))
    rows = bench.bench_model(Path("clip.mp4"), "m", frames=10, weights_dir=None,
                             systems=("framestream", "framestream_ray"), repeat=2)  # fmt: skip
    ray = next(r for r in rows if r["system"] == "framestream_ray")
    assert ray["extra"]["ratio_to_processes_by_round"] == pytest.approx([0.9])
