"""Routes of the models the pipeline serves (an ``APIRouter`` the ingress's app includes), over
the model repository (`stream.zoo.repository`) the Infer replicas follow, as ``framestream models``
does:

- ``GET /v1/models`` (read): each served model's versions, active and shadow version, classes,
  frames/s per version and a shadow's agreement with the active version;
- ``POST /v1/models/{name}/activate`` ``{"version": N}``, ``/rollback``, ``/shadow``
  ``{"version": N}`` (``null`` stops it), ``/promote`` (admin): change what serves; the Infer
  replicas follow within ``models.poll_s``. 404 for an unknown model or version, 409 for a change
  that cannot be made (a built-in model, nothing to roll back to, no shadow to promote).

- ``POST /v1/models/{name}`` (admin): serve one more model of the repository beside the running
  ones (202; `stream.runners.more_models` starts it). 404 for a name the repository does not
  know, 409 when it is served or starting already, or when no runner watches the pipeline (a
  KubeRay RayService: its applications are its ``serveConfigV2``).

The repository is a folder: the ingress and every Infer replica must see the same one
(``models.repository``; one host, or a shared volume).
"""

# No `from __future__ import annotations`: FastAPI resolves the route annotations at runtime.
import asyncio
import time
from typing import Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, Field

from deployments.api.http_errors import ApiError, redis_call
from deployments.api.openapi import errors
from deployments.api.replica import serving_replica

__all__ = ["router"]

router = APIRouter()


class VersionChoice(BaseModel):
    version: int | None = Field(None, ge=1, description="a version of the model (shadow: null stops it)")


@router.get("/v1/models", tags=["models"], responses=errors(503))
async def get_models(ingress: Any = Depends(serving_replica)) -> dict[str, Any]:
    """Every model the pipeline serves: versions, active, shadow, classes, frames/s, agreement,
    and its ``state`` (``serving``; ``starting`` or ``failed`` with a ``reason`` for a model asked
    for while running)."""
    from stream.readers.model_stats import models_overview

    overview = models_overview(
        ingress.client, ingress.keys, _repository(ingress), now_ms=time.time() * 1000.0
    )
    return {"models": await redis_call(overview)}


NO_RUNNER = (
    "no runner of this pipeline adds models while it runs (a KubeRay RayService serves the "
    "applications of its serveConfigV2): add an application for {name} to serveConfigV2 and "
    "re-apply it (docs/deploy.md#serving-one-more-model)"
)


@router.post("/v1/models/{name}", status_code=202, tags=["models"], responses=errors(404, 409, 503))
async def serve_model(name: str, ingress: Any = Depends(serving_replica)) -> dict[str, Any]:
    """Serve model `name` of the repository too, beside the running models and without stopping
    them: the runner starts its stages and it classifies the frames published from then on.
    ``GET /v1/models`` shows it ``starting``, then ``serving`` (or ``failed`` with the reason)."""
    from stream.adapters.redis.model_requests import STARTING, model_requests, request_model, watching_runner
    from stream.readers.model_stats import served_models

    names = await asyncio.to_thread(_repository(ingress).names)
    if name not in names:
        raise ApiError(404, f"unknown model {name!r}; known models: {', '.join(names)}")
    asked = (await redis_call(model_requests(ingress.client, ingress.keys))).get(name)
    if asked is not None and asked.state == STARTING:
        raise ApiError(409, f"{name} is starting already")
    if name in await redis_call(served_models(ingress.client, ingress.keys)):
        raise ApiError(409, f"{name} is served already")
    runner = await redis_call(watching_runner(ingress.client, ingress.keys))
    if runner is None:
        raise ApiError(409, NO_RUNNER.format(name=name))
    earlier = await redis_call(request_model(ingress.client, ingress.keys, name))
    if earlier is not None:
        raise ApiError(409, f"{name} is {earlier.state} already")
    return {
        "name": name,
        "state": STARTING,
        "runner": runner,
        "detail": f"the {runner} runner starts {name}'s stages beside the running models; it "
        "classifies the frames published from then on; GET /v1/models shows it serving once they run",
    }


@router.post("/v1/models/{name}/activate", tags=["models"], responses=errors(404, 409))
async def activate_model(
    name: str, choice: VersionChoice = Body(...), ingress: Any = Depends(serving_replica)
) -> dict[str, Any]:
    """Serve `version` of `name`: the Infer replicas load and warm it, then swap it in."""
    if choice.version is None:
        raise ApiError(400, 'give the version to activate: {"version": N}')
    return await _change(ingress, name, "activate", choice.version)


@router.post("/v1/models/{name}/rollback", tags=["models"], responses=errors(404, 409))
async def rollback_model(name: str, ingress: Any = Depends(serving_replica)) -> dict[str, Any]:
    """Serve again the version that served before the active one."""
    return await _change(ingress, name, "rollback")


@router.post("/v1/models/{name}/shadow", tags=["models"], responses=errors(404, 409))
async def shadow_model(
    name: str, choice: VersionChoice = Body(...), ingress: Any = Depends(serving_replica)
) -> dict[str, Any]:
    """Run `version` beside the active one on the same frames (its scores to the shadow stream
    only); ``{"version": null}`` stops the shadow."""
    return await _change(ingress, name, "set_shadow", choice.version)


@router.post("/v1/models/{name}/promote", tags=["models"], responses=errors(404, 409))
async def promote_model(name: str, ingress: Any = Depends(serving_replica)) -> dict[str, Any]:
    """Make the shadow the active version (already loaded: no gap in results)."""
    return await _change(ingress, name, "promote")


def _repository(ingress: Any) -> Any:
    from stream.zoo.repository import ModelRepository

    return ModelRepository(ingress.settings.models.repository)


def _apply(repository: Any, name: str, change: str, *args: Any) -> Any:
    """`repository.<change>(name, *args)`; ApiError 404 for an unknown name or version, 409 for
    a change the repository refuses."""
    from stream.errors import FramestreamError

    if name not in repository.names():
        raise ApiError(404, f"unknown model {name!r}; known models: {', '.join(repository.names())}")
    version = args[0] if args else None
    if version is not None and version not in repository.versions(name):
        have = ", ".join(map(str, repository.versions(name)))
        raise ApiError(404, f"{name} has no version {version}; it has {have}")
    try:
        return getattr(repository, change)(name, *args)
    except FramestreamError as e:
        raise ApiError(409, str(e)) from e


async def _change(ingress: Any, name: str, change: str, *args: Any) -> dict[str, Any]:
    serving = await asyncio.to_thread(_apply, _repository(ingress), name, change, *args)
    return {
        "name": name,
        "active": serving.active,
        "shadow": serving.shadow,
        "history": list(serving.history),
    }
