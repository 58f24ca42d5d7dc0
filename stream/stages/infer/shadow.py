"""A shadow version: a candidate run beside the active version on the same tensors.

It reads ``fs:{p}:tensors:<model>`` through a consumer group of its own (``shadow:<model>``, made
at the end of the stream when the shadow starts: it compares from then on) and writes each
frame's scores, its top-1 label and its inference time per frame to ``fs:{p}:shadow:<model>``
only: never to the scores stream, results, events or dead letters (a tensor the active version
dead-letters is only acked here). `stream.core.agreement` compares that stream with the active
version's results. The shadow stream has no consumer group and is cut to about
`streams.max_len` entries.

A shadow never holds the pipeline back: ingest's backlog leaves its group out, and a shadow more
than `MAX_BEHIND` tensors behind (a candidate slower than the pipeline) skips to the newest
tensor, so it compares a sample of the frames instead of keeping tensors from being trimmed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from stream.adapters.redis.entries import Entry, Output
from stream.adapters.redis.trim import trim_output
from stream.core.codec import Message, encode_message
from stream.settings import Settings
from stream.stages.base import Handled
from stream.stages.infer.stage import InferStage

__all__ = ["MAX_BEHIND", "ShadowInfer"]

log = logging.getLogger(__name__)

_TRIM_S = 5.0
MAX_BEHIND = 256
"""Tensors a shadow may be behind before it skips to the newest."""


class ShadowInfer(InferStage):
    name = "infer-shadow"
    stage_group = "shadow"

    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        *,
        consumer: str,
        model: str,
        engine: Any,
        like: InferStage | None = None,
    ) -> None:
        super().__init__(settings, client, consumer=consumer, model=model, engine=engine)
        if like is not None:  # the active loop's tuned batch size: the same batches, the same cost
            self.policy, self.buckets = like.policy, like.buckets
        self._warm = True  # loaded and warmed by the version watch
        self._next_shadow_trim_s = 0.0
        self.skipped = 0
        """Tensors skipped because the shadow fell `MAX_BEHIND` behind."""

    @property
    def version(self) -> int:
        return int(getattr(self.engine, "version", 1))

    def _watch_versions(self) -> None:
        """The active loop's watch decides which version runs here."""

    async def start(self) -> None:
        if not self._started:  # a new shadow compares from now on, not over the whole backlog
            for stream in self.all_streams:
                await self.transport.ensure_group(stream, self.group, start_id="$")
        await super().start()

    def _bad(self, entry: Entry, message: Message, reason: str, out: Handled) -> None:
        """The active loop dead-letters it; the shadow only acks it."""
        out.acks.append(entry)

    def _pass_on(self, entry: Entry, meta: dict[str, Any], out: Handled) -> None:
        """Markers concern the active results only."""

    def _emit(
        self,
        entry: Entry,
        meta: dict[str, Any],
        scores: np.ndarray,
        engine: Any,
        infer_ms: float,
        out: Handled,
    ) -> None:
        labels = getattr(engine, "labels", None)
        best = int(np.argmax(scores.astype(np.float32)))  # ties: the lower index, as top_k
        meta["top_label"] = labels[best] if labels else f"class_{best}"
        meta["top_score"] = round(float(scores[best]), 5)
        meta["infer_ms"] = round(infer_ms, 4)
        meta.pop("stamps", None)
        stream = self.partition_keys(entry).shadow(self.model or "")
        out.outputs.append(Output(stream, encode_message(Message(meta=meta, array=scores))))

    async def maintain(self) -> None:
        await super().maintain()
        now = time.monotonic()
        if now >= self._next_shadow_trim_s:
            self._next_shadow_trim_s = now + _TRIM_S
            for keys in self.keys.all_partitions:
                await trim_output(
                    self.client, keys.shadow(self.model or ""), keep=self.settings.streams.max_len
                )
            for stream in self.streams:
                stats = await self.transport.group_stats(stream, self.group)
                if stats.lag > MAX_BEHIND:
                    log.warning(
                        "shadow %s: %d tensors behind on %s; skipping to the newest",
                        self.model,
                        stats.lag,
                        stream,
                    )
                    self.skipped += stats.lag
                    await self.client.xgroup_setid(stream, self.group, id="$")

    async def run(self, stop: asyncio.Event) -> None:
        await self._run(stop)
