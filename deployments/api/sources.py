"""Routes of sources and their results (an ``APIRouter`` the ingress's app includes):

- ``GET/POST /v1/sources``, ``DELETE /v1/sources/{id}``: the source registry in Redis;
  ``POST`` checks the URI against ``ingest.allowed_sources`` (`stream.core.sources.policy`:
  400 malformed, 403 not allowed);
- ``GET /v1/results/{source}?after_seq=N``: results of a source after a seq;
- ``GET /v1/sources/{id}/segments?after_seq=N``: a source's segments ("label L from seq a to b",
  `stream.core.segments`), the closed ones and the open one;
- ``GET /v1/events``: Server-Sent Events of results and label changes, from the one reader of the
  streams this replica shares among its feeds (`deployments.api.feeds`; ``Last-Event-ID`` resumes
  where a client left off).
"""

# No `from __future__ import annotations`: FastAPI resolves the route annotations at runtime.
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from deployments.api.http_errors import ApiError, redis_call
from deployments.api.openapi import errors
from deployments.api.replica import serving_replica
from stream.core.keys import PipelineKeys
from stream.core.sources.ids import ID_CHARS, ID_PATTERN
from stream.core.sources.ids import source_id as source_id_for

__all__ = ["SourceIn", "router", "source_items"]

router = APIRouter()


class SourceIn(BaseModel):
    """A source to add; `id` defaults to a name derived from the URI."""

    uri: str = Field(..., min_length=1, examples=["rtsp://camera.local/stream", "/data/clip.mp4", "webcam:0"])
    id: str | None = Field(None, pattern=ID_CHARS)
    target_fps: float | None = Field(None, gt=0)
    every_nth: int | None = Field(None, ge=1)
    loop: bool = False
    live: bool | None = None
    realtime: bool = False
    models: list[str] | None = Field(
        None,
        min_length=1,
        description="the models that classify this source (each one the pipeline serves); "
        "default: every model the pipeline serves",
    )

    @field_validator("id")
    @classmethod
    def _not_only_dots(cls, value: str | None) -> str | None:
        if value is not None and not ID_PATTERN.match(value):
            raise ValueError("an id of dots alone ('.', '..') is not allowed")
        return value


class _EventStream(StreamingResponse):
    media_type = "text/event-stream"


def _source_json(status: Any) -> dict[str, Any]:
    return {
        "id": status.source_id,
        **asdict(status.spec),
        "next_seq": status.next_seq,
        "done": status.done,
        "error": status.error,
        "owner": status.owner,
        "status": status.status,
        "reason": status.reason,
        "frames": status.frames,
        "dropped": status.dropped,
        "reconnects": status.reconnects,
        "last_frame_age_s": status.last_frame_age_s,
        "fps": status.fps,
    }


async def source_items(client: Any, keys: PipelineKeys) -> list[dict[str, Any]]:
    """The items of ``GET /v1/sources`` (the console's snapshot shows the same)."""
    from stream.adapters.redis.source_registry import list_sources

    return [_source_json(s) for s in await list_sources(client, keys)]


@router.get("/v1/sources", tags=["sources"], responses=errors(503))
async def get_sources(ingress: Any = Depends(serving_replica)) -> dict[str, Any]:
    """Every registered source with its progress, the ingest replica playing it, and its status:
    ``status`` (playing, reconnecting, stalled, finished, failed) with a ``reason``,
    ``frames`` published, ``dropped``, ``reconnects`` (attempts to reopen a live stream),
    ``last_frame_age_s`` and ``fps`` (recent frames/s while playing)."""
    return {"sources": await redis_call(source_items(ingress.client, ingress.keys))}


@router.post("/v1/sources", status_code=201, tags=["sources"], responses=errors(400, 403, 409, 413, 429, 503))
async def post_source(source: SourceIn, ingress: Any = Depends(serving_replica)) -> dict[str, Any]:
    """Add a source; an ingest replica starts playing it within a fraction of a second.

    The URI must pass ``ingest.allowed_sources`` (400 malformed, 403 not allowed, with the
    reason) and be at most ``api.max_uri_chars`` long (413); at most ``api.max_sources`` sources
    are registered at once (429). A file path is stored resolved through its symlinks. ``models``
    limits which of the pipeline's models classify the source (400 for a model it does not
    serve); without it, every model does."""
    from stream.adapters.redis.source_registry import SourceSpec, add_source

    limits = ingress.settings.api
    if len(source.uri) > limits.max_uri_chars:
        raise ApiError(413, f"uri of {len(source.uri)} characters, over the limit of {limits.max_uri_chars}")
    source_id = source.id or source_id_for(source.uri)
    count = await redis_call(ingress.client.hlen(ingress.keys.sources))
    if count >= limits.max_sources:
        raise ApiError(429, f"{count} sources registered, the most api.max_sources allows; DELETE one first")
    uri = await _allowed_uri(source.uri, ingress.source_policy)
    if source.models is not None:
        await _check_served(ingress, source.models)
    try:
        spec = SourceSpec(**{**source.model_dump(exclude={"id"}), "uri": uri})
    except ValueError as e:
        raise ApiError(400, str(e)) from e
    if await redis_call(ingress.client.hexists(ingress.keys.sources, source_id)):
        raise ApiError(409, f"source {source_id!r} already exists; DELETE it first")
    try:
        await redis_call(add_source(ingress.client, ingress.keys, source_id, spec))
    except ValueError as e:
        raise ApiError(409 if "exists" in str(e) else 400, str(e)) from e
    return {"id": source_id, **source.model_dump(exclude={"id"}), "uri": uri}


async def _check_served(ingress: Any, models: list[str]) -> None:
    """ApiError 400 unless every one of `models` serves (a model still starting does not yet)."""
    from stream.adapters.redis.model_requests import STARTING, model_requests
    from stream.readers.model_stats import served_models

    groups = await redis_call(served_models(ingress.client, ingress.keys))
    requests = await redis_call(model_requests(ingress.client, ingress.keys))
    starting = {name for name, asked in requests.items() if asked.state == STARTING}
    served = [m for m in groups if m not in starting]
    unknown = [m for m in models if m not in served]
    if unknown:
        waiting = [m for m in unknown if m in starting]
        raise ApiError(
            400,
            f"models {unknown} are not served by this pipeline; it serves {served or 'none yet'}"
            + (
                f" ({', '.join(waiting)} starting: try again once GET /v1/models says serving)"
                if waiting
                else ""
            ),
        )


async def _allowed_uri(uri: str, policy: Any) -> str:
    """The URI to register, or ApiError(400/403) saying why `uri` may not be played."""
    from stream.adapters.source_access import check_uri_async

    verdict = await check_uri_async(uri, policy)
    if not verdict.allowed:
        raise ApiError(400 if verdict.outcome == "malformed" else 403, f"source refused: {verdict.reason}")
    return verdict.uri


@router.delete("/v1/sources/{source_id}", status_code=204, tags=["sources"], responses=errors(403, 404, 503))
async def delete_source(source_id: str, ingress: Any = Depends(serving_replica)) -> Response:
    """Stop and unregister a source (its ingest replica publishes end-of-stream)."""
    from stream.adapters.redis.source_registry import remove_source

    if not await redis_call(remove_source(ingress.client, ingress.keys, source_id)):
        raise ApiError(404, f"no source {source_id!r}")
    return Response(status_code=204)


@router.get("/v1/results/{source_id}", tags=["results"], responses=errors(404, 503))
async def get_results(
    source_id: str,
    after_seq: int = Query(-1, ge=-1, description="only results with seq > after_seq"),
    limit: int = Query(100, ge=1),
    ingress: Any = Depends(serving_replica),
) -> dict[str, Any]:
    """Results of `source_id` with seq > `after_seq`, in seq order (at most `limit`)."""
    limit = min(limit, ingress.cfg.max_results)
    found, results = await redis_call(ingress.results.after(source_id, after_seq, limit))
    if not found and not await redis_call(ingress.client.hexists(ingress.keys.sources, source_id)):
        raise ApiError(404, f"no source {source_id!r} and no results for it")
    next_after = results[-1]["seq"] if results else after_seq
    return {"source": source_id, "results": results, "next_after_seq": next_after}


@router.get("/v1/sources/{source_id}/segments", tags=["results"], responses=errors(404, 503))
async def get_segments(
    source_id: str,
    model: str | None = Query(
        None, min_length=1, max_length=200, description="the model whose segments (default: the app's model)"
    ),
    after_seq: int = Query(-1, ge=-1, description="only segments whose first seq is > after_seq"),
    limit: int = Query(
        100, ge=1, description="most closed segments returned (capped at the ingress max_results, 1000)"
    ),
    ingress: Any = Depends(serving_replica),
) -> dict[str, Any]:
    """The source's segments: runs of frames with one smoothed label, ``label`` from ``first_seq``
    to ``last_seq`` (capture times ``start_ms`` .. ``end_ms``, ``frames``, mean ``score``).
    ``segments``: closed ones (``closed_by`` label_change or eos) whose first seq is > `after_seq`,
    oldest first, at most `limit`; ``open``: the segment still growing (None when the source has
    ended or not started, or on a page that does not reach the newest closed segment). Page on
    with ``after_seq=next_after_seq``. Segments are kept as long as the segments stream keeps them
    (``streams.max_len`` per partition)."""
    limit = min(limit, ingress.cfg.max_results)
    model = model or ingress.model
    found, closed, open_segment = await redis_call(
        ingress.results.segments(source_id, model, after_seq, limit)
    )
    if not found and not await redis_call(ingress.client.hexists(ingress.keys.sources, source_id)):
        raise ApiError(404, f"no source {source_id!r} and no segments for it")
    next_after = closed[-1]["first_seq"] if closed else after_seq
    return {"source": source_id, "model": model, "segments": closed, "open": open_segment,
            "next_after_seq": next_after}  # fmt: skip


@router.get("/v1/events", tags=["results"], response_class=_EventStream, responses=errors(429, 503))
async def events(
    request: Request,
    source: str | None = Query(None, description="only this source"),
    kinds: str = Query(
        "result,label_change,source_status",
        description="comma-separated: result, label_change, source_status, eos",
    ),
    ingress: Any = Depends(serving_replica),
) -> StreamingResponse:
    """Server-Sent Events: results, label changes and source status changes as they happen
    (``Last-Event-ID`` resumes). One reader per ingress replica feeds every client
    (`deployments.api.feeds`): a client that falls ``api.feed_queue`` events behind gets an
    ``error`` event and is dropped; at most ``api.max_feeds`` feeds (503) and
    ``api.max_feeds_per_client`` per token (429); a feed ends after ``api.feed_max_s``."""
    from deployments.api.feeds import feed_response

    wanted = {k.strip() for k in kinds.split(",") if k.strip()}
    await redis_call(ingress.client.ping())
    hub = ingress.feeds
    feed, text = await redis_call(
        hub.follow(
            ingress.client_key(request),
            request.headers.get("last-event-id"),
            source=source,
            kinds=wanted,
            disconnected=request.is_disconnected,
            max_s=ingress.settings.api.feed_max_s,
        )
    )
    return feed_response(hub, feed, text)
