"""What a fault scenario reports: pure bookkeeping over what was sent and what came out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import asdict, dataclass

__all__ = ["Outcome", "check", "label_changes", "sequence_differences"]


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


def sequence_differences(
    expected: Mapping[str, Mapping[int, Hashable]], got: Mapping[str, Mapping[int, Hashable]]
) -> dict[str, list[int]]:
    """Per source, the seqs whose value (e.g. smoothed label and score) differs between two runs,
    or that only one run has; sources without a difference are left out."""
    out: dict[str, list[int]] = {}
    for source in sorted(set(expected) | set(got)):
        a, b = expected.get(source, {}), got.get(source, {})
        diff = sorted(seq for seq in set(a) | set(b) if a.get(seq, ...) != b.get(seq, ...))
        if diff:
            out[source] = diff
    return out


def label_changes(labels: Mapping[int, Hashable]) -> int:
    """How often the value changes along increasing seq (a source's smoothed-label changes)."""
    ordered = [labels[seq] for seq in sorted(labels)]
    return sum(1 for prev, cur in zip(ordered, ordered[1:], strict=False) if prev != cur)
