"""`framestream run --runner processes`: every stage an OS process (`ProcessStages`), played with
the run loop, models, demo clip and summary every runner shares (`stream.runners.play`)."""

from __future__ import annotations

from stream.runners import RunRequest
from stream.runners.play import play
from stream.runners.processes import process_stages
from stream.settings import Settings

__all__ = ["main"]


def main(settings: Settings, request: RunRequest) -> int:
    """Play `request`; 0 when every source ended cleanly, 1 when one failed, 2 on an error."""
    return play(settings, request, process_stages, runner="processes")
