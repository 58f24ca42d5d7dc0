"""The end of a run with sinks configured (``sinks:``): wait until every sink's backlog is 0 (each
has delivered, or dead-lettered, what the sources produced), and each sink's counts for the
summary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from stream.adapters.redis.sink_backlog import total_sink_backlog
from stream.core.keys import PipelineKeys
from stream.readers.watch import read_counters
from stream.runners.display import Progress
from stream.settings import Settings
from stream.waiting import pause

__all__ = ["sink_rows", "wait_for_sinks"]


async def _backlogs(client: Any, keys: PipelineKeys, settings: Settings) -> dict[str, int]:
    return {s.name: await total_sink_backlog(client, keys, s) for s in settings.sinks}


async def wait_for_sinks(
    client: Any,
    keys: PipelineKeys,
    settings: Settings,
    stop: asyncio.Event,
    check_stages: Callable[[], None] | None,
    ride: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]],
    progress: Progress,
) -> None:
    """Until no sink has anything waiting; after a stop (Ctrl-C, `--timeout`), for at most
    ``streams.drain_timeout_s`` more. A sink that is down keeps its backlog in Redis: the next run
    (or `framestream stage sinks`) delivers it."""
    if not settings.sinks:
        return
    progress.note("waiting for the sinks to deliver what is left ...")
    stopped_at: float | None = None
    while any((await ride(lambda: _backlogs(client, keys, settings))).values()):
        if stop.is_set():
            stopped_at = stopped_at or time.monotonic()
            if time.monotonic() - stopped_at > settings.streams.drain_timeout_s:
                return
        if check_stages is not None:
            check_stages()  # a stage that died ends the wait with its error
        await pause(stop, 0.2)
        if stop.is_set():
            await asyncio.sleep(0.2)


async def sink_rows(
    client: Any, keys: PipelineKeys, settings: Settings, first: dict[str, int]
) -> dict[str, dict[str, int]]:
    """Each sink's counters in this run (from the partitions' counters hashes) and its backlog;
    nothing without sinks."""
    if not settings.sinks:
        return {}
    counters = await read_counters(client, keys)
    backlogs = await _backlogs(client, keys, settings)

    def grown(name: str) -> int:
        return counters.get(name, 0) - first.get(name, 0)

    return {
        s.name: {
            "delivered": grown(f"sink:{s.name}:delivered"),
            "retries": grown(f"sink:{s.name}:retries"),
            "dead_letters": grown(f"dead:{s.group}") - grown(f"sink:{s.name}:dropped"),
            "dropped": grown(f"sink:{s.name}:dropped"),
            "backlog": backlogs[s.name],
        }
        for s in settings.sinks
    }
