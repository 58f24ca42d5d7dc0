"""What a fault scenario reports: pure bookkeeping over what was sent and what came out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass

__all__ = ["Outcome", "check"]


@dataclass(frozen=True)
class Outcome:
    scenario: str
    frames: int
    results: int
    lost: int
    duplicates: int
    dead_lettered: int
    pending: int
    recovery_s: float | None = None
    note: str = ""

    def row(self) -> dict[str, object]:
        return asdict(self)


def check(
    scenario: str,
    sent: Iterable[tuple[str, int]],
    results: Iterable[tuple[str, int]],
    *,
    dead_lettered: Iterable[tuple[str, int]] = (),
    pending: int = 0,
    recovery_s: float | None = None,
    note: str = "",
) -> Outcome:
    """lost = sent - distinct results - dead-lettered frames (a dead letter is accounted for, not lost)."""
    sent_set = set(sent)
    counts = Counter(results)
    dead = set(dead_lettered) & sent_set
    delivered = set(counts) & sent_set
    return Outcome(
        scenario=scenario,
        frames=len(sent_set),
        results=len(delivered),
        lost=len(sent_set - delivered - dead),
        duplicates=sum(c - 1 for c in counts.values()),
        dead_lettered=len(dead),
        pending=pending,
        recovery_s=recovery_s,
        note=note,
    )
