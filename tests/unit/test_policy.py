"""The stage autoscaling policy: pure decisions, and the Serve-facing callable on a fake context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from deployments.serve.policy import (
    BACKLOG_KEY,
    CPU_KEY,
    RATE_KEY,
    BacklogPolicy,
    LoadParams,
    LoadPolicy,
    ScalingParams,
    decide,
    decide_by_load,
    policy_function,
)

P = ScalingParams(drain_target_s=5.0, min_backlog=64, target_utilization=0.8)


def _decide(current: int, backlog: float | None, rates: list[float], capacity: float | None = None, **kw):
    return decide(
        current=current,
        backlog=backlog,
        rates_fps=rates,
        capacity_fps=capacity,
        params=kw.pop("params", P),
        min_replicas=kw.pop("min_replicas", 1),
        max_replicas=kw.pop("max_replicas", 8),
    )


def test_a_growing_backlog_adds_replicas_to_drain_it_within_the_target():
    # one replica doing 100 fps with 2,000 entries waiting: 100 + 2000/5 = 500 fps needed -> 5
    d = _decide(1, 2_000, [100.0])
    assert d.replicas == 5
    assert d.capacity_fps == pytest.approx(100.0)


def test_scale_up_is_capped_by_max_replicas():
    assert _decide(1, 100_000, [100.0], max_replicas=3).replicas == 3


def test_a_stage_that_keeps_up_never_grows_even_near_its_capacity():
    # postprocess during an inference burst: busy, but no backlog to speak of
    assert _decide(1, 10, [95.0], capacity=100.0).replicas == 1


def test_after_a_burst_replicas_shrink_to_what_the_rate_needs():
    # three replicas, backlog gone, 120 fps total, capacity 100 each at 80% -> 2
    assert _decide(3, 0, [40.0, 40.0, 40.0], capacity=100.0).replicas == 2
    # and idle -> min_replicas
    assert _decide(3, 0, [0.0, 0.0, 0.0], capacity=100.0, min_replicas=1).replicas == 1


def test_without_a_learned_capacity_an_idle_stage_stays_put():
    assert _decide(2, 0, [0.0, 0.0]).replicas == 2


def test_no_reports_keeps_the_current_target():
    d = _decide(2, None, [])
    assert d.replicas == 2
    assert d.reason == "no reports yet"


def test_saturated_with_no_progress_does_not_scale():
    # a stuck or warming-up stage: more replicas would not help; the health check handles it
    assert _decide(1, 5_000, [0.0]).replicas == 1


def test_replicas_still_loading_do_not_drag_the_capacity_down():
    d = _decide(2, 1_000, [120.0, 0.0])
    assert d.capacity_fps == pytest.approx(120.0)


def test_capacity_is_an_exponential_average_of_saturated_measurements():
    d = _decide(2, 1_000, [50.0, 50.0], capacity=100.0, params=ScalingParams(capacity_weight=0.5))
    assert d.capacity_fps == pytest.approx(75.0)


def test_a_prior_capacity_lets_an_idle_stage_shrink():
    params = ScalingParams(capacity_fps=200.0)
    assert _decide(3, 0, [10.0, 10.0, 10.0], params=params).replicas == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drain_target_s": 0},
        {"min_backlog": -1},
        {"target_utilization": 0},
        {"target_utilization": 1.5},
        {"capacity_fps": 0},
        {"capacity_weight": 0},
    ],
)
def test_bad_parameters_are_named(kwargs: dict[str, Any]):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        ScalingParams(**kwargs)


@given(
    current=st.integers(1, 10),
    backlog=st.one_of(st.none(), st.floats(0, 1e6)),
    rates=st.lists(st.floats(0, 1e4), max_size=10),
    capacity=st.one_of(st.none(), st.floats(0.1, 1e4)),
    lo=st.integers(0, 4),
    span=st.integers(0, 6),
)
@example(current=1, backlog=1e6, rates=[2.2e-313], capacity=None, lo=0, span=0)  # a near-zero rate
def test_the_decision_is_always_within_bounds_and_moves_the_right_way(
    current, backlog, rates, capacity, lo, span
):
    hi = max(lo, 1) + span
    d = _decide(current, backlog, rates, capacity, min_replicas=lo, max_replicas=hi)
    assert lo <= d.replicas <= hi
    inside = max(lo, min(hi, current))
    if backlog is not None and rates and backlog > P.min_backlog:
        assert d.replicas >= inside  # a saturated stage never shrinks
    else:
        assert d.replicas <= inside  # a stage that keeps up never grows


@dataclass
class _FakeContext:
    """The fields of Serve's AutoscalingContext the policy reads."""

    target_num_replicas: int
    aggregated_metrics: dict[str, dict[str, float]]
    capacity_adjusted_min_replicas: int = 1
    capacity_adjusted_max_replicas: int = 4
    policy_state: dict[str, Any] = field(default_factory=dict)


def test_the_serve_callable_reads_replica_metrics_and_keeps_capacity_in_its_state():
    policy = BacklogPolicy(drain_target_s=2.0, min_backlog=10)
    ctx = _FakeContext(
        target_num_replicas=1,
        aggregated_metrics={BACKLOG_KEY: {"r1": 600.0}, RATE_KEY: {"r1": 100.0}},
    )
    replicas, state = policy(ctx)
    assert replicas == 4  # (100 + 600/2) / 100
    assert state["capacity_fps"] == pytest.approx(100.0)
    # next tick: burst over, capacity remembered, shrink back
    ctx2 = _FakeContext(
        target_num_replicas=4,
        aggregated_metrics={BACKLOG_KEY: {"r1": 0.0, "r2": 0.0}, RATE_KEY: {"r1": 1.0, "r2": 1.0}},
        policy_state=state,
    )
    replicas2, _ = policy(ctx2)
    assert replicas2 == 1


def test_the_plain_function_form_works_without_metrics():
    replicas, state = policy_function(_FakeContext(target_num_replicas=2, aggregated_metrics={}))
    assert replicas == 2
    assert state["reason"] == "no reports yet"


# The ingress rate limiter is pure logic of the Ray layer too; it is tested here with the policy.
def test_rate_limiter_allows_a_burst_then_refills_at_the_rate():
    from deployments.api.ratelimit import RateLimiter

    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.allow("a", 0.0)
    assert wait == pytest.approx(0.5)
    assert limiter.allow("b", 0.0) == 0.0  # per client
    assert limiter.allow("a", 0.5) == 0.0  # one token back after 1/rate s


def test_retry_after_is_the_wait_rounded_up_to_whole_seconds():
    from deployments.api.ratelimit import RateLimiter, retry_after_s

    limiter = RateLimiter(rate_per_s=0.25, burst=1)
    assert limiter.allow("a", 100.0) == 0.0
    waits = [limiter.allow("a", t) for t in (100.0, 101.0, 103.9)]  # a fake clock: no sleeping
    assert waits == pytest.approx([4.0, 3.0, 0.1])
    assert [retry_after_s(w) for w in waits] == [4, 3, 1]
    assert limiter.allow("a", 104.0) == 0.0


@given(times=st.lists(st.floats(0, 100), min_size=1, max_size=200))
def test_rate_limiter_never_allows_more_than_burst_plus_rate_times_elapsed(times):
    from deployments.api.ratelimit import RateLimiter

    limiter = RateLimiter(rate_per_s=5.0, burst=4, max_clients=1)
    times = sorted(times)
    allowed = sum(limiter.allow("c", t) == 0.0 for t in times)
    assert allowed <= 4 + 5.0 * (times[-1] - times[0]) + 1e-9


def test_ingest_grows_until_its_cpu_fits_and_shrinks_when_it_idles():
    params = LoadParams(cores_per_replica=2, target_utilization=0.7)

    def n(current: int, loads: list[float], lo: int = 1, hi: int = 4) -> int:
        return decide_by_load(
            current=current, loads=loads, params=params, min_replicas=lo, max_replicas=hi
        ).replicas

    assert n(1, []) == 1  # no reports: stay
    assert n(1, [0.4]) == 1  # a few cameras: one replica is plenty
    assert n(1, [1.95]) == 2  # saturated at its cores: one more
    assert n(2, [1.9, 1.9]) == 3  # still saturated: the count climbs until the load fits
    assert n(3, [0.9, 0.9, 0.9]) == 2  # 2.7 cores fit two replicas at 70%
    assert n(3, [0.0, 0.0, 0.0]) == 1  # idle: back to the minimum
    assert n(1, [9.0]) == 4  # never past max_replicas
    with pytest.raises(ValueError):
        LoadParams(cores_per_replica=0)


def test_the_load_policy_reads_each_replicas_cpu():
    ctx = _FakeContext(target_num_replicas=1, aggregated_metrics={CPU_KEY: {"r1": 1.9}})
    replicas, state = LoadPolicy(cores_per_replica=2)(ctx)
    assert replicas == 2 and "1.90 cores" in state["reason"]
