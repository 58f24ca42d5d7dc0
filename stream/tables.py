"""Tables for the command line that never cut the names a user types next.

`print_table` picks the layout from where the output goes:
- not a terminal (a pipe, a file): plain aligned columns, one line per row, nothing cut, so
  `framestream models list | grep v2` and `| cut` work;
- a terminal wide enough for the name columns whole and a few characters of every other column: a
  rich table whose name columns never wrap and whose other columns fold;
- a terminal narrower than that: one block per row, the name on its own line, then one
  `column  value` line per other column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["Column", "plain_table", "print_table"]

_FOLDED_MIN_CHARS = 6  # narrowest a folded column gets before the block layout reads better
_CELL_PADDING = 3  # rich's default: one space either side plus the vertical rule


@dataclass(frozen=True)
class Column:
    """One column. `key` marks a name the user must be able to read whole (model, source)."""

    header: str
    key: bool = False
    justify: Literal["left", "right"] = "left"


def plain_table(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> str:
    """Aligned plain text, a header line and one line per row; cells are never cut."""
    cells = [[c.header for c in columns], *[list(r) for r in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for line in cells:
        parts = [
            cell.rjust(w) if col.justify == "right" else cell.ljust(w)
            for cell, w, col in zip(line, widths, columns, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


def _min_width(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> int:
    total = 1
    for i, col in enumerate(columns):
        longest = max([len(col.header), *(len(r[i]) for r in rows)])
        total += (longest if col.key else min(longest, _FOLDED_MIN_CHARS)) + _CELL_PADDING
    return total


def _blocks(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> str:
    keys = [i for i, c in enumerate(columns) if c.key] or [0]
    rest = [i for i in range(len(columns)) if i not in keys]
    label_width = max((len(columns[i].header) for i in rest), default=0)
    out: list[str] = []
    for row in rows:
        out.append("  ".join(row[i] for i in keys))
        out += [f"  {columns[i].header.ljust(label_width)}  {row[i]}" for i in rest]
    return "\n".join(out) + "\n"


def print_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    console: Console | None = None,
) -> None:
    """Print `rows` (strings, one per column) in the layout that fits where the output goes."""
    console = console or Console()
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row has {len(row)} cells for {len(columns)} columns: {row!r}")
    if not console.is_terminal:
        console.file.write(plain_table(columns, rows))
        return
    if _min_width(columns, rows) > console.width:
        if title:
            console.print(title, style="bold", highlight=False)
        console.print(_blocks(columns, rows), end="", highlight=False, markup=False, soft_wrap=True)
        return
    table = Table(title=title)
    for i, col in enumerate(columns):
        longest = max([len(col.header), *(len(r[i]) for r in rows)])
        if col.key:
            table.add_column(col.header, justify=col.justify, no_wrap=True, min_width=longest)
        else:
            table.add_column(
                col.header, justify=col.justify, overflow="fold", min_width=min(longest, _FOLDED_MIN_CHARS)
            )
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # cells are text, never markup
    console.print(table)
