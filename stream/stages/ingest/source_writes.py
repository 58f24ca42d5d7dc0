"""Ingest's writes to Redis for one source, each in one MULTI/EXEC on the source's partition:
published frames with the source's progress, status and counters (and, when one is due, the
thumbnail: `stream.core.thumbnails.ThumbnailThrottle`), a status report, dropped-frame counts,
and end-of-stream with the source marked done.

The stage decides what to write and keeps its own counts and metrics; this module only writes.
"""

from __future__ import annotations

import json
import time
from typing import Any

from stream.adapters.media.jpeg import encode_jpeg
from stream.core.keys import FIELD, PipelineKeys
from stream.core.thumbnails import ThumbnailThrottle
from stream.errors import CodecError
from stream.settings import IngestSettings
from stream.stages.ingest.frames import PendingFrame, eos_message
from stream.stages.ingest.source_reports import SourceReport

__all__ = ["SourceWrites"]


class SourceWrites:
    """Writes a source's frames, progress, status, drops and end into its partition's keys."""

    def __init__(self, client: Any, keys: PipelineKeys, cfg: IngestSettings) -> None:
        self.client = client
        self.keys = keys
        self.thumbnail_ttl_s = cfg.thumbnail_ttl_s
        self.jpeg_quality = cfg.jpeg_quality
        self._thumbnails = ThumbnailThrottle(cfg.thumbnail_interval_ms, cfg.thumbnail_max_bytes)

    async def publish(
        self,
        source_id: str,
        frames: list[PendingFrame],
        next_seq: int,
        progress: dict[str, Any],
        report: SourceReport | None,
        models: tuple[str, ...] | None = None,
        straight: tuple[str, ...] = (),
    ) -> None:
        """XADD `frames` as seqs `next_seq`, ... and record `progress` (with the report's status
        fields) and the published count, in one MULTI/EXEC. `models`: the source's own models
        (None: every model), stamped on each frame. `straight`: XADD each frame to these models'
        tensors streams instead of the frames stream (`PipelineBacklog.straight_models`)."""
        keys = self.keys.for_source(source_id)
        ingest_ms = time.time() * 1000.0
        status: dict[str, Any] = {}
        if report is not None:
            report.publishing(len(frames))
            status = report.fields()
        async with self.client.pipeline(transaction=True) as pipe:
            for seq, frame in enumerate(frames, start=next_seq):
                if not straight:
                    pipe.xadd(keys.frames, {FIELD: frame.encode(source_id, seq, ingest_ms, models)})
                for model in straight:
                    tensor = frame.encode(source_id, seq, ingest_ms, models, model)
                    pipe.xadd(keys.tensors(model), {FIELD: tensor})
            pipe.hset(keys.source_state, source_id, json.dumps({**progress, **status}))
            pipe.hincrby(keys.counters, f"published:{source_id}", len(frames))
            self._thumbnail(pipe, keys, source_id, frames[-1], ingest_ms)
            await pipe.execute()
        if report is not None:
            report.published(len(frames))

    def _thumbnail(
        self, pipe: Any, keys: PipelineKeys, source_id: str, frame: PendingFrame, now_ms: float
    ) -> None:
        """Keep the frame's JPEG bytes as the source's thumbnail when one is due (`ThumbnailThrottle`);
        a raw frame is encoded then (at most once a `thumbnail_interval_ms`, a model-sized picture)."""
        data: bytes | memoryview = frame.array.data  # a view: no copy unless it is taken
        if frame.encoding == "raw":
            if not self._thumbnails.due(source_id, now_ms):
                return
            try:
                data = encode_jpeg(frame.array, self.jpeg_quality)
            except CodecError:
                return  # not an RGB picture: no thumbnail, the frame itself goes on
        elif frame.encoding != "jpeg":
            return
        if self._thumbnails.take(source_id, data, now_ms):
            pipe.set(keys.thumbnail(source_id), data, ex=self.thumbnail_ttl_s)

    def forget(self, source_id: str) -> None:
        """The source stopped playing here: the next one to play it gets a thumbnail at once."""
        self._thumbnails.forget(source_id)

    async def report(self, report: SourceReport, progress: dict[str, Any]) -> None:
        """Write the source's status (and an event for a change worth one) next to `progress`."""
        async with self.client.pipeline(transaction=True) as pipe:
            report.queue_write(pipe, progress)
            await pipe.execute()

    async def count_drops(self, source_id: str, n: int) -> None:
        """Add `n` to the source's ``dropped:<source>`` counter."""
        await self.client.hincrby(self.keys.for_source(source_id).counters, f"dropped:{source_id}", n)

    async def finish(
        self,
        source_id: str,
        state: dict[str, Any],
        *,
        error: str | None = None,
        removed: bool = False,
        report: SourceReport | None = None,
        models: tuple[str, ...] | None = None,
    ) -> int:
        """Publish end-of-stream and mark the source done (finished or failed), atomically;
        returns the frames it had published (the seq end-of-stream took). Into the frames stream
        always, also after frames that went straight into the tensors streams: preprocess passes
        it on behind them."""
        next_seq, first_seq = int(state.get("next_seq", 0)), int(state.get("first_seq", 0))
        # end-of-stream takes a seq of its own: a source re-added later starts after it
        done = {**state, "next_seq": next_seq + 1, "done": True, "error": error}
        eos = eos_message(
            source_id, next_seq, first_seq=first_seq, error=error, removed=removed, models=models
        )
        keys = self.keys.for_source(source_id)
        report = report or SourceReport(source_id, self.keys, state)
        report.end(error, removed)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.frames, {FIELD: eos})
            report.queue_write(pipe, done)
            await pipe.execute()
        return next_seq
