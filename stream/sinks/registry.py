"""Sink kinds: each is an entry point in group ``framestream.sinks`` naming a
``build(sink: SinkSettings) -> Destination`` callable. The built-in kinds (webhook, mqtt,
postgres) are registered the same way in pyproject.toml, so a plug-in kind is no different.

`check_sinks` builds every configured sink once at start, so an unknown kind or a kind that
cannot take its settings is one clear `ConfigError` before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from stream.errors import ConfigError
from stream.sinks.destination import Destination
from stream.sinks.settings import SinkSettings

__all__ = ["GROUP", "build_destination", "check_sinks", "sink_kinds"]

GROUP = "framestream.sinks"

Build = Callable[[SinkSettings], Destination]


def sink_kinds() -> list[str]:
    """The sink kinds installed (entry points of `GROUP`)."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def build_destination(sink: SinkSettings) -> Destination:
    """The destination of `sink` (not started); `ConfigError` for a secret_env that is not set,
    an unknown kind, or one whose `build` refuses the settings (its message names the sink,
    never its secret)."""
    if (missing := sink.missing_secret()) is not None:
        raise ConfigError(missing)
    found = [ep for ep in entry_points(group=GROUP) if ep.name == sink.kind]
    if not found:
        raise ConfigError(
            f"sink {sink.name!r}: unknown kind {sink.kind!r}; kinds are {', '.join(sink_kinds()) or 'none'} "
            "(a plug-in kind is an entry point in group framestream.sinks; reinstall the package "
            "if this list is empty: pip install -e .)"
        )
    try:
        build: Build = found[0].load()
    except Exception as e:  # a kind whose module cannot be imported (a missing client library)
        raise ConfigError(f"sink {sink.name!r}: kind {sink.kind!r} cannot be loaded: {e}") from e
    try:
        return build(sink)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"sink {sink.name!r}: {e}") from e


def check_sinks(sinks: Sequence[SinkSettings]) -> list[Destination]:
    """Build every sink's destination (nothing connects yet): the first bad one raises."""
    return [build_destination(sink) for sink in sinks]
