"""Every configured sink in one process: ``framestream stage sinks`` (the processes runner starts
one when the settings have sinks) and the Ray Serve ``Sinks`` deployment run a `SinkLoop`.

Each sink delivers on its own (`SinkDelivery`): a sink whose destination is down retries and
backs off without holding up the others, and the pipeline's own stages never wait for a sink
(only file sources, when a sink with ``on_full: pause`` is full). An unexpected error in one
sink's loop is logged and that sink starts again a moment later; a Redis error ends `run` for
`run_resilient` to ride out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis

from stream.adapters.redis.group_stats import GroupStats, leave_group
from stream.adapters.redis.outage import is_redis_outage
from stream.core.keys import PipelineKeys
from stream.settings import Settings
from stream.sinks.backlog import sink_backlog, sink_streams
from stream.sinks.delivery import SinkDelivery
from stream.sinks.destination import Destination
from stream.sinks.registry import build_destination
from stream.sinks.settings import SinkSettings

__all__ = ["SinkLoop"]

log = logging.getLogger("framestream.sinks")

_RESTART_AFTER_S = 1.0

MakeDelivery = Callable[[Settings, aioredis.Redis, SinkSettings, Destination, str], SinkDelivery]


def _delivery(
    settings: Settings, client: aioredis.Redis, sink: SinkSettings, destination: Destination, consumer: str
) -> SinkDelivery:
    return SinkDelivery(settings, client, sink, destination, consumer=consumer)


class SinkLoop:
    """The delivery loops of `sinks` (default: ``settings.sinks``) as one stage loop. Building it
    builds every destination: an unknown kind or settings a kind refuses raise `ConfigError` here,
    before anything runs."""

    name = "sinks"

    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        *,
        consumer: str,
        sinks: Sequence[SinkSettings] | None = None,
        make: MakeDelivery = _delivery,
    ) -> None:
        self.settings = settings
        self.client = client
        self.consumer = consumer
        self.keys = PipelineKeys(settings.streams.pipeline, settings.streams.partitions)
        chosen = list(settings.sinks if sinks is None else sinks)
        self.deliveries = [make(settings, client, s, build_destination(s), consumer) for s in chosen]
        self.processed = 0
        """Entries delivered or dead-lettered by every sink."""
        for delivery in self.deliveries:
            delivery.on_handled = self._handled
        self.last_progress_s = time.monotonic()

    def _handled(self, n: int) -> None:
        self.processed += n

    async def start(self) -> None:
        for delivery in self.deliveries:
            await delivery.start()

    async def run(self, stop: asyncio.Event) -> None:
        if not self.deliveries:  # nothing configured: idle until stopped (a Serve replica stays healthy)
            await stop.wait()
            return
        tasks = [asyncio.create_task(self._keep_running(d, stop)) for d in self.deliveries]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for delivery in self.deliveries:
                await delivery.close()

    async def _keep_running(self, delivery: SinkDelivery, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.last_progress_s = time.monotonic()
            try:
                await delivery.run(stop)
            except Exception as e:
                if is_redis_outage(e):
                    raise
                log.exception("sink %s: delivery loop failed; starting it again", delivery.name)
                await asyncio.sleep(_RESTART_AFTER_S)

    async def backlog(self) -> GroupStats:
        """Entries waiting for the sinks (the most behind sink's), for autoscaling."""
        worst = GroupStats(self.keys.results, "sink:", lag=0, pending=0, consumers=0)
        for delivery in self.deliveries:
            total = sum([await sink_backlog(self.client, k, delivery.sink) for k in self.keys.all_partitions])
            if total > worst.backlog:
                worst = GroupStats(self.keys.results, delivery.group, lag=total, pending=0, consumers=1)
        return worst

    async def leave_groups(self) -> list[str]:
        """Leave every sink group where this consumer holds nothing (a stopped process)."""
        left = []
        for delivery in self.deliveries:
            for keys in self.keys.all_partitions:
                for stream in sink_streams(keys, delivery.sink):
                    if await leave_group(self.client, stream, delivery.group, self.consumer):
                        left.append(stream)
        return left
