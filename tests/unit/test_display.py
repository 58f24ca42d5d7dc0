"""`framestream run`'s live view and summary never cut a source name or a number, however narrow the
terminal, and the summary's JSON form has the same numbers."""

from __future__ import annotations

from rich.console import Console

from stream.runners.display import Snapshot, StageRow, Summary, progress_table, summary_dict, summary_table

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


def test_redirected_to_a_file_at_80_columns_the_summary_cuts_no_number_and_no_name() -> None:
    summary = Summary(
        model="mobilenet-v2-1.0-224-quant", synthetic=True, wall_s=12345.6, published=1234567,
        results=1234560, duplicates=12345, dropped=98765, dead_lettered=4321, skipped=7, p50_ms=12345.6,
        p99_ms=98765.4, max_ms=123456.7, interrupted=True,
        per_source={LONG: {"published": 1234567, "results": 1234560, "label": "Egyptian cat", "error": None},
                    "bad": {"published": 0, "results": 0, "label": "-", "error": "cannot open video"}},
    )  # fmt: skip
    console = Console(width=80, record=True, force_terminal=False, color_system=None)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "…" not in text, text
    for number in (
        "1,234,567",
        "1,234,560",
        "123,456.7 ms",
        "12,345",
        "98,765",
        "4,321",
        "12,345.6 ms",
        "98,765.4 ms",
    ):
        assert number in text, (number, text)
    assert LONG in text
    as_data = summary_dict(summary)
    assert (as_data["published"], as_data["results"], as_data["failed"]) == (1234567, 1234560, ["bad"])
