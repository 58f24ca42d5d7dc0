"""Routes of sinks (an ``APIRouter`` the ingress's app includes), admin tokens only:

- ``GET /v1/sinks``: every sink, those of the settings file and those added here, with its backlog;
- ``POST /v1/sinks``: add a sink (`stream.sinks.settings.SinkSettings`; 400 bad settings, an
  unknown kind or a missing secret variable, 403 a destination the address policy refuses, 409 a
  name in use); the sinks process starts delivering it within a second;
- ``DELETE /v1/sinks/{name}``: stop delivering a sink added here and forget its consumer groups
  (404 none, 409 a sink of the settings file).

A destination passes the same address policy as a source (`stream.core.sources.policy`): no cloud
metadata, link-local, loopback or unspecified address unless ``ingest.allowed_sources.networks``
allows it, every address its host resolves to checked when it is added. Secrets are never
returned.
"""

# No `from __future__ import annotations`: FastAPI resolves the route annotations at runtime.
from contextlib import suppress
from ipaddress import ip_address
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from deployments.api.http_errors import ApiError, redis_call
from deployments.api.openapi import errors
from deployments.api.replica import serving_replica
from stream.sinks.settings import SinkSettings

__all__ = ["router"]

router = APIRouter()


async def _with_backlog(ingress: Any, sink: SinkSettings, origin: str) -> dict[str, Any]:
    from stream.adapters.redis.sink_backlog import total_sink_backlog

    backlog = await total_sink_backlog(ingress.client, ingress.keys, sink)
    return {**sink.public(), "origin": origin, "backlog": backlog}


@router.get("/v1/sinks", tags=["sinks"], responses=errors(503))
async def get_sinks(ingress: Any = Depends(serving_replica)) -> dict[str, Any]:
    """Every sink: ``origin`` ``settings`` (the settings file) or ``api`` (added here), its
    settings without the secret, and its ``backlog`` (entries waiting for it in Redis)."""
    from stream.sinks.registered import registered_sinks

    items = [await redis_call(_with_backlog(ingress, s, "settings")) for s in ingress.settings.sinks]
    for sink in await redis_call(registered_sinks(ingress.client, ingress.keys)):
        items.append(await redis_call(_with_backlog(ingress, sink, "api")))
    return {"sinks": items}


@router.post("/v1/sinks", status_code=201, tags=["sinks"], responses=errors(403, 409, 503))
async def post_sink(sink: SinkSettings, ingress: Any = Depends(serving_replica)) -> dict[str, Any]:
    """Add a sink (the fields of a ``sinks:`` entry of the settings file, docs/sinks.md); the sinks
    process delivers it from the current end of the streams on."""
    from stream.errors import ConfigError
    from stream.sinks.registered import add_sink
    from stream.sinks.registry import build_destination

    if any(s.name == sink.name for s in ingress.settings.sinks):
        raise ApiError(409, f"sink {sink.name!r} is in the settings file; choose another name")
    try:
        build_destination(sink)  # an unknown kind, a secret variable not set here
    except ConfigError as e:
        raise ApiError(400, str(e)) from e
    await _allowed_destination(sink, ingress)
    if not await redis_call(add_sink(ingress.client, ingress.keys, sink)):
        raise ApiError(409, f"sink {sink.name!r} already exists; DELETE it first")
    return {**sink.public(), "origin": "api"}


async def _allowed_destination(sink: SinkSettings, ingress: Any) -> None:
    """ApiError(400/403) when the sink's destination may not be reached from here."""
    from stream.adapters.source_access import check_uri_async
    from stream.core.sources.policy import SourcePolicy

    address = sink.url if sink.url is not None else sink.dsn
    if address is None:
        return  # a plug-in kind without a network address: nothing to check here
    scheme = urlsplit(address).scheme
    destinations = _postgres_hosts(address) if scheme in _POSTGRES_SCHEMES else [address]
    if not scheme or not all(urlsplit(d).netloc for d in destinations):
        raise ApiError(400, f"sink {sink.name!r}: an API sink's address must be a URL (scheme://host...)")
    networks = ingress.settings.ingest.allowed_sources.networks
    for destination in destinations:
        verdict = await check_uri_async(destination, SourcePolicy.build([scheme], [], networks))
        if not verdict.allowed:
            reason = verdict.reason.replace("sources may not", "sinks may not")
            raise ApiError(400 if verdict.outcome == "malformed" else 403, f"sink refused: {reason}")


_POSTGRES_SCHEMES = ("postgresql", "postgres")


def _postgres_hosts(dsn: str) -> list[str]:
    """``scheme://host[:port]`` of every host a libpq connection URI may connect to: the hosts
    of its authority (libpq takes a comma-separated list) and of its ``host`` and ``hostaddr``
    parameters (which override them). ApiError(403) for what names no checkable host: a Unix
    socket (a parameter that is a path, or no host at all: libpq's default) or a ``service``
    (pg_service.conf, read where the sinks run)."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query, keep_blank_values=True)
    if "service" in query:
        raise ApiError(403, "sink refused: a DSN naming a service (pg_service.conf) hides its host")
    authority = parts.netloc.rpartition("@")[2]
    hosts = [h for h in authority.split(",") if h]
    for key in ("host", "hostaddr"):
        hosts += [_bracketed(h) for value in query.get(key, []) for h in value.split(",") if h]
    if not hosts or any(h.startswith(("/", "@")) for h in hosts):
        raise ApiError(403, "sink refused: a DSN without a host names a Unix socket, a local address")
    return [f"{parts.scheme}://{host}" for host in hosts]


def _bracketed(host: str) -> str:
    """An IPv6 address in brackets (a URL's authority needs them), anything else as it is."""
    with suppress(ValueError):
        if ip_address(host).version == 6:
            return f"[{host}]"
    return host


@router.delete("/v1/sinks/{name}", status_code=204, tags=["sinks"], responses=errors(404, 409, 503))
async def delete_sink(name: str, ingress: Any = Depends(serving_replica)) -> Response:
    """Stop delivering a sink added through the API and forget its consumer groups (what it had
    not delivered stays for the pipeline's other readers and is trimmed)."""
    from stream.sinks.registered import remove_sink

    if any(s.name == name for s in ingress.settings.sinks):
        raise ApiError(409, f"sink {name!r} is in the settings file; remove it there")
    if not await redis_call(remove_sink(ingress.client, ingress.keys, name)):
        raise ApiError(404, f"no sink {name!r} added through the API")
    return Response(status_code=204)
