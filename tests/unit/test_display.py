"""The Ray runner's live view and summary never cut a source name, however narrow the terminal."""

from __future__ import annotations

from rich.console import Console

from deployments.local.display import Snapshot, StageRow, Summary, progress_table, summary_table

LONG = "parking-lot-north-entrance-camera-07"


def _render(renderable: object, width: int) -> str:
    console = Console(width=width, record=True, force_terminal=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_summary_keeps_every_source_name_whole_at_60_columns() -> None:
    summary = Summary(
        model="mobilenet-v1-0.25-128-quant", synthetic=False, wall_s=10.0, published=20, results=20,
        duplicates=0, dropped=0, dead_lettered=0, skipped=0, p50_ms=10.0, p99_ms=20.0, max_ms=30.0,
        per_source={LONG: {"published": 10, "results": 10, "label": "Egyptian cat"},
                    "demo": {"published": 10, "results": 10, "label": "tabby, tabby cat"}},
    )  # fmt: skip
    text = _render(summary_table(summary), 60)
    assert LONG in text and "demo" in text


def test_the_live_view_keeps_every_source_name_whole_at_50_columns() -> None:
    snap = Snapshot(
        elapsed_s=1.0, stages=[StageRow("infer", 2, 300.0, 1000, 16)], labels={LONG: "Egyptian cat"},
        results={LONG: 1000}, done=set(), published=1000, dead=0,
    )  # fmt: skip
    assert LONG in _render(progress_table(snap), 50)
