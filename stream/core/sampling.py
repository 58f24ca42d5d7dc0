"""Which frames a source publishes (target fps / every Nth), and how a live source drops. Pure."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

__all__ = ["DropBuffer", "FrameSampler"]

T = TypeVar("T")


@dataclass
class FrameSampler:
    """Keep every `every_nth` frame, and at most `target_fps` frames per second of media time.

    `t_ms` is the frame's own timestamp (media time for files, capture time for live sources).
    """

    target_fps: float | None = None
    every_nth: int = 1
    seen: int = 0  # frames offered so far (set it to resume mid-source)
    _next_due_ms: float | None = None

    def __post_init__(self) -> None:
        if self.every_nth < 1:
            raise ValueError(f"every_nth must be >= 1, got {self.every_nth}")
        if self.target_fps is not None and self.target_fps <= 0:
            raise ValueError(f"target_fps must be > 0, got {self.target_fps}")

    def keep(self, t_ms: float) -> bool:
        index = self.seen
        self.seen += 1
        if index % self.every_nth:
            return False
        if self.target_fps is None:
            return True
        period_ms = 1000.0 / self.target_fps
        if self._next_due_ms is None or t_ms < self._next_due_ms - 10 * period_ms:
            self._next_due_ms = t_ms  # first frame, or the clock jumped back (a loop restarted)
        if t_ms + 1e-6 < self._next_due_ms:
            return False
        # step from the due time, not from t_ms, so the long-run rate matches target_fps
        self._next_due_ms = max(self._next_due_ms + period_ms, t_ms - period_ms)
        return True


class DropBuffer(Generic[T]):
    """A bounded queue for a live source: when full, drop the oldest or the newest frame."""

    def __init__(self, capacity: int, policy: Literal["drop_oldest", "drop_newest"]) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if policy not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"policy must be drop_oldest or drop_newest, got {policy!r}")
        self.capacity = capacity
        self.policy = policy
        self._items: deque[T] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> T | None:
        """Add `item`; returns the frame dropped to make room (or `item` itself), else None."""
        if len(self._items) < self.capacity:
            self._items.append(item)
            return None
        self.dropped += 1
        if self.policy == "drop_newest":
            return item
        victim = self._items.popleft()
        self._items.append(item)
        return victim

    def take(self, n: int) -> list[T]:
        """Up to `n` frames, oldest first."""
        return [self._items.popleft() for _ in range(min(n, len(self._items)))]
