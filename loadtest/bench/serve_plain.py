"""What a user might build instead of framestream: one Ray Serve deployment that takes a JPEG
over HTTP, decodes and resizes it, and classifies with ``@serve.batch`` on the same OpenVINO
engine. `loadtest bench` measures it next to framestream."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request

__all__ = ["PlainClassifier"]


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 1})
class PlainClassifier:
    def __init__(self, model: str, weights_dir: str | None = None) -> None:
        from pathlib import Path

        from stream.adapters.openvino.engine import open_engine

        self.engine = open_engine(model, weights_dir=Path(weights_dir) if weights_dir else None)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def classify(self, images: list[bytes]) -> list[dict[str, Any]]:
        from stream.adapters.media.image import decode_image, fit_to_model

        batch = np.stack([fit_to_model(decode_image(b), self.engine.spec) for b in images])
        probs = await self.engine.infer_async(batch)
        return [
            {"label": self.engine.labels[int(i)], "score": float(p[i]), "batch_size": len(images)}
            for p, i in zip(probs, probs.argmax(axis=1), strict=True)
        ]

    async def __call__(self, request: Request) -> dict[str, Any]:
        return await self.classify(await request.body())
