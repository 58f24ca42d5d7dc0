"""Every configured sink in one process: ``framestream stage sinks`` (the processes runner starts
one when the settings have sinks) and the Ray Serve ``Sinks`` deployment run a `SinkLoop`.

Each sink delivers on its own (`SinkDelivery`): a sink whose destination is down retries and
backs off without holding up the others, and the pipeline's own stages never wait for a sink
(only file sources, when a sink with ``on_full: pause`` is full). An unexpected error in one
sink's loop is logged and that sink starts again a moment later; a Redis error ends `run` for
`run_resilient` to ride out.

Replicas share the partitions the way postprocess replicas do: each owns a fair share of the live
replicas' under a lease (`PartitionLeases`, group ``sinks``) and every sink's delivery runs lanes
only for those. A partition is released only after its lanes stopped; its next owner sends what
they left unacked before anything newer, so each source's items stay in order while the replicas
scale. A replica that dies stops renewing: its leases expire after ``streams.claim_idle_ms``.
A replica with no sink to deliver holds no lease and is no member: it only looks for sinks added
through the API, once a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from stream.adapters.redis.group_stats import GroupStats, leave_group
from stream.adapters.redis.outage import is_redis_outage
from stream.adapters.redis.partition_leases import PartitionLeases
from stream.adapters.redis.sink_backlog import sink_streams, total_sink_backlog
from stream.core.keys import PipelineKeys
from stream.errors import ConfigError
from stream.settings import Settings
from stream.sinks.delivery import SinkDelivery
from stream.sinks.destination import Destination
from stream.sinks.registered import forget_sink_groups, registered_sinks
from stream.sinks.registry import build_destination
from stream.sinks.settings import SinkSettings
from stream.waiting import cancel_and_wait, pause

__all__ = ["SinkLoop"]

log = logging.getLogger("framestream.sinks")

_RESTART_AFTER_S = 1.0
_FOLLOW_S = 1.0
"""How often the sinks added or removed through the API are looked up."""
OWNERS = "sinks"
"""The group whose partition leases the sinks replicas share (every sink's lanes follow them)."""

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
        claim_idle_ms = settings.streams.claim_idle_ms
        self.ownership = PartitionLeases(client, self.keys, OWNERS, consumer, ttl_ms=claim_idle_ms)
        self._ownership_interval_s = claim_idle_ms / 4000.0
        chosen = list(settings.sinks if sinks is None else sinks)
        self.deliveries = [make(settings, client, s, build_destination(s), consumer) for s in chosen]
        for delivery in self.deliveries:
            delivery.owned = set()  # until this replica owns partitions
        self._make = make
        self._registered: dict[str, SinkDelivery] = {}
        self._refused: dict[str, SinkSettings] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
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

    @property
    def owned(self) -> list[int]:
        """The partitions this replica delivers now."""
        return sorted(self.ownership.owned)

    @property
    def delivering(self) -> list[str]:
        """Names of the sinks this loop delivers (the settings file's, then those added through the API)."""
        return [d.name for d in self.all_deliveries]

    @property
    def all_deliveries(self) -> list[SinkDelivery]:
        """The configured sinks' deliveries and those of sinks added through the API."""
        return [*self.deliveries, *self._registered.values()]

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver every sink until `stop` (each finishes the batch it holds), following the sinks
        added and removed through the API; a Redis error in any of them ends it for all."""
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def fail_on_error(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None and not failed.done():
                failed.set_exception(task.exception())  # type: ignore[arg-type]

        self._tasks.clear()
        self.ownership.suspend()  # a rerun takes its partitions back under the same leases
        for delivery in self.all_deliveries:
            delivery.owned = set()
            self._launch(delivery, stop, fail_on_error)
        owner = asyncio.create_task(self._own(stop))
        owner.add_done_callback(fail_on_error)
        follower = asyncio.create_task(self._follow_registry(stop, fail_on_error))
        follower.add_done_callback(fail_on_error)
        stopped = asyncio.create_task(stop.wait())
        try:
            waiting: list[asyncio.Future[Any]] = [stopped, failed]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if failed.done():
                failed.result()  # raises the first error
            await asyncio.gather(owner, follower, *self._tasks.values())
            await self.ownership.leave()  # every lane stopped: the next owners need not wait
        finally:
            stopped.cancel()
            await cancel_and_wait([owner, follower, *self._tasks.values()])
            for delivery in self.all_deliveries:
                await delivery.close()

    async def _own(self, stop: asyncio.Event) -> None:
        """Keep a fair share of the partitions (every ``claim_idle_ms / 4``) until `stop`."""
        while not stop.is_set():
            if self.all_deliveries:
                await self._rebalance()
            elif self.ownership.owned:  # no sink to deliver (all removed): an idle replica holds nothing
                await self.ownership.leave()
            await pause(stop, self._ownership_interval_s)

    async def _rebalance(self) -> None:
        """Renew the leases, then give partitions up (their lanes stopped first) or take free ones."""
        lost = await self.ownership.renew()
        if lost:
            log.warning("sinks %s: lost the lease on partitions %s", self.consumer, lost)
            await self._stop_partitions(lost, wait_s=0.0)
        plan = await self.ownership.plan()
        if plan.give_up:
            await self._stop_partitions(plan.give_up, wait_s=self._ownership_interval_s)
            for k in plan.give_up:
                await self.ownership.give_up(k)
            log.info("sinks %s: gave partitions %s up", self.consumer, plan.give_up)
        taken = [k for k in plan.take if await self.ownership.take(k)]
        if taken:
            for delivery in self.all_deliveries:
                delivery.deliver_partitions(taken)
            log.info("sinks %s: took partitions %s", self.consumer, taken)

    async def _stop_partitions(self, partitions: list[int], *, wait_s: float) -> None:
        await asyncio.gather(*(d.stop_partitions(partitions, wait_s=wait_s) for d in self.all_deliveries))

    def _launch(
        self, delivery: SinkDelivery, stop: asyncio.Event, on_done: Callable[[asyncio.Task[None]], None]
    ) -> None:
        task = asyncio.create_task(self._keep_running(delivery, stop), name=f"sink:{delivery.name}")
        task.add_done_callback(on_done)
        self._tasks[delivery.name] = task

    async def _follow_registry(
        self, stop: asyncio.Event, on_done: Callable[[asyncio.Task[None]], None]
    ) -> None:
        """Start delivering sinks added through the API and stop those removed (every second)."""
        while not stop.is_set():
            # a destination that is down is no stuck loop (replacing the replica would not help)
            self.last_progress_s = time.monotonic()
            wanted = {s.name: s for s in await registered_sinks(self.client, self.keys)}
            configured = {d.name for d in self.deliveries}
            for name, sink in wanted.items():
                if name in configured or name in self._registered or self._refused.get(name) == sink:
                    continue
                try:
                    destination = build_destination(sink)
                except ConfigError as e:  # the API checked it; this process may lack a secret_env
                    log.error("%s; not delivering it", e)
                    self._refused[name] = sink
                    continue
                delivery = self._make(self.settings, self.client, sink, destination, self.consumer)
                delivery.owned = set(self.ownership.owned)
                delivery.on_handled = self._handled
                await delivery.start()
                self._registered[name] = delivery
                self._launch(delivery, stop, on_done)
                log.info("sink %s: added through the API, delivering", name)
            for name in [n for n in self._registered if n not in wanted]:
                delivery = self._registered.pop(name)
                await cancel_and_wait([self._tasks.pop(name)])
                await delivery.close()
                await forget_sink_groups(self.client, self.keys, delivery.sink)
                log.info("sink %s: removed through the API, no longer delivering", name)
            await pause(stop, _FOLLOW_S)

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
        for delivery in self.all_deliveries:
            total = await total_sink_backlog(self.client, self.keys, delivery.sink)
            if total > worst.backlog:
                worst = GroupStats(self.keys.results, delivery.group, lag=total, pending=0, consumers=1)
        return worst

    async def leave_groups(self) -> list[str]:
        """Leave every sink group where this consumer holds nothing (a stopped process)."""
        left = []
        for delivery in self.all_deliveries:
            for keys in self.keys.all_partitions:
                for stream in sink_streams(keys, delivery.sink):
                    if await leave_group(self.client, stream, delivery.group, self.consumer):
                        left.append(stream)
        return left
