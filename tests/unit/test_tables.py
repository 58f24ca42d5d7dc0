"""Command-line tables never cut a name: plain columns into a pipe, a folding table in a wide
terminal, one block per row in a narrow one."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from stream.tables import Column, plain_table, print_table

NAMES = ["mobilenet-v3-small-1.0-224-tf", "mobilenet-v1-0.25-128-quant", "mobilenetv2-7"]
COLUMNS = [Column("name", key=True), *(Column(h) for h in ("framework", "input", "output", "weights"))]
ROWS = [[n, "tf_savedmodel", "224x224x3 NHWC", "probabilities", "synthetic only"] for n in NAMES]


def _render(width: int, terminal: bool) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=terminal, color_system=None)
    print_table(COLUMNS, ROWS, title="models", console=console)
    return buf.getvalue()


def _whole_names(text: str) -> set[str]:
    words = {w.strip("│┃") for line in text.splitlines() for w in line.split()}
    return {n for n in NAMES if n in words}


@pytest.mark.parametrize("width", [40, 60, 80, 120, 200])
@pytest.mark.parametrize("terminal", [True, False])
def test_every_name_is_printed_whole_at_any_width(width, terminal):
    out = _render(width, terminal)
    assert _whole_names(out) == set(NAMES), out
    assert "…" not in out


def test_a_pipe_gets_one_plain_line_per_row_with_every_cell():
    out = _render(60, terminal=False)
    lines = out.splitlines()
    assert lines[0].split() == ["name", "framework", "input", "output", "weights"]
    assert [ln.split()[0] for ln in lines[1:]] == NAMES
    assert all("synthetic only" in ln and "probabilities" in ln for ln in lines[1:])
    assert "┃" not in out and "│" not in out


def test_a_wide_terminal_gets_a_table_and_a_narrow_one_blocks():
    wide, narrow = _render(200, terminal=True), _render(60, terminal=True)
    assert "┃ name" in wide and sum(n in ln for ln in wide.splitlines() for n in NAMES) == len(NAMES)
    assert "│" not in narrow
    block = narrow.split(NAMES[0])[1]
    assert "framework  tf_savedmodel" in block and "weights    synthetic only" in block


def test_cells_are_text_not_markup():
    assert "[red]x[/red]" in plain_table([Column("a")], [["[red]x[/red]"]])
    buf = io.StringIO()
    print_table([Column("a", key=True)], [["[red]x[/red]"]],
                console=Console(file=buf, width=80, force_terminal=True, color_system=None))  # fmt: skip
    assert "[red]x[/red]" in buf.getvalue()


def test_a_row_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="2 cells for 1 columns"):
        print_table([Column("a")], [["x", "y"]], console=Console(file=io.StringIO()))
