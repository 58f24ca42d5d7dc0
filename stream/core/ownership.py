"""Which items a replica should own: a fair share each (pure).

Replicas of a role that owns things share them among the live members: postprocess replicas own
partitions, ingest replicas own sources. Each owns at most ``ceil(items / members)``
(`fair_share`): one that holds more gives the excess up, one that holds fewer takes free items
(whose lease nobody holds). Every replica decides for itself from the same facts (members, items,
free items), so no coordinator is needed; two that want the same free item race for its lease
and one wins.

Each member prefers items from its own starting point (its rank among the members spreads the
starts evenly over the items, in their given order), so replicas that join together ask for
different items, and one that gives some up keeps those nearest its start.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Rebalance", "fair_share", "preference", "rebalance"]

T = TypeVar("T", bound=Hashable)


def fair_share(items: int, members: int) -> int:
    """The most of `items` one of `members` live replicas should own."""
    if items < 0:
        raise ValueError(f"items must be >= 0, got {items}")
    return math.ceil(items / max(1, members))


@dataclass(frozen=True)
class Rebalance(Generic[T]):
    """What one replica should do now: try to take `take` (in order), give `give_up` up."""

    take: list[T] = field(default_factory=list)
    give_up: list[T] = field(default_factory=list)


def preference(items: Sequence[T], members: Sequence[str], me: str) -> list[T]:
    """Every item, in the order `me` prefers them: starting at its rank's share of `items`."""
    ranked = sorted(set(members) | {me})
    start = ranked.index(me) * len(items) // len(ranked)
    return [items[(start + i) % len(items)] for i in range(len(items))]


def rebalance(
    items: Sequence[T], members: Sequence[str], me: str, owned: Collection[T], free: Collection[T]
) -> Rebalance[T]:
    """The moves that bring `me` to its fair share of `items` (in a fixed order every member
    agrees on), given the live `members` (`me` counts even when missing), the items it `owned`
    and the `free` ones (no live owner). An owned item no longer in `items` is not counted."""
    order = preference(items, members, me)
    quota = fair_share(len(items), len(set(members) | {me}))
    mine = [p for p in order if p in owned]
    if len(mine) > quota:
        return Rebalance(give_up=mine[quota:])
    want = quota - len(mine)
    return Rebalance(take=[p for p in order if p in free and p not in owned][:want])
