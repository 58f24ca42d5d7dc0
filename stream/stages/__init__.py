"""Stages: ingest, preprocess, infer, postprocess. Each glues core logic to adapters.

`build_stage` makes any of them from settings and a Redis client; the processes runner
(`stream.runners.processes`) and the Ray deployments both use it.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from stream.adapters.media.image import use_one_opencv_thread
from stream.core.messages import STAGES
from stream.errors import ConfigError
from stream.settings import Settings
from stream.stages.base import StageLoop

__all__ = ["STAGES", "StageLoop", "build_stage"]


def build_stage(
    name: str, settings: Settings, client: aioredis.Redis, *, consumer: str, model: str | None = None
) -> StageLoop:
    """The consumer loop of stage `name`; model stages default to ``settings.models.default``.

    Raises `ConfigError` for an unknown stage and `ModelError` for an unknown model.
    """
    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    use_one_opencv_thread()  # stages scale by processes, not by OpenCV's thread pool
    if name == "ingest":
        from stream.stages.ingest.stage import IngestStage

        return IngestStage(settings, client, consumer=consumer)
    model = model or settings.models.default
    if name == "preprocess":
        from stream.stages.preprocess import PreprocessStage

        return PreprocessStage(settings, client, consumer=consumer, model=model)
    if name == "infer":
        from stream.stages.infer.stage import InferStage

        return InferStage(settings, client, consumer=consumer, model=model)
    from stream.stages.postprocess.stage import PostprocessStage

    return PostprocessStage(settings, client, consumer=consumer, model=model)
