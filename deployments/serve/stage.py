"""One pipeline stage as a Ray Serve deployment: each replica runs that stage's consumer loop.

- The loop starts as a background task in the (async) constructor; its consumer name in the
  Redis group is the Serve replica id, so a replaced replica is a new consumer and the dead one's
  pending entries are reclaimed by the survivors (XAUTOCLAIM after ``claim_idle_ms``).
- ``record_autoscaling_stats`` reports the group's backlog and this replica's measured rate;
  `deployments.serve.policy.BacklogPolicy` sizes the deployment from them.
- Scale-down and shutdown drain: Serve calls ``__del__``, which stops the loop from reading and
  waits (at most ``streams.drain_timeout_s``) while it finishes and acks what it holds, then
  leaves its group on every partition (`StageBase.leave_groups`). The
  deployment's ``graceful_shutdown_timeout_s`` is set above that so Serve never cuts a drain short.
- ``check_health`` raises when the loop crashed, or made no progress for ``stuck_after_s`` while
  its group has a backlog; Serve then replaces the replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray import serve

from deployments.serve.policy import BACKLOG_KEY, CPU_KEY, RATE_KEY
from stream.adapters.redis.client import connect_settings
from stream.settings import Settings, load_settings

__all__ = ["DRAIN_MARGIN_S", "StageDeployment", "open_redis", "stage_settings"]

log = logging.getLogger("ray.serve")  # Serve writes it to the replica's own log file

DRAIN_MARGIN_S = 5.0
"""graceful_shutdown_timeout_s >= streams.drain_timeout_s + this (close the client, leave the group)."""
_STATS_TIMEOUT_S = 3.0


def stage_settings(overrides: dict[str, Any] | None) -> Settings:
    """Settings inside a replica: env (``FRAMESTREAM_*``) with the app's overrides on top."""
    return load_settings(**(overrides or {}))


async def open_redis(settings: Settings) -> Any:
    if settings.redis.url == "auto":
        from stream.errors import ConfigError

        raise ConfigError(
            "a Ray deployment cannot start its own redis-server: set FRAMESTREAM_REDIS__URL "
            "(or redis.url in the application's args) to a Redis every replica can reach"
        )
    return await connect_settings(settings.redis)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    graceful_shutdown_timeout_s=15.0,
    graceful_shutdown_wait_loop_s=0.5,
    health_check_period_s=5.0,
    health_check_timeout_s=10.0,
    max_ongoing_requests=8,
)
class StageDeployment:
    """Replicas of one stage (``stage`` = ingest, preprocess, infer, postprocess, or sinks: the
    delivery of every configured sink)."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        stage: str,
        settings: dict[str, Any] | None = None,
        model: str | None = None,
        stuck_after_s: float = 60.0,
    ) -> None:
        from stream.stages import StageLoop, build_stage
        from stream.stages.base import run_resilient

        context = serve.get_replica_context()
        self.stage = stage
        self.consumer = context.replica_id.unique_id
        self.actor_name = context.replica_id.to_full_id_str()
        self.settings = stage_settings(settings)
        self.stuck_after_s = stuck_after_s
        self.client = await open_redis(self.settings)
        if stage == "sinks":  # every configured sink's delivery (`stream.sinks.loop`)
            from stream.sinks.loop import SinkLoop

            self.loop: StageLoop = SinkLoop(self.settings, self.client, consumer=self.consumer)
        else:
            self.loop = build_stage(stage, self.settings, self.client, consumer=self.consumer, model=model)
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            run_resilient(self.loop, self._stop, self.client), name=self.consumer
        )
        self._last_count = (time.monotonic(), 0)
        self._last_cpu = (time.monotonic(), time.process_time())
        self._cpu_cores = 0.0
        self._last_backlog = 0
        self._rate_fps = 0.0
        log.info("%s: replica %s started its loop", stage, self.consumer)

    def _measure_rate(self) -> float:
        now = time.monotonic()
        then, count = self._last_count
        if now - then >= 0.5:
            self._rate_fps = max(0.0, (self.loop.processed - count) / (now - then))
            self._last_count = (now, self.loop.processed)
        return self._rate_fps

    def _measure_cpu(self) -> float:
        """CPU seconds this replica's process used per second since the last call (>= 0.5 s ago)."""
        now, cpu = time.monotonic(), time.process_time()
        then, cpu_then = self._last_cpu
        if now - then >= 0.5:
            self._cpu_cores = max(0.0, (cpu - cpu_then) / (now - then))
            self._last_cpu = (now, cpu)
        return self._cpu_cores

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Backlog of this stage's group, this replica's frames/s (for `BacklogPolicy`) and the CPU
        its process uses (for `LoadPolicy`, which sizes Ingest)."""
        async with asyncio.timeout(_STATS_TIMEOUT_S):
            stats = await self.loop.backlog()
        self._last_backlog = stats.backlog  # each partition's lag is published by the loop, as it reads it
        return {
            BACKLOG_KEY: float(stats.backlog),
            RATE_KEY: self._measure_rate(),
            CPU_KEY: self._measure_cpu(),
        }

    async def check_health(self) -> None:
        """Raise (so Serve replaces this replica) when the loop crashed or is stuck."""
        if self._task.done():
            error = None if self._task.cancelled() else self._task.exception()
            raise RuntimeError(f"{self.consumer}: the {self.stage} loop ended: {error!r}")
        idle_s = time.monotonic() - self.loop.last_progress_s
        if idle_s > self.stuck_after_s:
            async with asyncio.timeout(_STATS_TIMEOUT_S):
                stats = await self.loop.backlog()
            if stats.backlog > 0:
                raise RuntimeError(
                    f"{self.consumer}: no progress for {idle_s:.0f} s with {stats.backlog} entries waiting"
                )

    async def status(self) -> dict[str, Any]:
        """What this replica did so far (for progress displays and tests)."""
        return {
            "stage": self.stage,
            "consumer": self.consumer,
            "actor_name": self.actor_name,
            "processed": self.loop.processed,
            "rate_fps": self._measure_rate(),
            "backlog": self._last_backlog,
            "running": not self._task.done(),
            **_versions(self.loop),
        }

    async def __del__(self) -> None:
        """Graceful shutdown (scale-down, redeploy, serve.shutdown): stop reading, drain, ack, exit."""
        self._stop.set()
        try:
            async with asyncio.timeout(self.settings.streams.drain_timeout_s + 1):
                await asyncio.shield(self._task)
        except Exception as e:  # a drain that fails leaves entries pending: the others reclaim them
            log.warning("%s: drain ended with %r; pending entries will be reclaimed", self.consumer, e)
        await self._forget_consumer()
        await self.client.aclose()
        log.info("%s: drained after %d entries", self.consumer, self.loop.processed)

    async def _forget_consumer(self) -> None:
        """Leave the group on every partition this replica read, where it holds nothing."""
        try:
            async with asyncio.timeout(_STATS_TIMEOUT_S):
                await self.loop.leave_groups()
        except Exception as e:
            log.info("%s: consumer left in its group: %r", self.consumer, e)


def _versions(loop: Any) -> dict[str, Any]:
    """An Infer replica's model versions: the one new batches run on, the shadow's, load failures."""
    watch = getattr(loop, "versions", None)
    if watch is None:
        return {}
    shadow = watch.shadow.version if watch.shadow is not None else None
    return {"model_version": loop.version, "shadow_version": shadow, "load_failures": watch.load_failures}
