"""Limits a request meets before any route works on it: an ASGI middleware (`RequestLimits`) in
front of the ingress's FastAPI app.

From the request line and headers alone, in this order: their size (431 over
``api.max_header_bytes``), then on ``/v1`` the rate limit and the token (`Ingress.admit`: 429,
401, 403), then the body's declared size (413 over the route's limit). Only then is a body read,
within ``api.body_timeout_s`` (408) and never past the route's limit (413): ``ingress.max_image_bytes``
for ``POST /v1/classify``, ``api.max_body_bytes`` for every other route. An unauthenticated client
so never makes the ingress read, hold or wait for a body. The route gets the body from memory.
``HEAD`` is answered as the route's ``GET`` without the body (the routes declare GET only).

Serve's HTTP proxy (uvicorn) reads the headers before this runs and exposes no limit on their
size; a reverse proxy in front bounds what reaches it (docs/security.md).
"""

# No `from __future__ import annotations`: Serve pickles the ingress (and this class) by value.
import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from deployments.api.auth import Access
from deployments.api.http_errors import ApiError

__all__ = ["ADMITTED", "RequestLimits", "body_limit"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ADMITTED = "framestream.admitted"
"""Scope key set once `Ingress.admit` let the request through (`deployments.api.guard` then skips it)."""

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def body_limit(method: str, path: str, max_body_bytes: int, max_image_bytes: int) -> int:
    """The largest body `method path` accepts."""
    return max_image_bytes if (method, path) == ("POST", "/v1/classify") else max_body_bytes


def _header_bytes(scope: Scope) -> int:
    line = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    return line + sum(len(name) + len(value) + 4 for name, value in scope.get("headers") or ())


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


async def _read_body(receive: Receive, limit: int, timeout_s: float) -> bytes | None:
    """The whole body (None when the client went away); `_Refused` past `limit` or `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    body = bytearray()
    while True:
        left_s = deadline - loop.time()
        try:
            if left_s <= 0:
                raise TimeoutError
            async with asyncio.timeout(left_s):
                message = await receive()
        except TimeoutError:
            raise _Refused(408, f"the request body did not arrive within {timeout_s:g} s") from None
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            raise _Refused(413, f"request body over the limit of {limit} bytes for this route")
        if not message.get("more_body", False):
            return bytes(body)


class RequestLimits:
    """The middleware (see the module docstring). `replica()` is the ingress serving the request
    (its settings, limiter and tokens); None outside a Serve replica, where nothing is checked."""

    def __init__(self, app: Any, replica: Callable[[], Any] | None = None) -> None:
        self.app = app
        self.replica = replica or _serving_ingress

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ingress = self.replica() if scope["type"] == "http" else None
        if ingress is None:
            await self.app(scope, receive, send)
            return
        api = ingress.settings.api
        method, path = scope["method"], scope["path"]
        try:
            if _header_bytes(scope) > api.max_header_bytes:
                raise _Refused(
                    431, f"request line and headers over the limit of {api.max_header_bytes} bytes"
                )
            if Access.guarded(path):  # health, docs and the console's files are not rate-limited
                ingress.admit(Request(scope))
                scope[ADMITTED] = True
            limit = body_limit(method, path, api.max_body_bytes, ingress.cfg.max_image_bytes)
            declared = _declared_length(scope)
            if declared is not None and declared > limit:
                raise _Refused(
                    413, f"request body of {declared} bytes over the limit of {limit} for this route"
                )
            if method in _BODY_METHODS:
                body = await _read_body(receive, limit, api.body_timeout_s)
                if body is None:
                    return  # the client went away: nobody to answer
                receive = _replay(body, receive)
        except ApiError as e:
            await JSONResponse({"error": e.reason}, e.status, e.headers)(scope, receive, send)
            return
        except _Refused as e:
            await JSONResponse({"error": e.reason}, e.status, {"Connection": "close"})(scope, receive, send)
            return
        if method == "HEAD":
            await _as_get(self.app, scope, receive, send)
            return
        await self.app(scope, receive, send)


class _BodyUnwanted(OSError):
    """Raised by a HEAD response's send for the body it does not send."""


async def _as_get(app: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer HEAD as the route's GET would, without the body: the status and headers go out, the
    body does not, and a streaming response (a live feed) is told its client left once the
    headers are out, so it ends at once."""
    started = ended = False

    async def head_send(message: Message) -> None:
        nonlocal started, ended
        if message["type"] == "http.response.start":
            started = True
            await send(message)
        elif message["type"] == "http.response.body" and not ended:
            ended = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if message.get("more_body", False):
                raise _BodyUnwanted  # an OSError: how ASGI 2.4 tells a stream its client left
        elif ended:
            raise _BodyUnwanted

    async def head_receive() -> Message:
        if started:  # for servers before ASGI 2.4, whose streams listen for the disconnect
            return {"type": "http.disconnect"}
        return await receive()

    with contextlib.suppress(ClientDisconnect, _BodyUnwanted):  # a stream ended: its body was not wanted
        await app({**scope, "method": "GET"}, head_receive, head_send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives `body` first, then what the client sends (its disconnect)."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _serving_ingress() -> Any:
    from ray import serve

    try:
        return serve.get_replica_context().servable_object
    except Exception:  # not inside a Serve replica (the app imported by a test or a tool)
        return None
