"""Routes of the web console (an ``APIRouter`` the ingress's app includes): the page
(``GET /``, ``GET /console/{name}``, from ``deployments/console/web``), its live feed
``GET /v1/console/events`` (`deployments.console.feed.ConsoleFeed` over a `deployments.api.feeds`
subscription, docs/console.md) and
``GET /v1/sources/{id}/thumbnail``, a recent frame of a source (JPEG) that ingest keeps."""

# No `from __future__ import annotations`: FastAPI resolves the route annotations at runtime.
import asyncio
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from deployments.api.http_errors import ApiError, redis_call
from deployments.api.openapi import errors
from deployments.api.replica import serving_replica
from deployments.api.sources import source_items
from deployments.console import feed as console

__all__ = ["router"]

router = APIRouter()


@router.get("/", include_in_schema=False)
async def console_page(request: Request) -> HTMLResponse:
    return HTMLResponse(console.index_html(request.scope.get("root_path", "")),
                        headers={"Cache-Control": "no-cache"})  # fmt: skip


@router.get("/console/{name}", include_in_schema=False)
async def console_file(name: str) -> Response:
    found = console.static_file(name)
    if found is None:
        raise ApiError(404, f"no console file {name!r}")
    return Response(found[0], media_type=found[1], headers={"Cache-Control": "no-cache"})


@router.get(
    "/v1/console/events",
    tags=["console"],
    response_class=StreamingResponse,
    responses={
        **errors(429, 503),
        200: {"content": {"text/event-stream": {}}, "description": "the feed (see docs/console.md)"},
    },
)
async def console_events(request: Request, ingress: Any = Depends(serving_replica)) -> StreamingResponse:
    """Server-Sent Events for the console: ``timeline`` (recent label/status changes), then
    ``label_change`` and ``source_status`` as they happen and a ``snapshot`` of every source
    and stage about once a second."""
    from deployments.api.feeds import feed_response

    await redis_call(ingress.client.ping())
    hub = ingress.feeds
    subscription = await redis_call(hub.subscribe(ingress.client_key(request), source=None, kinds=None))
    page = console.ConsoleFeed(
        ingress.results,
        ingress.model,
        list(ingress.stages),
        partial(source_items, ingress.client, ingress.keys),
        ingress.stage_replicas,
        sinks=partial(_sinks, ingress),
    )
    until_s = asyncio.get_running_loop().time() + ingress.settings.api.feed_max_s
    entries = subscription.entries(request.is_disconnected, page.interval_s / 4, until_s)
    return feed_response(hub, subscription, page.stream(entries, subscription))


@router.get(
    "/v1/sources/{source_id}/thumbnail",
    tags=["sources"],
    response_class=Response,
    responses={
        **errors(404, 503),
        200: {"content": {"image/jpeg": {}}, "description": "a recent frame of the source (JPEG)"},
    },
)
async def get_thumbnail(source_id: str, ingress: Any = Depends(serving_replica)) -> Response:
    """A recent frame of the source as JPEG (ingest keeps one per source about once a second)."""
    key = ingress.keys.for_source(source_id).thumbnail(source_id)
    data = await redis_call(ingress.client.get(key))
    if data is None:
        raise ApiError(404, f"no thumbnail of source {source_id!r} (unknown, not playing, or expired)")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def _sinks(ingress: Any) -> list[Any]:
    """The settings file's sinks, then those added through the API."""
    from stream.sinks.registered import registered_sinks

    return [*ingress.settings.sinks, *await registered_sinks(ingress.client, ingress.keys)]
