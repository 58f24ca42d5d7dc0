"""Per-source reorder buffer, bounded in frames and in time.

Parallel inference can finish frames out of order; smoothing must see them in `seq` order. The
buffer releases items in strictly increasing `seq`. When the next `seq` is missing it waits, but
never holds more than `max_frames` items and never holds an item longer than `max_wait_ms`: then
it gives up on the gap and moves on. An item that arrives after its place was passed (a late
frame or a duplicate) is handed back separately as `late`, so the caller can still deliver it
without feeding it to order-sensitive logic. Pure: pass `now_ms`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["ReorderBuffer", "Released"]

T = TypeVar("T")


@dataclass
class Released(Generic[T]):
    """`ordered`: in strictly increasing seq; `late`: behind the cursor (late or duplicate)."""

    ordered: list[tuple[int, T]] = field(default_factory=list)
    late: list[tuple[int, T]] = field(default_factory=list)
    skipped: int = 0  # seq numbers given up on (gaps passed over)

    def extend(self, other: Released[T]) -> None:
        self.ordered.extend(other.ordered)
        self.late.extend(other.late)
        self.skipped += other.skipped


class ReorderBuffer(Generic[T]):
    """Release items in `seq` order starting at `next_seq`, holding at most `max_frames`."""

    def __init__(self, max_frames: int, max_wait_ms: float, next_seq: int = 0) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.max_frames = max_frames
        self.max_wait_ms = max_wait_ms
        self.next_seq = next_seq
        self._held: dict[int, tuple[float, T]] = {}

    @property
    def held(self) -> int:
        return len(self._held)

    def push(self, seq: int, item: T, now_ms: float) -> Released[T]:
        """Add one item; returns what can be released now (including timeouts)."""
        out: Released[T] = Released()
        if seq < self.next_seq or seq in self._held:
            out.late.append((seq, item))
        else:
            self._held[seq] = (now_ms, item)
            self._release_run(out)
            while len(self._held) > self.max_frames:
                self._skip_to(min(self._held), out)
        out.extend(self.expire(now_ms))
        return out

    def expire(self, now_ms: float) -> Released[T]:
        """Give up on gaps in front of items that have waited `max_wait_ms` or longer."""
        out: Released[T] = Released()
        while self._held:
            overdue = [s for s, (t, _) in self._held.items() if now_ms - t >= self.max_wait_ms]
            if not overdue:
                break
            self._skip_to(max(overdue), out)
        return out

    def due_in_ms(self, now_ms: float) -> float | None:
        """Time until `expire` would release something; None when nothing is held."""
        if not self._held:
            return None
        oldest = min(t for t, _ in self._held.values())
        return max(0.0, oldest + self.max_wait_ms - now_ms)

    def flush(self) -> Released[T]:
        """Release everything held, in order (end of stream, shutdown)."""
        out: Released[T] = Released()
        if self._held:
            self._skip_to(max(self._held), out)
        return out

    def _skip_to(self, seq: int, out: Released[T]) -> None:
        """Release every held item up to `seq` in order, passing over the gaps, then any run after."""
        for s in sorted(k for k in self._held if k <= seq):
            out.skipped += s - self.next_seq
            out.ordered.append((s, self._held.pop(s)[1]))
            self.next_seq = s + 1
        self._release_run(out)

    def _release_run(self, out: Released[T]) -> None:
        while self.next_seq in self._held:
            out.ordered.append((self.next_seq, self._held.pop(self.next_seq)[1]))
            self.next_seq += 1
