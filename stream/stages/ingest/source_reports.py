"""How ingest reports a source's status: into its partition's ``source_state`` next to the
progress (so any ingress replica can serve ``GET /v1/sources``), as an entry on the events stream
when the status changes (the SSE feed carries it), and as per-source metrics.

The status fields written into the state JSON: ``status``, ``reason``, ``reconnects`` (attempts
to reopen the stream, over every replica that played it), ``last_frame_ms`` (epoch ms of the last
frame published) and ``fps`` (frames published per second lately; None unless playing).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from stream.adapters.metrics import metrics
from stream.core.codec import Message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.sources.status import (
    FAILED,
    FINISHED,
    PLAYING,
    RECONNECTING,
    STALLED,
    FpsMeter,
    frame_age_s,
    status_change,
    status_event,
)

__all__ = ["SourceReport", "STATUS_FIELDS"]

log = logging.getLogger(__name__)

STATUS_FIELDS = ("status", "reason", "reconnects", "last_frame_ms", "fps")
_METRICS_EVERY_S = 1.0


class SourceReport:
    """One played source's status, as this ingest replica sees it. `state` is the source's state
    as it was when playing began (its reconnect count carries on from there)."""

    def __init__(self, source_id: str, keys: PipelineKeys, state: dict[str, Any]) -> None:
        self.source_id = source_id
        self.keys = keys.for_source(source_id)
        self.status: str | None = None
        self.reason: str | None = None
        self._base_reconnects = int(state.get("reconnects") or 0)
        self._source_reconnects = 0  # the current source object's own count
        self.last_frame_ms: float | None = state.get("last_frame_ms")
        self._fps = FpsMeter()
        self._metrics_at_s = 0.0
        self._outage = False  # a reconnecting/stalled change was announced, not yet a recovery
        self.pending_events: list[dict[str, Any]] = []

    @property
    def reconnects(self) -> int:
        return self._base_reconnects + self._source_reconnects

    def fields(self, now_s: float | None = None) -> dict[str, Any]:
        """The status fields of the state JSON."""
        fps = self._fps.fps(time.monotonic() if now_s is None else now_s) if self.status == PLAYING else None
        return {
            "status": self.status,
            "reason": self.reason,
            "reconnects": self.reconnects,
            "last_frame_ms": self.last_frame_ms,
            "fps": fps,
        }

    def publishing(self, n: int) -> None:
        """`n` frames go out now (call before the write that carries `fields()`)."""
        self._fps.add(n, time.monotonic())
        self.last_frame_ms = time.time() * 1000.0

    def published(self, n: int) -> None:
        """The write with `n` frames went through: count them."""
        metrics.source_frames(self.source_id, n)
        self._metrics()

    def observe(self, status: str, reason: str | None, source_reconnects: int) -> bool:
        """Take one status the source is in (or passed through); returns whether the state should
        be written now (`queue_write`). A change worth an event waits in `pending_events` for that
        write. Updates the metrics at most once a second, and at once on a change."""
        new_attempts = source_reconnects - self._source_reconnects
        if new_attempts > 0:
            metrics.source_reconnects(self.source_id, new_attempts)
            self._source_reconnects = source_reconnects
        change = status_change(self.status, status)
        if change == "recovered" and not self._outage:
            change = None  # playing after the first opening: nothing was lost
        self._outage = change in (RECONNECTING, STALLED) or (self._outage and change is None)
        dirty = (status, reason) != (self.status, self.reason) or new_attempts > 0
        previous, self.status, self.reason = self.status, status, reason
        if change is not None:
            log.warning("source %s: %s -> %s (%s)", self.source_id, previous, status, reason or "ok")
            self.pending_events.append(
                status_event(
                    self.source_id, change, status, previous, reason, self.reconnects, time.time() * 1000
                )
            )
        self._metrics(force=dirty)
        return dirty

    def _metrics(self, *, force: bool = False) -> None:
        now_s = time.monotonic()
        if not force and now_s - self._metrics_at_s < _METRICS_EVERY_S:
            return
        self._metrics_at_s = now_s
        metrics.source_up(self.source_id, self.status == PLAYING)
        age = frame_age_s(self.last_frame_ms, time.time() * 1000.0)
        if age is not None:
            metrics.source_last_frame_age(self.source_id, age)

    def queue_write(self, pipe: Any, progress: dict[str, Any]) -> None:
        """Add the state write and the pending events to the MULTI/EXEC `pipe` (same partition,
        same slot: the status and its events land together or not at all)."""
        pipe.hset(self.keys.source_state, self.source_id, json.dumps({**progress, **self.fields()}))
        for event in self.pending_events:
            pipe.xadd(self.keys.events, {FIELD: encode_message(Message(meta=event))})
        self.pending_events = []

    def end(self, error: str | None, removed: bool) -> None:
        """The source is done: finished (or removed) or failed; `queue_write` writes it."""
        self.observe(
            FAILED if error else FINISHED, error or ("removed" if removed else None), self._source_reconnects
        )
