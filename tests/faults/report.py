"""`make faults`: run the fault suite and print its table (scenario, frames, lost, duplicates,
dead-lettered, pending, recovery time, note) as Markdown, ready for docs/faults.md.

    python -m tests.faults.report              # run tests/faults, then print the table
    python -m tests.faults.report --no-run     # only print the table of the last run
    python -m tests.faults.report -- -k kill   # extra pytest arguments after --
    python -m tests.faults.report --suite tests/hosts   # `make cluster`: the multi-host suite

Each scenario writes one JSON file into ``$FRAMESTREAM_FAULTS_OUT`` (default ``out/faults/``);
the table is also saved there as ``table.md``. Exits with pytest's exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.faults.scenario import OUT_ENV, ROOT, out_dir

__all__ = ["load_rows", "main", "render_table"]

COLUMNS = ("scenario", "frames", "lost", "duplicates", "dead-lettered", "pending", "recovery", "note")


def load_rows(folder: Path) -> list[dict[str, Any]]:
    """Every scenario JSON in `folder`, in scenario order (controls after their scenario)."""
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return sorted(rows, key=_order)


def _order(row: dict[str, Any]) -> tuple[int, int, str]:
    match = re.match(r"(\d+)(c?)", str(row.get("scenario", "")))
    number = int(match.group(1)) if match else 99
    return number, 1 if (match and match.group(2)) or row.get("control") else 0, str(row.get("scenario"))


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value).replace("|", "/")


def render_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        recovery = r.get("recovery_s")
        cells = [
            r.get("scenario"),
            r.get("frames"),
            r.get("lost"),
            r.get("duplicates"),
            r.get("dead_lettered"),
            r.get("pending"),
            f"{recovery:.1f} s" if isinstance(recovery, int | float) else None,
            r.get("note"),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.report", description=__doc__.split("\n")[0])
    parser.add_argument("--no-run", action="store_true", help="print the table of the last run only")
    parser.add_argument("--suite", default="tests/faults", help="test folder to run (default tests/faults)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    folder = out_dir()
    code, wall_s = 0, None
    if not args.no_run:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.json"):
            old.unlink()
        started = time.monotonic()
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            args.suite,
            "-q",
            "-p",
            "no:cacheprovider",
            *args.pytest_args,
        ]
        code = subprocess.call(cmd, cwd=ROOT, env={**os.environ, OUT_ENV: str(folder)})
        wall_s = time.monotonic() - started
    rows = load_rows(folder)
    if not rows:
        print(f"no scenario results in {folder}", file=sys.stderr)
        return code or 1
    table = render_table(rows)
    footer = (
        f"\n{args.suite} wall time: {wall_s:.0f} s (pytest exit code {code})" if wall_s is not None else ""
    )
    (folder / "table.md").write_text(table + "\n" + footer + "\n")
    print()
    print(table)
    print(footer)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
