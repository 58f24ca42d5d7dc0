"""Serve autoscaling policy for the stage deployments: replicas from Redis backlog and measured rate.

Each stage replica reports, through ``record_autoscaling_stats``, the backlog of its consumer
group (entries not yet acked: lag + pending, the same number from every replica of a stage) and
the frames per second it processed itself. Serve averages both over ``look_back_period_s`` and
hands them to this policy in ``ctx.aggregated_metrics``; the policy returns a replica count and
Serve applies ``upscale_delay_s`` / ``downscale_delay_s``, the scaling factors and the
deployment's ``min_replicas`` / ``max_replicas`` on top.

The rule (pure: `decide` takes plain numbers, so it is unit-tested without Ray):

- A stage is *saturated* while its backlog is above ``min_backlog``: its replicas are reading as
  fast as they can, so the mean per-replica rate is their capacity. The policy keeps an
  exponential average of that capacity in the policy state.
- Saturated: enough replicas to carry the current rate plus clear the backlog within
  ``drain_target_s``: ``ceil((rate + backlog / drain_target_s) / capacity)``, never fewer than now.
- Not saturated: the fewest replicas that carry the current rate at ``target_utilization`` of the
  learned capacity, never more than now (a stage that keeps up never grows). Without a learned
  capacity the count stays where it is.
- No reports yet (replicas starting) or no progress at all: keep the current target; a stuck loop
  is the health check's business, not the autoscaler's.

Ingest has no consumer group: it decodes sources, so it scales on CPU instead (`LoadPolicy`,
rule in `decide_by_load`). Each replica reports the CPU it used per second (``cpu_cores``, every
thread of its process: FFmpeg's decoder threads included); the deployment needs enough replicas
that their total stays at ``target_utilization`` of ``cores_per_replica`` each. A replica whose
sources need more than its cores can give reports about its cores, so the total of saturated
replicas over ``target_utilization`` asks for more: the count climbs until the load fits. Sources
are shared out among the replicas (`stream.core.ownership`), so a new replica takes its share.

This module is pickled by value into the Serve controller, so it imports only the standard
library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BACKLOG_KEY",
    "CPU_KEY",
    "RATE_KEY",
    "BacklogPolicy",
    "Decision",
    "LoadParams",
    "LoadPolicy",
    "ScalingParams",
    "decide",
    "decide_by_load",
    "policy_function",
]

BACKLOG_KEY = "backlog"
"""Metric each replica reports: its group's lag + pending, in entries."""
RATE_KEY = "rate_fps"
"""Metric each replica reports: frames it processed per second over its last report interval."""
CPU_KEY = "cpu_cores"
"""Metric each replica reports: CPU seconds its process used per second over its last interval."""

_CAPACITY_STATE = "capacity_fps"


@dataclass(frozen=True)
class ScalingParams:
    """Knobs of the policy (``policy_kwargs`` in the Serve config)."""

    drain_target_s: float = 5.0
    min_backlog: int = 64
    target_utilization: float = 0.8
    capacity_fps: float | None = None
    capacity_weight: float = 0.3

    def __post_init__(self) -> None:
        if self.drain_target_s <= 0:
            raise ValueError(f"drain_target_s must be > 0, got {self.drain_target_s}")
        if self.min_backlog < 0:
            raise ValueError(f"min_backlog must be >= 0, got {self.min_backlog}")
        if not 0 < self.target_utilization <= 1:
            raise ValueError(f"target_utilization must be in (0, 1], got {self.target_utilization}")
        if self.capacity_fps is not None and self.capacity_fps <= 0:
            raise ValueError(f"capacity_fps must be > 0 when set, got {self.capacity_fps}")
        if not 0 < self.capacity_weight <= 1:
            raise ValueError(f"capacity_weight must be in (0, 1], got {self.capacity_weight}")


@dataclass(frozen=True)
class Decision:
    """What `decide` chose and why (the reason goes into the policy state, for debugging)."""

    replicas: int
    capacity_fps: float | None
    reason: str


def decide(
    *,
    current: int,
    backlog: float | None,
    rates_fps: list[float],
    capacity_fps: float | None,
    params: ScalingParams,
    min_replicas: int,
    max_replicas: int,
) -> Decision:
    """Replica count for a stage with `current` replicas (see the module docstring).

    `backlog` is the group's backlog in entries (None: nobody reported yet), `rates_fps` the
    per-replica rates of the replicas that reported, `capacity_fps` the capacity learned so far.
    The result is always within ``[min_replicas, max_replicas]``.
    """
    if min_replicas < 0 or max_replicas < max(min_replicas, 1):
        raise ValueError(f"need 0 <= min_replicas <= max_replicas, got {min_replicas}, {max_replicas}")

    def bounded(n: int) -> int:
        return max(min_replicas, min(max_replicas, n))

    capacity = capacity_fps if capacity_fps is not None else params.capacity_fps
    if backlog is None or not rates_fps:
        return Decision(bounded(current), capacity, "no reports yet")
    total_fps = sum(rates_fps)
    working = [r for r in rates_fps if r > 0]  # replicas still loading a model report 0
    if backlog > params.min_backlog:
        if working:
            measured = sum(working) / len(working)
            w = params.capacity_weight
            capacity = measured if capacity is None else (1 - w) * capacity + w * measured
        if not capacity:
            return Decision(bounded(current), capacity, "saturated, no progress yet")
        need = _replicas((total_fps + backlog / params.drain_target_s) / capacity)
        return Decision(bounded(max(current, need)), capacity, f"saturated: backlog {backlog:.0f}")
    if not capacity:
        return Decision(bounded(current), capacity, "keeping up, capacity unknown")
    need = _replicas(total_fps / (capacity * params.target_utilization))
    return Decision(bounded(min(current, max(need, 1))), capacity, f"keeping up at {total_fps:.1f} fps")


def _replicas(load: float) -> int:
    """Replicas for `load` (rate / capacity): a capacity measured near zero (a replica that had
    barely started) makes it huge or infinite, which the bounds then cap; it never raises."""
    return math.ceil(load) if load < _MANY else _MANY


_MANY = 1_000_000


def _latest(metric: dict[Any, float] | None) -> list[float]:
    return [float(v) for v in (metric or {}).values()]


class BacklogPolicy:
    """The Serve policy callable: ``autoscaling_config.policy.policy_function`` names this class
    and ``policy_kwargs`` are `ScalingParams` fields; Serve instantiates it once per deployment."""

    def __init__(self, **kwargs: Any) -> None:
        self.params = ScalingParams(**kwargs)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        metrics = ctx.aggregated_metrics or {}
        backlogs = _latest(metrics.get(BACKLOG_KEY))
        state = dict(ctx.policy_state or {})
        decision = decide(
            current=ctx.target_num_replicas,
            backlog=max(backlogs) if backlogs else None,
            rates_fps=_latest(metrics.get(RATE_KEY)),
            capacity_fps=state.get(_CAPACITY_STATE),
            params=self.params,
            min_replicas=ctx.capacity_adjusted_min_replicas,
            max_replicas=ctx.capacity_adjusted_max_replicas,
        )
        state[_CAPACITY_STATE] = decision.capacity_fps
        state["reason"] = decision.reason
        return decision.replicas, state


@dataclass(frozen=True)
class LoadParams:
    """Knobs of `LoadPolicy` (``policy_kwargs`` in the Serve config)."""

    cores_per_replica: float = 2.0
    target_utilization: float = 0.7

    def __post_init__(self) -> None:
        if self.cores_per_replica <= 0:
            raise ValueError(f"cores_per_replica must be > 0, got {self.cores_per_replica}")
        if not 0 < self.target_utilization <= 1:
            raise ValueError(f"target_utilization must be in (0, 1], got {self.target_utilization}")


def decide_by_load(
    *, current: int, loads: list[float], params: LoadParams, min_replicas: int, max_replicas: int
) -> Decision:
    """Replica count for a deployment whose replicas used `loads` cores each (see the module
    docstring); no reports yet: keep the current count. Always within the bounds."""
    if min_replicas < 0 or max_replicas < max(min_replicas, 1):
        raise ValueError(f"need 0 <= min_replicas <= max_replicas, got {min_replicas}, {max_replicas}")
    bounded = max(min_replicas, min(max_replicas, current))
    if not loads:
        return Decision(bounded, None, "no reports yet")
    total = sum(max(0.0, x) for x in loads)
    need = _replicas(total / (params.cores_per_replica * params.target_utilization))
    n = max(min_replicas, min(max_replicas, max(need, 1)))
    return Decision(n, None, f"{total:.2f} cores in use by {len(loads)} replicas")


class LoadPolicy:
    """The Serve policy callable for Ingest: ``policy_kwargs`` are `LoadParams` fields."""

    def __init__(self, **kwargs: Any) -> None:
        self.params = LoadParams(**kwargs)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        metrics = ctx.aggregated_metrics or {}
        state = dict(ctx.policy_state or {})
        decision = decide_by_load(
            current=ctx.target_num_replicas,
            loads=_latest(metrics.get(CPU_KEY)),
            params=self.params,
            min_replicas=ctx.capacity_adjusted_min_replicas,
            max_replicas=ctx.capacity_adjusted_max_replicas,
        )
        state["reason"] = decision.reason
        return decision.replicas, state


def policy_function(ctx: Any) -> tuple[int, dict[str, Any]]:
    """`BacklogPolicy` with default parameters, for configs that name a plain function."""
    return _DEFAULT(ctx)


_DEFAULT = BacklogPolicy()
