"""Which partitions a replica should own: a fair share each (pure).

Replicas of a stage that owns partitions (postprocess) share P partitions among the live
members. Each owns at most ``ceil(P / members)`` (`fair_share`): one that holds more gives the
excess up, one that holds fewer takes free partitions (whose lease nobody holds). Every replica
decides for itself from the same facts (members, free partitions), so no coordinator is needed;
two that want the same free partition race for its lease and one wins.

Each member prefers partitions from its own starting point (its rank among the members spreads
the starts evenly over 0..P-1), so replicas that join together ask for different partitions, and
one that gives some up keeps those nearest its start.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

__all__ = ["Rebalance", "fair_share", "preference", "rebalance"]


def fair_share(partitions: int, members: int) -> int:
    """The most partitions one of `members` live replicas should own."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return math.ceil(partitions / max(1, members))


@dataclass(frozen=True)
class Rebalance:
    """What one replica should do now: try to take `take` (in order), give `give_up` up."""

    take: list[int] = field(default_factory=list)
    give_up: list[int] = field(default_factory=list)


def preference(partitions: int, members: Sequence[str], me: str) -> list[int]:
    """Every partition, in the order `me` prefers them: starting at its rank's share of 0..P-1."""
    ranked = sorted(set(members) | {me})
    start = ranked.index(me) * partitions // len(ranked)
    return [(start + i) % partitions for i in range(partitions)]


def rebalance(
    partitions: int, members: Sequence[str], me: str, owned: Collection[int], free: Collection[int]
) -> Rebalance:
    """The moves that bring `me` to its fair share, given the live `members` (`me` counts even
    when missing), the partitions it `owned` and the `free` ones (no live owner)."""
    order = preference(partitions, members, me)
    quota = fair_share(partitions, len(set(members) | {me}))
    mine = [p for p in order if p in owned]
    if len(mine) > quota:
        return Rebalance(give_up=mine[quota:])
    want = quota - len(mine)
    return Rebalance(take=[p for p in order if p in free and p not in owned][:want])
