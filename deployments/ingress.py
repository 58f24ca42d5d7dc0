"""The HTTP front of a framestream application (FastAPI through ``serve.ingress``), under ``/v1``.

- ``GET/POST /v1/sources``, ``DELETE /v1/sources/{id}``: the source registry in Redis;
- ``POST /v1/classify``: one JPEG/PNG image in the body, its classification back (batched with
  other pushed images by `deployments.classifier.Classifier`);
- ``GET /v1/results/{source}?after_seq=N``: results of a source after a seq;
- ``GET /v1/events``: Server-Sent Events of results and label changes, read from the streams
  (``Last-Event-ID`` resumes where a client left off);
- ``GET /v1/stages``: replicas, rate, lag and dead letters per stage;
- ``GET /`` and ``/console/*``: the web console (`deployments.console`), live through
  ``GET /v1/console/events``; ``GET /v1/sources/{id}/thumbnail``: a recent frame (JPEG);
- ``GET /v1/dead-letters``, ``GET /v1/dead-letters/{id}``, ``POST /v1/dead-letters/{id}/retry``:
  dead letters of every partition (`stream.adapters.dead_letters`, as ``framestream dead``);
- ``/healthz`` (the process answers), ``/readyz`` (Redis and the model answer), ``/docs``.

Every ``/v1`` route, including ones added later, passes `deployments.guard.guard` first (an
app-wide dependency): `Ingress.admit` applies the per-client rate limit (a token bucket per
ingress replica, 429), then the API tokens when ``api`` tokens are configured (`deployments.auth`:
401 without a valid token, 403 for a read token on a route that changes something).
``POST /v1/sources`` checks the URI against ``ingest.allowed_sources``
(`stream.core.source_policy`: 400 malformed, 403 not allowed).

Every error is JSON ``{"error": reason}`` with 400/401/403/404/409/413/415/429/503 (500 only for a
bug, without its traceback); `deployments.openapi` lists each route's codes in ``/openapi.json``.
"""

# No `from __future__ import annotations` here: Serve pickles the ingress class by value and
# FastAPI must resolve the route annotations (Request, ...) at runtime.
import asyncio
import logging
import time
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments import console
from deployments.auth import Access, bearer_token
from deployments.guard import guard
from deployments.openapi import complete_openapi, errors
from deployments.ratelimit import RateLimiter, retry_after_s
from deployments.results import ResultQueries
from deployments.stage import open_redis, stage_settings
from stream.core.source_ids import source_id as source_id_for

__all__ = ["ApiError", "Ingress", "IngressOptions", "api"]

log = logging.getLogger("framestream.ingress")

IMAGE_TYPES = {"image/jpeg", "image/jpg", "image/png"}
_BODY_TYPES = ("image/jpeg", "image/png")


class ApiError(Exception):
    """An error with a status code and a reason the client gets as JSON."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


class IngressOptions(BaseModel):
    """The ingress's own knobs (``args.ingress`` in the Serve config)."""

    max_image_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    rate_per_s: float = Field(50.0, gt=0, description="requests per second per client, on average")
    burst: int = Field(100, ge=1)
    classify_timeout_s: float = Field(30.0, gt=0)
    max_results: int = Field(1000, ge=1, description="most results one GET returns")


class SourceIn(BaseModel):
    """A source to add; `id` defaults to a name derived from the URI."""

    uri: str = Field(..., min_length=1, examples=["rtsp://camera.local/stream", "/data/clip.mp4", "webcam:0"])
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]{1,128}$")
    target_fps: float | None = Field(None, gt=0)
    every_nth: int | None = Field(None, ge=1)
    loop: bool = False
    live: bool | None = None
    realtime: bool = False


class _EventStream(StreamingResponse):
    media_type = "text/event-stream"


api = FastAPI(
    title="framestream",
    version="1",
    description="Classify video frames at high throughput: sources, results, live events, push-classify. "
    "Routes under /v1 need a token when the deployment configures them (Authorization: Bearer, or "
    "?token=); GET routes accept read and admin tokens, the others admin tokens only.",
    dependencies=[Depends(guard)],
)
api.openapi = complete_openapi(api)  # type: ignore[method-assign]


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


@api.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return _error(exc.status, exc.reason, exc.headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    reasons = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
    return _error(400, "; ".join(reasons) or "invalid request")


@api.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(500, f"internal error ({type(exc).__name__}); see the ingress replica's log")


# Helpers live above the deployment class: Serve pickles the class by value when it is decorated,
# so only names that exist by then travel with it.
def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _replica_states() -> dict[str, dict[str, int]]:
    """Replica counts by state per deployment of this application (Serve's own status)."""
    context = serve.get_replica_context()
    app = serve.status().applications.get(context.app_name)
    if app is None:
        return {}
    return {
        name: {str(getattr(state, "value", state)): n for state, n in d.replica_states.items()}
        for name, d in app.deployments.items()
    }


def _deployment(stage: str) -> str:
    """Deployment name of a stage (`deployments.app.DEPLOYMENT_NAMES`: the stage, capitalized)."""
    return stage[:1].upper() + stage[1:]


def _source_json(status: Any) -> dict[str, Any]:
    from dataclasses import asdict

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


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=256,
    graceful_shutdown_timeout_s=10.0,
)
@serve.ingress(api)
class Ingress:
    """Routes of the FastAPI app `api`; one Redis client per replica."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        classifier: Any,
        stages: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        model: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        from stream.adapters.source_access import policy_from
        from stream.core.keys import PipelineKeys
        from stream.zoo.descriptors import load_spec

        self.settings = stage_settings(settings)
        self.cfg = IngressOptions(**(options or {}))
        self.model = model or self.settings.models.default
        self.spec = load_spec(self.model)
        self.keys = PipelineKeys(self.settings.streams.pipeline, self.settings.streams.partitions)
        self.client = await open_redis(self.settings)
        self.results = ResultQueries(self.client, self.keys)
        self.classifier = classifier
        self.stages = stages or {}
        self.limiter = RateLimiter(self.cfg.rate_per_s, self.cfg.burst)
        self.access = Access(
            [t.get_secret_value() for t in self.settings.api.read_tokens],
            [t.get_secret_value() for t in self.settings.api.admin_tokens],
        )
        self.source_policy = policy_from(self.settings.ingest.allowed_sources)
        self._gauges = asyncio.get_running_loop().create_task(self._publish_replicas())

    async def _publish_replicas(self) -> None:
        """framestream_replicas{stage}: running replicas per stage, from Serve's status, every 5 s."""
        from stream.adapters import metrics as metrics_module  # the module: this class is pickled

        names = {_deployment(name): name for name in self.stages}
        while True:
            try:
                states = await asyncio.to_thread(_replica_states)
                for deployment, stage in names.items():
                    running = states.get(deployment, {})
                    metrics_module.metrics.replicas(stage, running.get("RUNNING", 0))
            except Exception as e:  # a status call can fail while Serve restarts: try again later
                log.info("replica gauge: %r", e)
            await asyncio.sleep(5.0)

    def admit(self, request: Request) -> None:
        """Rate limit first (so guessing tokens costs requests), then the token; ApiError if not."""
        wait_s = self.limiter.allow(_client(request), time.monotonic())
        if wait_s > 0:
            raise ApiError(
                429,
                f"rate limit: {self.cfg.rate_per_s:g} requests/s per client",
                {"Retry-After": str(retry_after_s(wait_s))},
            )
        token = bearer_token(request.headers.get("authorization"), request.query_params.get("token"))
        refusal = self.access.check(request.method, request.url.path, token)
        if refusal is not None:
            raise ApiError(refusal.status, refusal.reason, refusal.headers)

    async def _redis(self, coro: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await coro
        except (RedisError, OSError) as e:
            raise ApiError(503, f"redis unavailable: {e}") from e

    # -- health ---------------------------------------------------------------------------

    @api.get("/healthz", tags=["health"])
    async def healthz(self) -> dict[str, str]:
        """The ingress answers (liveness)."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["health"], responses=errors(503))
    async def readyz(self) -> dict[str, Any]:
        """Redis answers and the model is loaded (readiness); 503 with the reason otherwise."""
        await self._redis(self.client.ping())
        try:
            info = await asyncio.wait_for(self.classifier.info.remote(), 5.0)
        except Exception as e:
            raise ApiError(503, f"model not ready: {type(e).__name__}: {e}") from e
        return {"status": "ready", **info}

    # -- sources --------------------------------------------------------------------------

    @api.get("/v1/sources", tags=["sources"], responses=errors(503))
    async def get_sources(self) -> dict[str, Any]:
        """Every registered source with its progress, the ingest replica playing it, and its status:
        ``status`` (playing, reconnecting, stalled, finished, failed) with a ``reason``,
        ``frames`` published, ``dropped``, ``reconnects`` (attempts to reopen a live stream),
        ``last_frame_age_s`` and ``fps`` (recent frames/s while playing)."""
        return {"sources": await self._redis(self._source_items())}

    async def _source_items(self) -> list[dict[str, Any]]:
        """The items of ``GET /v1/sources`` (the console's snapshot shows the same)."""
        from stream.adapters.source_registry import list_sources

        return [_source_json(s) for s in await list_sources(self.client, self.keys)]

    @api.post("/v1/sources", status_code=201, tags=["sources"], responses=errors(403, 409, 503))
    async def post_source(self, source: SourceIn) -> dict[str, Any]:
        """Add a source; an ingest replica starts playing it within a fraction of a second.

        The URI must pass ``ingest.allowed_sources`` (400 malformed, 403 not allowed, with the
        reason); a file path is stored resolved through its symlinks."""
        from stream.adapters.source_registry import SourceSpec, add_source

        source_id = source.id or source_id_for(source.uri)
        uri = await self._allowed_uri(source.uri)
        try:
            spec = SourceSpec(**{**source.model_dump(exclude={"id"}), "uri": uri})
        except ValueError as e:
            raise ApiError(400, str(e)) from e
        if await self._redis(self.client.hexists(self.keys.sources, source_id)):
            raise ApiError(409, f"source {source_id!r} already exists; DELETE it first")
        try:
            await self._redis(add_source(self.client, self.keys, source_id, spec))
        except ValueError as e:
            raise ApiError(409 if "exists" in str(e) else 400, str(e)) from e
        return {"id": source_id, **source.model_dump(exclude={"id"}), "uri": uri}

    async def _allowed_uri(self, uri: str) -> str:
        """The URI to register, or ApiError(400/403) saying why `uri` may not be played."""
        from stream.adapters.source_access import check_uri_async

        verdict = await check_uri_async(uri, self.source_policy)
        if not verdict.allowed:
            raise ApiError(
                400 if verdict.outcome == "malformed" else 403, f"source refused: {verdict.reason}"
            )
        return verdict.uri

    @api.delete("/v1/sources/{source_id}", status_code=204, tags=["sources"], responses=errors(403, 404, 503))
    async def delete_source(self, source_id: str) -> Response:
        """Stop and unregister a source (its ingest replica publishes end-of-stream)."""
        from stream.adapters.source_registry import remove_source

        if not await self._redis(remove_source(self.client, self.keys, source_id)):
            raise ApiError(404, f"no source {source_id!r}")
        return Response(status_code=204)

    # -- results --------------------------------------------------------------------------

    @api.get("/v1/results/{source_id}", tags=["results"], responses=errors(404, 503))
    async def get_results(
        self,
        source_id: str,
        after_seq: int = Query(-1, ge=-1, description="only results with seq > after_seq"),
        limit: int = Query(100, ge=1),
    ) -> dict[str, Any]:
        """Results of `source_id` with seq > `after_seq`, in seq order (at most `limit`)."""
        limit = min(limit, self.cfg.max_results)
        found, results = await self._redis(self.results.after(source_id, after_seq, limit))
        if not found and not await self._redis(self.client.hexists(self.keys.sources, source_id)):
            raise ApiError(404, f"no source {source_id!r} and no results for it")
        next_after = results[-1]["seq"] if results else after_seq
        return {"source": source_id, "results": results, "next_after_seq": next_after}

    @api.get("/v1/events", tags=["results"], response_class=_EventStream, responses=errors(503))
    async def events(
        self,
        request: Request,
        source: str | None = Query(None, description="only this source"),
        kinds: str = Query(
            "result,label_change,source_status",
            description="comma-separated: result, label_change, source_status, eos",
        ),
    ) -> StreamingResponse:
        """Server-Sent Events: results, label changes and source status changes as they happen
        (``Last-Event-ID`` resumes)."""
        wanted = {k.strip() for k in kinds.split(",") if k.strip()}
        last_id = request.headers.get("last-event-id")
        await self._redis(self.client.ping())
        stream = self.results.follow(
            last_id, source=source, kinds=wanted, disconnected=request.is_disconnected
        )
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- push classify --------------------------------------------------------------------

    @api.post(
        "/v1/classify",
        tags=["classify"],
        responses=errors(403, 413, 415, 503),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    t: {"schema": {"type": "string", "format": "binary"}} for t in ("image/jpeg", "image/png")
                },
            }
        },
    )
    async def classify(self, request: Request) -> dict[str, Any]:
        """Classify one JPEG or PNG image sent as the request body; batched with concurrent pushes."""
        started = time.monotonic()
        body = await self._read_image_body(request)
        tensor = await asyncio.to_thread(self._prepare, body)
        try:
            result = await asyncio.wait_for(
                self.classifier.classify.remote(tensor), self.cfg.classify_timeout_s
            )
        except TimeoutError as e:
            raise ApiError(503, f"classifier did not answer within {self.cfg.classify_timeout_s:g} s") from e
        except Exception as e:
            from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

            if isinstance(e, BackPressureError | DeploymentUnavailableError):
                raise ApiError(503, f"classifier busy or unavailable: {type(e).__name__}") from e
            raise
        return {**result, "latency_ms": round((time.monotonic() - started) * 1000.0, 3)}

    async def _read_image_body(self, request: Request) -> bytes:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in IMAGE_TYPES:
            raise ApiError(415, f"content-type must be image/jpeg or image/png, got {ctype or 'none'!r}")
        limit = self.cfg.max_image_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"image is {declared} bytes, over the limit of {limit}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"image is over the limit of {limit} bytes")
        if not body:
            raise ApiError(400, "empty body: send the image bytes")
        return bytes(body)

    def _prepare(self, body: bytes) -> Any:
        from stream.adapters.image import decode_image, fit_to_model
        from stream.errors import CodecError

        try:
            return fit_to_model(decode_image(body), self.spec)
        except CodecError as e:
            raise ApiError(400, f"not a decodable JPEG/PNG image: {e}") from e

    # -- stages ---------------------------------------------------------------------------

    @api.get("/v1/stages", tags=["health"])
    async def get_stages(self) -> dict[str, Any]:
        """Per stage: replicas by state (from Serve), one replica's view of rate and backlog, and
        from Redis (every partition): entries handled, lag and dead letters."""
        replicas = await asyncio.to_thread(_replica_states)
        counts = await self._redis(
            console.read_stage_counts(self.client, self.keys, self.model, list(self.stages))
        )
        out: dict[str, Any] = {}
        for name, handle in self.stages.items():
            try:
                status = await asyncio.wait_for(handle.status.remote(), 5.0)
            except Exception as e:
                status = {"error": f"{type(e).__name__}: {e}"}
            out[name] = {"replicas": replicas.get(_deployment(name), {}), **status, **counts[name]}
        return {"stages": out}

    async def _stage_replicas(self) -> dict[str, dict[str, int]]:
        """Replica counts by state per stage for the console, from Serve at most every 2 s, shared
        by every open console: one page's feed cost 9.5% of a core reading them every tick, 4.6%
        so (docs/console.md)."""
        seen = getattr(self, "_replicas_seen", None)
        if seen is None or time.monotonic() - seen[0] > 2.0:
            seen = self._replicas_seen = (time.monotonic(), await asyncio.to_thread(_replica_states))
        return {name: seen[1].get(_deployment(name), {}) for name in self.stages}

    # -- console --------------------------------------------------------------------------

    @api.get("/", include_in_schema=False)
    async def console_page(self, request: Request) -> HTMLResponse:
        return HTMLResponse(console.index_html(request.scope.get("root_path", "")),
                            headers={"Cache-Control": "no-cache"})  # fmt: skip

    @api.get("/console/{name}", include_in_schema=False)
    async def console_file(self, name: str) -> Response:
        found = console.static_file(name)
        if found is None:
            raise ApiError(404, f"no console file {name!r}")
        return Response(found[0], media_type=found[1], headers={"Cache-Control": "no-cache"})

    @api.get(
        "/v1/console/events",
        tags=["console"],
        response_class=StreamingResponse,
        responses={
            **errors(503),
            200: {"content": {"text/event-stream": {}}, "description": "the feed (see docs/console.md)"},
        },
    )
    async def console_events(self, request: Request) -> StreamingResponse:
        """Server-Sent Events for the console: ``timeline`` (recent label/status changes), then
        ``label_change`` and ``source_status`` as they happen and a ``snapshot`` of every source
        and stage about once a second."""
        await self._redis(self.client.ping())
        feed = console.ConsoleFeed(
            self.results, self.model, list(self.stages), self._source_items, self._stage_replicas
        )
        return StreamingResponse(
            feed.stream(request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @api.get(
        "/v1/sources/{source_id}/thumbnail",
        tags=["sources"],
        response_class=Response,
        responses={
            **errors(404, 503),
            200: {"content": {"image/jpeg": {}}, "description": "a recent frame of the source (JPEG)"},
        },
    )
    async def get_thumbnail(self, source_id: str) -> Response:
        """A recent frame of the source as JPEG (ingest keeps one per source about once a second)."""
        data = await self._redis(self.client.get(self.keys.for_source(source_id).thumbnail(source_id)))
        if data is None:
            raise ApiError(404, f"no thumbnail of source {source_id!r} (unknown, not playing, or expired)")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    # -- dead letters ---------------------------------------------------------------------

    @api.get("/v1/dead-letters", tags=["dead letters"], responses=errors(503))
    async def get_dead_letters(
        self,
        stage: str | None = Query(None, description="only dead letters of this stage"),
        limit: int = Query(100, ge=1, le=1000, description="the newest N"),
    ) -> dict[str, Any]:
        """The newest dead letters of every partition, oldest first, and how many are kept (200;
        503 when Redis is unavailable)."""
        from stream.adapters.dead_letters import DeadLetters

        dead = DeadLetters(self.client, self.keys)
        records = await self._redis(dead.newest(limit=limit, stage=stage))
        total = await self._redis(dead.count())
        now_ms = time.time() * 1000.0
        return {"total": total, "dead_letters": [r.summary(now_ms) for r in records]}

    @api.get("/v1/dead-letters/{dead_id}", tags=["dead letters"], responses=errors(404, 503))
    async def get_dead_letter(self, dead_id: str) -> dict[str, Any]:
        """One dead letter in full: 200; 400 for a malformed id, 404 when there is none."""
        record = await self._dead_letter_call(lambda dead: dead.get(dead_id))
        return dict(record.detail(time.time() * 1000.0))

    @api.post("/v1/dead-letters/{dead_id}/retry", tags=["dead letters"], responses=errors(404, 409, 503))
    async def retry_dead_letter(self, dead_id: str) -> dict[str, Any]:
        """Put a dead letter back on the stream it came from, then delete it (one transaction).

        200 with the new entry's stream and id; 400 for a malformed id; 404 when there is no such
        dead letter (already retried, trimmed); 409 when it cannot be retried (no payload kept);
        503 when Redis is unavailable. One still bad is dead-lettered again with its reason.
        """
        outcome = await self._dead_letter_call(lambda dead: dead.retry(dead_id))
        return {"id": outcome.ref, "stream": outcome.stream, "new_id": outcome.new_id}

    async def _dead_letter_call(self, call: Any) -> Any:
        from stream.adapters.dead_letters import DeadLetters
        from stream.errors import DeadLetterError, UnknownDeadLetter

        try:
            return await self._redis(call(DeadLetters(self.client, self.keys)))
        except ValueError as e:
            raise ApiError(400, str(e)) from e
        except UnknownDeadLetter as e:
            raise ApiError(404, str(e)) from e
        except DeadLetterError as e:
            raise ApiError(409, str(e)) from e

    async def __del__(self) -> None:
        gauges = getattr(self, "_gauges", None)
        if gauges is not None:
            gauges.cancel()
        client = getattr(self, "client", None)
        if client is not None:
            await client.aclose()
