"""Runners: what plays a pipeline end to end for `framestream run`, chosen by name through the
``framestream.runners`` entry points (as source kinds are through ``framestream.sources``), so
`stream` never imports the Ray layer: ``processes`` (every stage an OS process, this package) and
``ray`` (one Ray Serve application, `deployments.local.runner`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from stream.errors import ConfigError
from stream.settings import Settings

__all__ = ["RunRequest", "Runner", "load_runner", "runner_names"]

GROUP = "framestream.runners"


@dataclass(frozen=True)
class RunRequest:
    """What `framestream run` was asked for, whichever runner plays it."""

    sources: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    results: Path | None = None
    segments: Path | None = None
    """Write every closed segment of the run as one JSON line here (`stream.core.segments`)."""
    redis: str | None = None
    address: str | None = None
    timeout_s: float | None = None
    loop: bool = False
    json: bool = False
    """Print the summary as one JSON document on stdout (progress and notices go to stderr)."""


Runner = Callable[[Settings, RunRequest], int]
"""Plays a `RunRequest` and prints its summary; returns the process exit code."""


def runner_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load_runner(name: str) -> Runner:
    """The runner registered as `name`; ConfigError naming the known ones otherwise."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise ConfigError(
            f"no runner {name!r}; runners are {', '.join(runner_names()) or 'none'} "
            "(reinstall the package if this list is empty: pip install -e .)"
        )
    runner: Runner = found[0].load()
    return runner
