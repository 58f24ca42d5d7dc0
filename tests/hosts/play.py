"""One cluster fault scenario, played with the fault suite's own parts (`tests.faults.scenario`:
replay, sinks, settle, `check`, the outcome JSON): frames flow, the fault strikes once results
move, the replay runs to its end, and the outcome is recorded for `make cluster`.

Every call into the fault suite's result readers is in this module (the readers are being
reworked; re-point them here).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tests.faults.checker import Outcome
from tests.faults.scenario import Harness, Replay

__all__ = ["Played", "play_with_fault"]

Fault = Callable[[Replay], Awaitable[dict[str, Any]]]
"""Strikes (calling ``replay.fault()`` at the moment it does) and returns what to record (its
``note``, if any, goes into the table)."""


@dataclass
class Played:
    outcome: Outcome
    finished: bool
    distinct: int
    deduped: bool
    """The product's own result reader holds every frame once and counted the same duplicates."""
    extra: dict[str, Any]


async def play_with_fault(
    harness: Harness,
    scenario: str,
    frames: int,
    fault: Fault,
    *,
    strike_after: int = 300,
    timeout_s: float = 300.0,
    stall_s: float = 120.0,
    note: str = "",
    settled: Callable[[], dict[str, Any]] | None = None,
) -> Played:
    """`settled()` runs once the pipeline is idle again; what it returns is recorded too (its
    ``note`` appended to the fault's)."""
    replay = await harness.replay(scenario.split()[0], frames)
    moving = await harness.follow(replay, timeout_s=120, until=lambda: replay.sink.distinct >= strike_after)
    assert moving, f"{replay.sink.distinct} results before the fault"
    extra = await fault(replay)
    note = str(extra.pop("note", "")) or note
    finished = await harness.follow(replay, timeout_s=timeout_s, stall_s=stall_s)
    pending = await harness.settle(replay, extra_s=30)
    if settled is not None:
        later = settled()
        note = "; ".join(n for n in (note, str(later.pop("note", ""))) if n)
        extra.update(later)
    note = f"{note}; {frames} frames" if note else f"{frames} frames"
    outcome = await harness.outcome(scenario, replay, pending=pending, note=note)
    await harness.record(outcome, replay, runner="ray-cluster", **extra)
    track = replay.sink.track(replay.source, harness.model)
    deduped = (track.results, track.seqs.floor) == (
        frames,
        frames - 1,
    ) and track.duplicates == outcome.duplicates
    await harness.close(replay)
    return Played(outcome, finished, replay.sink.distinct, deduped, extra)
