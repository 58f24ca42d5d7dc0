"""Live progress and the final summary of `framestream run`, with rich.

On a terminal the progress table redraws in place; without one (CI, a pipe) a one-line status
is printed every few seconds instead, so logs stay readable and nothing needs a TTY.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

__all__ = ["Progress", "Snapshot", "StageRow", "Summary", "summary_dict", "summary_table"]


@dataclass(frozen=True)
class StageRow:
    stage: str
    replicas: int
    rate_fps: float
    handled: int
    backlog: int


@dataclass(frozen=True)
class Snapshot:
    elapsed_s: float
    stages: list[StageRow]
    labels: dict[str, str]
    results: dict[str, int]
    done: set[str]
    published: int
    dead: int


@dataclass
class Summary:
    """Numbers of one run, printed at the end."""

    model: str
    synthetic: bool
    wall_s: float
    published: int
    results: int
    duplicates: int
    dropped: int
    dead_lettered: int
    skipped: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    per_source: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per track (a source, with `` [model]`` when several): published, results, label, error."""
    interrupted: bool = False
    runner: str = ""
    sinks: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per sink: delivered, retries, dead_letters (not delivered), dropped (on_full: drop) in this
    run, and backlog (entries still waiting for it at the end)."""

    @property
    def failed(self) -> list[str]:
        """Sources that ended with an error (their end-of-stream says why)."""
        return [name for name, row in self.per_source.items() if row.get("error")]

    @property
    def unprocessed(self) -> int:
        """Published frames with no result per model (0 after a full run; > 0 after Ctrl-C)."""
        models = max(1, len(self.model.split(", ")))
        return max(0, self.published * models - self.results - self.skipped)

    @property
    def fps(self) -> float:
        return self.results / self.wall_s if self.wall_s > 0 else 0.0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def progress_table(snap: Snapshot) -> Group:
    stages = Table(title=f"framestream  {snap.elapsed_s:5.1f} s", title_justify="left", expand=False)
    for col in ("stage", "replicas", "frames/s", "handled", "lag"):
        stages.add_column(col, justify="left" if col == "stage" else "right")
    for row in snap.stages:
        stages.add_row(
            row.stage, str(row.replicas), f"{row.rate_fps:,.1f}", f"{row.handled:,}", f"{row.backlog:,}"
        )
    sources = Table(expand=False)
    names = sorted(set(snap.labels) | set(snap.results) | snap.done)
    _name_column(sources, "source", names)
    for col in ("results", "current label", ""):
        sources.add_column(col, justify="right" if col == "results" else "left", overflow="fold")
    for source in names:
        status = "done" if source in snap.done else ""
        label = escape(snap.labels.get(source, "-"))
        sources.add_row(escape(source), f"{snap.results.get(source, 0):,}", label, status)
    return Group(stages, sources)


def status_line(snap: Snapshot) -> str:
    parts = [f"{snap.elapsed_s:6.1f}s"]
    for row in snap.stages:
        parts.append(f"{row.stage} x{row.replicas} {row.rate_fps:.0f}/s lag {row.backlog}")
    labels = ", ".join(f"{s}={lab}" for s, lab in sorted(snap.labels.items()))
    return " | ".join(parts) + (f" | {labels}" if labels else "")


class Progress:
    """Context manager: `update(snapshot)` redraws (terminal) or prints a line every `every_s`;
    with no console (a run driven from code) it shows nothing."""

    def __init__(self, console: Console | None, every_s: float = 5.0) -> None:
        self.console = console
        self.every_s = every_s
        self._live: Live | None = None
        self._next_line_s = 0.0

    @property
    def shown(self) -> bool:
        return self.console is not None

    def __enter__(self) -> Progress:
        if self.console is not None and self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def note(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def update(self, snap: Snapshot) -> None:
        if self.console is None:
            return
        if self._live is not None:
            self._live.update(progress_table(snap))
            return
        now = time.monotonic()
        if now >= self._next_line_s:
            self._next_line_s = now + self.every_s
            self.console.print(status_line(snap), markup=False, highlight=False, soft_wrap=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None


def _name_column(table: Table, header: str, names: list[str]) -> None:
    """A column of names a user types next (sources): never wrapped or cut; the others fold."""
    table.add_column(header, no_wrap=True, min_width=max([len(header), *(len(n) for n in names)]))


def summary_dict(s: Summary) -> dict[str, Any]:
    """The summary as plain data (``framestream run --json``): the same keys whichever runner ran."""
    return {
        "runner": s.runner,
        "model": s.model,
        "synthetic": s.synthetic,
        "interrupted": s.interrupted,
        "published": s.published,
        "results": s.results,
        "duplicates": s.duplicates,
        "dropped": s.dropped,
        "dead_lettered": s.dead_lettered,
        "skipped": s.skipped,
        "unprocessed": s.unprocessed,
        "latency_ms": {"p50": s.p50_ms, "p99": s.p99_ms, "max": s.max_ms},
        "wall_s": round(s.wall_s, 3),
        "frames_per_s": round(s.fps, 2),
        "sources": {name: dict(row) for name, row in sorted(s.per_source.items())},
        "failed": s.failed,
        "sinks": {name: dict(row) for name, row in sorted(s.sinks.items())},
    }


def summary_table(s: Summary) -> Group:
    title = "framestream run: " + ("interrupted, drained" if s.interrupted else "finished")
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.columns[1].overflow = "fold"
    model = escape(s.model) + ("  (SYNTHETIC stand-in: labels mean nothing)" if s.synthetic else "")
    rows = [
        ("model", model),
        ("frames in (published)", f"{s.published:,}"),
        ("frames out (distinct results)", f"{s.results:,}"),
        ("duplicates removed at the sink", f"{s.duplicates:,}"),
        ("dropped by live-source policy", f"{s.dropped:,}"),
        ("dead-lettered", f"{s.dead_lettered:,}"),
        ("skipped (dead-lettered frames)", f"{s.skipped:,}"),
        *([("left queued when stopped", f"{s.unprocessed:,}")] if s.interrupted else []),
        ("latency p50 (end to end)", _ms(s.p50_ms)),
        ("latency p99 (end to end)", _ms(s.p99_ms)),
        ("latency max", _ms(s.max_ms)),
        ("wall time", f"{s.wall_s:,.1f} s"),
        ("throughput", f"{s.fps:,.1f} frames/s"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    per_source = Table(show_header=True)
    _name_column(per_source, "source", list(s.per_source))
    counts = {
        col: [f"{row.get(col, 0):,}" for row in s.per_source.values()] for col in ("published", "results")
    }
    for col, values in counts.items():  # numbers are never folded: a folded number reads as another
        per_source.add_column(
            col, justify="right", no_wrap=True, min_width=max([len(col), *map(len, values)])
        )
    per_source.add_column("final label", overflow="fold")  # smoothed
    if s.failed:
        per_source.add_column("error", overflow="fold")
    for source, row in sorted(s.per_source.items()):
        published, results = f"{row.get('published', 0):,}", f"{row.get('results', 0):,}"
        cells = [escape(source), published, results, escape(str(row.get("label", "-")))]
        per_source.add_row(*cells, *([escape(str(row.get("error") or ""))] if s.failed else []))
    if not s.sinks:
        return Group(table, per_source)
    return Group(table, per_source, _sinks_table(s.sinks))


SINK_COLUMNS = ("delivered", "retries", "dead_letters", "dropped", "backlog")


def _sinks_table(sinks: dict[str, dict[str, int]]) -> Table:
    """One row per sink: what it delivered in the run, its retries, its dead letters (not
    delivered, and dropped by ``on_full: drop``) and what still waits for it."""
    table = Table(show_header=True)
    _name_column(table, "sink", list(sinks))
    for col in SINK_COLUMNS:
        values = [f"{row.get(col, 0):,}" for row in sinks.values()]
        table.add_column(col.replace("_", " "), justify="right", no_wrap=True,
                         min_width=max([len(col), *map(len, values)]))  # fmt: skip
    for name, row in sorted(sinks.items()):
        table.add_row(escape(name), *(f"{row.get(col, 0):,}" for col in SINK_COLUMNS))
    return table
