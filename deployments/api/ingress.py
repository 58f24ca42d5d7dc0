"""The HTTP front of a framestream application (FastAPI through ``serve.ingress``), under ``/v1``.

The routes live in one module per concern, each an ``APIRouter`` included in `api` in this order
(which is also the order of ``/openapi.json``):

- ``/healthz`` (the process answers), ``/readyz`` (Redis and the model answer): here;
- sources, results and events (`deployments.api.sources`);
- ``POST /v1/classify`` (`deployments.api.classify`);
- ``GET /v1/stages``: replicas, rate, lag and dead letters per stage: here;
- the web console and thumbnails (`deployments.console.routes`);
- dead letters (`deployments.api.dead_letters`).

Their handlers reach this replica's `Ingress` (Redis client, keys, options) through
`deployments.api.replica.serving_replica`, as Serve's own class-based routes do.

Every request first meets `deployments.api.limits.RequestLimits` (header size, then on ``/v1``
admission, then the body's size and time, before any route reads it). Every ``/v1`` route,
including ones added later, also passes `deployments.api.guard.guard` (an app-wide dependency, which
admits a request the middleware did not): `Ingress.admit` applies the per-client rate limit (a
token bucket per ingress replica, 429), then the API tokens when ``api`` tokens are configured
(`deployments.api.auth`: 401 without a valid token, 403 for a read token on a route that changes
something).

Every error is JSON ``{"error": reason}`` with 400/401/403/404/408/409/413/415/429/431/503 (500 only for a
bug, without its traceback; `deployments.api.http_errors`); `deployments.api.openapi` lists each route's
codes in ``/openapi.json``.
"""

# No `from __future__ import annotations` here: Serve pickles the ingress class by value and
# FastAPI must resolve the route annotations (Request, ...) at runtime.
import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field
from ray import serve

from deployments.api import classify as classify_routes
from deployments.api import dead_letters as dead_letter_routes
from deployments.api import models as model_routes
from deployments.api import sinks as sink_routes
from deployments.api import sources as source_routes
from deployments.api.auth import Access, bearer_token, url_token_allowed
from deployments.api.feeds import FeedHub
from deployments.api.guard import guard
from deployments.api.http_errors import ApiError, install_error_handlers, redis_call
from deployments.api.limits import RequestLimits
from deployments.api.openapi import complete_openapi, errors
from deployments.api.ratelimit import RateLimiter, TrustedProxies, retry_after_s
from deployments.api.replica import serving_replica
from deployments.console import feed as console
from deployments.console import routes as console_routes
from deployments.serve.stage import open_redis, stage_settings
from deployments.serve.status import replica_states
from stream.readers.queries import ResultQueries

__all__ = ["ApiError", "Ingress", "IngressOptions", "api"]

log = logging.getLogger("framestream.ingress")


class IngressOptions(BaseModel):
    """The ingress's own knobs (``args.ingress`` in the Serve config)."""

    max_image_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    rate_per_s: float = Field(50.0, gt=0, description="requests per second per client, on average")
    burst: int = Field(100, ge=1)
    classify_timeout_s: float = Field(30.0, gt=0)
    max_results: int = Field(1000, ge=1, description="most results one GET returns")


api = FastAPI(
    title="framestream",
    version="1",
    description="Classify video frames at high throughput: sources, results, live events, push-classify. "
    "Routes under /v1 need a token when the deployment configures them (Authorization: Bearer; "
    "?token= only on the SSE feeds and thumbnails); GET routes accept read and admin tokens, the "
    "others admin tokens only.",
    dependencies=[Depends(guard)],
    # no 307 to the path with or without a trailing slash: Starlette builds that Location from
    # the request's Host header and keeps the query (a ?token=), so a forged Host got the token
    redirect_slashes=False,
)
api.add_middleware(RequestLimits)
api.openapi = complete_openapi(api)  # type: ignore[method-assign]
install_error_handlers(api)


def _peer(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _replica_states() -> dict[str, dict[str, int]]:
    """Replica counts by state per deployment of this application (from the Serve controller)."""
    return replica_states(serve.get_replica_context().app_name)


def _deployment(stage: str) -> str:
    """Deployment name of a stage (`deployments.serve.app.DEPLOYMENT_NAMES`: the stage, capitalized)."""
    return stage[:1].upper() + stage[1:]


# -- health and stages --------------------------------------------------------------------

_health = APIRouter()
_stages = APIRouter()


@_health.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """The ingress answers (liveness)."""
    return {"status": "ok"}


@_health.get("/readyz", tags=["health"], responses=errors(503))
async def readyz(ingress: Any = Depends(serving_replica)) -> dict[str, Any]:
    """Redis answers, the model is loaded and every stage has a running replica (readiness); 503
    with the reason otherwise."""
    await redis_call(ingress.client.ping())
    try:
        async with asyncio.timeout(5.0):
            info = await ingress.classifier.info.remote()
    except Exception as e:
        raise ApiError(503, f"model not ready: {type(e).__name__}: {e}") from e
    replicas = await ingress.stage_replicas()
    down = sorted(name for name, states in replicas.items() if not states.get("RUNNING"))
    if down:  # a stage whose loop keeps dying has its replicas restarting, none running
        raise ApiError(503, "no running replica of stage " + ", ".join(f"{n} ({replicas[n]})" for n in down))
    return {"status": "ready", **info}


@_stages.get("/v1/stages", tags=["health"])
async def get_stages(ingress: Any = Depends(serving_replica)) -> dict[str, Any]:
    """Per stage: replicas by state (from Serve), one replica's view of rate and backlog, and
    from Redis (every partition): entries handled, lag and dead letters."""
    replicas = await asyncio.to_thread(_replica_states)
    counts = await redis_call(
        console.read_stage_counts(ingress.client, ingress.keys, ingress.model, list(ingress.stages))
    )
    out: dict[str, Any] = {}
    for name, handle in ingress.stages.items():
        try:
            async with asyncio.timeout(5.0):
                status = await handle.status.remote()
        except Exception as e:
            status = {"error": f"{type(e).__name__}: {e}"}
        out[name] = {"replicas": replicas.get(_deployment(name), {}), **status, **counts[name]}
    return {"stages": out}


for _router in (
    _health,
    source_routes.router,
    classify_routes.router,
    _stages,
    console_routes.router,
    dead_letter_routes.router,
    sink_routes.router,
    model_routes.router,
):
    api.include_router(_router)


# The deployment class comes last: Serve pickles it by value when it is decorated, so only names
# that exist by then travel with it.
@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=256,
    graceful_shutdown_timeout_s=10.0,
)
@serve.ingress(api)
class Ingress:
    """The state the routes of `api` share in one replica: one Redis client, keys, options."""

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
        from stream.zoo.repository import load_spec

        self.settings = stage_settings(settings)
        self.cfg = IngressOptions(**(options or {}))
        self.model = model or self.settings.models.default
        self.spec = load_spec(self.model, self.settings.models.repository)
        self.keys = PipelineKeys(self.settings.streams.pipeline, self.settings.streams.partitions)
        self.client = await open_redis(self.settings)
        self.results = ResultQueries(self.client, self.keys)
        self.classifier = classifier
        self.stages = stages or {}
        self.limiter = RateLimiter(self.cfg.rate_per_s, self.cfg.burst)
        self.proxies = TrustedProxies(self.settings.api.trusted_proxies)
        api = self.settings.api
        self.feeds = FeedHub(
            self.results,
            max_feeds=api.max_feeds,
            max_feeds_per_client=api.max_feeds_per_client,
            queue_size=api.feed_queue,
        )
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
        wait_s = self.limiter.allow(self._address(request), time.monotonic())
        if wait_s > 0:
            raise ApiError(
                429,
                f"rate limit: {self.cfg.rate_per_s:g} requests/s per client",
                {"Retry-After": str(retry_after_s(wait_s))},
            )
        path = request.url.path
        refusal = self.access.check(request.method, path, self._token(request))
        if refusal is not None:
            raise ApiError(refusal.status, refusal.reason, refusal.headers)

    def _address(self, request: Request) -> str:
        """The client's address: the peer's, or X-Forwarded-For's from a trusted proxy."""
        return self.proxies.client(_peer(request), request.headers.get("x-forwarded-for"))

    def _token(self, request: Request) -> str | None:
        path = request.url.path
        url_token = request.query_params.get("token") if url_token_allowed(request.method, path) else None
        return bearer_token(request.headers.get("authorization"), url_token)

    def client_key(self, request: Request) -> str:
        """Who holds a live feed, for ``api.max_feeds_per_client``: its token (hashed: the key is
        logged), or its address where no token is configured."""
        import hashlib

        token = self._token(request) if self.access.enabled else None
        if token:
            return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
        return "address:" + self._address(request)

    async def stage_replicas(self) -> dict[str, dict[str, int]]:
        """Replica counts by state per stage for the console, from Serve at most every 2 s, shared
        by every open console: one page's feed cost 9.5% of a core reading them every tick, 4.6%
        so (docs/console.md)."""
        seen = getattr(self, "_replicas_seen", None)
        if seen is None or time.monotonic() - seen[0] > 2.0:
            seen = self._replicas_seen = (time.monotonic(), await asyncio.to_thread(_replica_states))
        return {name: seen[1].get(_deployment(name), {}) for name in self.stages}

    async def __del__(self) -> None:
        gauges = getattr(self, "_gauges", None)
        if gauges is not None:
            gauges.cancel()
        client = getattr(self, "client", None)
        if client is not None:
            await client.aclose()
