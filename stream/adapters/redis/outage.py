"""Riding out a Redis outage, the one way the loops of framestream do it: every stage loop
(`stream.stages.base`) and the run loop both runners of `framestream run` share
(`stream.runners.drive`).

An outage is Redis gone for a while: killed and restarted, stalled, loading its AOF. A call that
fails with one is tried again after a wait that doubles from `first_wait_s` up to `max_wait_s`,
for at most `max_outage_s` (`RedisOutage`, `ride_out`); errors that are not an outage raise at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream.errors import FramestreamError

__all__ = ["REDIS_TRANSIENT", "RedisOutage", "is_redis_outage", "ride_out"]

log = logging.getLogger("framestream.redis")
_T = TypeVar("_T")

REDIS_TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
)
"""Redis gone for a while: connection lost or refused, a stall past the socket timeout, a restart
still loading its AOF (BusyLoadingError is a ConnectionError); on a Redis Cluster also a slot
without a live master while a replica takes over (CLUSTERDOWN, TRYAGAIN, a slot not covered)."""


def is_redis_outage(error: BaseException) -> bool:
    """True for the errors a Redis restart or stall causes, including uvloop's (Ray Serve's event
    loop) RuntimeError for a write on a connection Redis already closed."""
    if isinstance(error, REDIS_TRANSIENT):
        return True
    if isinstance(error, RedisClusterException) and "cannot be connected" in str(error):
        return True  # no node of the cluster answered the client's refresh of its slot table
    if isinstance(error, AttributeError) and "no attribute 'writelines'" in str(error):
        return True  # redis-py wrote on a connection another task had just dropped (a failover)
    return isinstance(error, RuntimeError) and "handler is closed" in str(error)


class RedisOutage:
    """One Redis outage as a loop lives through it: when it began, how long to wait before the
    next attempt (doubling from `first_wait_s` up to `max_wait_s`), and giving up after
    `max_outage_s`. Errors that are not an outage (`is_redis_outage`) are not its business."""

    def __init__(
        self,
        max_outage_s: float = 300.0,
        *,
        first_wait_s: float = 0.1,
        max_wait_s: float = 2.0,
        announce: bool = True,
    ):
        self.max_outage_s = max_outage_s
        self.announce = announce
        self.first_wait_s = first_wait_s
        self.max_wait_s = max_wait_s
        self.since: float | None = None
        self.outages = 0
        self._wait_s = first_wait_s

    async def wait(
        self, error: BaseException, *, before_retry: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        """After `error` (an outage): wait before the next attempt; `FramestreamError` once Redis
        has been unavailable for longer than `max_outage_s`. `before_retry` runs after the wait (a
        cluster client reloads its slot table there: `stream.adapters.redis.client.
        refresh_cluster_view`); an outage it meets is the next attempt's to find."""
        now = time.monotonic()
        if self.since is None:
            self.since, self.outages = now, self.outages + 1
            if self.announce:
                log.warning("Redis unavailable (%s: %s); waiting for it", type(error).__name__, error)
        elif now - self.since > self.max_outage_s:
            raise FramestreamError(
                f"Redis unavailable for more than {self.max_outage_s:.0f} s ({type(error).__name__}: {error})"
            ) from error
        await asyncio.sleep(self._wait_s)
        self._wait_s = min(2 * self._wait_s, self.max_wait_s)
        if before_retry is not None:
            try:
                await before_retry()
            except Exception as again:
                if not is_redis_outage(again):
                    raise

    def recovered(self) -> bool:
        """After a call that worked: True when it ends an outage."""
        if self.since is None:
            return False
        if self.announce:
            log.warning("Redis is back after %.1f s", time.monotonic() - self.since)
        self.since, self._wait_s = None, self.first_wait_s
        return True


async def ride_out(
    call: Callable[[], Awaitable[_T]],
    outage: RedisOutage,
    *,
    before_retry: Callable[[], Awaitable[object]] | None = None,
) -> _T:
    """`call()`, retried while it fails with a Redis outage (see `RedisOutage`); other errors raise.

    `before_retry` runs before each new attempt (`RedisOutage.wait`)."""
    while True:
        try:
            result = await call()
        except Exception as e:
            if not is_redis_outage(e):
                raise
            await outage.wait(e, before_retry=before_retry)
            continue
        outage.recovered()
        return result
