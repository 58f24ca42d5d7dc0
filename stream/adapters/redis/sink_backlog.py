"""What a sink (`stream.sinks`) reads and how far behind it is: its streams per partition (the
kinds it sends and its own retry stream), and its backlog, the entries of those its group has not
acked yet.

The delivery loop publishes the backlog and applies ``on_full``; ingest pauses file sources while
a sink with ``on_full: pause`` is full (`SinkPause`); `framestream run` waits for every backlog to
reach 0 before it ends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from stream.adapters.redis.group_stats import group_stats
from stream.core.keys import PipelineKeys
from stream.settings import SinkSettings

__all__ = ["SinkPause", "sink_backlog", "sink_streams", "total_sink_backlog"]


def sink_streams(keys: PipelineKeys, sink: SinkSettings) -> list[str]:
    """The streams `sink` reads on partition `keys`: one per kind it sends, then its retry stream."""
    by_kind = {"results": keys.results, "events": keys.events, "segments": keys.segments}
    return [by_kind[kind] for kind in sink.send] + [keys.sink_retry(sink.name)]


async def sink_backlog(client: Any, keys: PipelineKeys, sink: SinkSettings) -> int:
    """Entries of partition `keys` that `sink`'s group has not acked (read or not), over its streams;
    a stream its group does not read yet counts whole (`group_stats`)."""
    total = 0
    for stream in sink_streams(keys, sink):
        total += (await group_stats(client, stream, sink.group)).backlog
    return total


async def total_sink_backlog(client: Any, keys: PipelineKeys, sink: SinkSettings) -> int:
    """`sink_backlog` over every partition of the pipeline `keys` belongs to."""
    return sum([await sink_backlog(client, part, sink) for part in keys.all_partitions])


class SinkPause:
    """Whether file sources must wait for a sink: some sink with ``on_full: pause`` has more than
    its ``max_backlog`` entries waiting (over every partition: a sink that is down is behind on
    all of them). Read at most every `every_s` (ingest asks before each chunk it publishes)."""

    def __init__(self, client: Any, keys: PipelineKeys, sinks: Sequence[SinkSettings], every_s: float = 0.5):
        self.client = client
        self.keys = keys
        self.sinks = [s for s in sinks if s.on_full == "pause"]
        self.every_s = every_s
        self._full: list[str] = []
        self._read_at = float("-inf")

    async def full(self) -> list[str]:
        """Names of the pausing sinks over their `max_backlog` (empty: nothing to wait for)."""
        if not self.sinks:
            return []
        now = time.monotonic()
        if now - self._read_at >= self.every_s:
            self._read_at = now
            full = []
            for sink in self.sinks:
                if await total_sink_backlog(self.client, self.keys, sink) > sink.max_backlog:
                    full.append(sink.name)
            self._full = full
        return self._full
