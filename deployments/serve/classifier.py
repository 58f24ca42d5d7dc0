"""Synchronous classification of pushed images, batched with ``@serve.batch``.

The ingress decodes and fits each pushed image to the model's input (so garbage is rejected
before it costs anything) and calls `Classifier.classify` with one uint8 [h, w, 3] tensor; Serve
gathers concurrent calls into one list, and the replica runs it as one batched request on the
same OpenVINO engine the infer stage uses. Pushed images do not go through the Redis streams: a
caller waiting on its HTTP response wants the answer of one image now, not a place in the
frame pipeline with its reorder buffer and smoothing (that is what sources are for).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from ray import serve

from deployments.serve.stage import stage_settings
from stream.core.scoring import above, top_k

__all__ = ["Classifier"]


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=64,
    graceful_shutdown_timeout_s=10.0,
    health_check_period_s=10.0,
)
class Classifier:
    """One compiled model per replica; `classify` batches concurrent calls."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        settings: dict[str, Any] | None = None,
        model: str | None = None,
        max_batch_size: int | None = None,
        batch_wait_ms: float | None = None,
    ) -> None:
        from stream.adapters.openvino.engine import open_engine

        s = stage_settings(settings)
        self.model = model or s.models.default
        self.top_k = s.postprocess.top_k
        self.engine = await asyncio.to_thread(
            open_engine,
            self.model,
            weights_dir=s.models.weights_dir,
            cache_dir=s.models.cache_dir,
            performance_hint=s.infer.performance_hint,
            num_requests=s.infer.num_requests,
            repository=s.models.repository,
        )
        self.classify.set_max_batch_size(  # type: ignore[attr-defined]  # a @serve.batch method
            max_batch_size or s.infer.max_batch_size
        )
        wait_ms = s.infer.max_wait_ms if batch_wait_ms is None else batch_wait_ms
        self.classify.set_batch_wait_timeout_s(wait_ms / 1000.0)  # type: ignore[attr-defined]

    def info(self) -> dict[str, Any]:
        """The model this replica serves (for readiness and the ingress)."""
        return {
            "model": self.model,
            "synthetic": self.engine.synthetic,
            "input_hw": list(self.engine.input_hw),
            "labels": self.engine.labels_source,
        }

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def classify(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        """uint8 [h, w, 3] RGB tensors at the model's input size -> top-k per image."""
        started = time.monotonic()
        probs = await self.engine.infer_async(np.stack(images))
        infer_ms = (time.monotonic() - started) * 1000.0
        indices, scores = top_k(probs, self.top_k)
        spec = self.engine.spec
        out = []
        for row, (idx_row, score_row) in enumerate(zip(indices, scores, strict=True)):
            top = [[self.engine.labels[int(i)], float(v)] for i, v in zip(idx_row, score_row, strict=True)]
            extra: dict[str, Any] = {}
            if spec.multi_label:  # every label above the threshold, best first
                hit_idx, hit_vals = above(probs[row], spec.threshold)
                extra["labels"] = [
                    [self.engine.labels[int(i)], float(v)] for i, v in zip(hit_idx, hit_vals, strict=True)
                ]
            out.append(
                {
                    "model": self.model,
                    "label": top[0][0],
                    "score": top[0][1],
                    "top": top,
                    "batch_size": len(images),
                    "infer_ms": round(infer_ms, 3),
                    "synthetic": self.engine.synthetic,
                    **extra,
                }
            )
        return out

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()
