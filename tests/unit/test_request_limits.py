"""Limits before work (`deployments.api.limits`, `deployments.api.ratelimit.TrustedProxies`,
`deployments.api.auth.url_token_allowed`, `stream.core.image_header`): the logic, with a stand-in for
the ingress replica; tests/e2e/test_hostile_clients.py runs the same against a live ingress."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deployments.api.auth import url_token_allowed
from deployments.api.http_errors import ApiError
from deployments.api.limits import RequestLimits
from deployments.api.ratelimit import TrustedProxies
from stream.core.image_header import image_size
from stream.settings import Settings


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "client"),
    [
        ([], "203.0.113.9", "1.2.3.4", "203.0.113.9"),  # nobody trusted: the header is ignored
        (["127.0.0.1"], "203.0.113.9", "1.2.3.4", "203.0.113.9"),  # not from the proxy: ignored
        (["127.0.0.1"], "127.0.0.1", "1.2.3.4", "1.2.3.4"),
        (["127.0.0.1"], "127.0.0.1", "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # the left part is the client's say
        (["127.0.0.0/8", "10.0.0.0/8"], "127.0.0.1", "6.6.6.6, 1.2.3.4, 10.1.1.1", "1.2.3.4"),
        (["127.0.0.1"], "127.0.0.1", "not-an-ip", "127.0.0.1"),
        (["127.0.0.1"], "127.0.0.1", None, "127.0.0.1"),
    ],
)
def test_forwarded_for_counts_only_from_a_trusted_proxy(
    trusted: list[str], peer: str, forwarded: str | None, client: str
) -> None:
    assert TrustedProxies(trusted).client(peer, forwarded) == client


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/events", True),
        ("GET", "/v1/console/events", True),
        ("GET", "/v1/sources/cam-1/thumbnail", True),
        ("GET", "/v1/sources", False),
        ("GET", "/v1/stages", False),
        ("POST", "/v1/sources", False),
        ("DELETE", "/v1/sources/cam-1", False),
        ("POST", "/v1/events", False),
    ],
)
def test_a_url_token_counts_only_where_a_browser_cannot_send_a_header(
    method: str, path: str, allowed: bool
) -> None:
    assert url_token_allowed(method, path) is allowed


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp"])
def test_image_size_reads_the_header(ext: str) -> None:
    ok, data = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
    assert ok and image_size(data.tobytes()) == (37, 53)
    assert image_size(data.tobytes()[:10]) is None  # cut short before the size


def test_image_size_of_a_png_bomb_comes_from_its_first_bytes() -> None:
    ok, data = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))
    header = bytearray(data.tobytes()[:33])
    header[16:24] = (20000).to_bytes(4, "big") * 2  # IHDR saying 20000 x 20000
    assert image_size(bytes(header)) == (20000, 20000)
    assert image_size(b"GIF89a" + bytes(20)) is None


TOKEN = "t" * 32


class _Ingress:
    """What `RequestLimits` uses of the ingress: settings, options and `admit`."""

    def __init__(self, **api: Any) -> None:
        self.settings = Settings(api=api)
        self.cfg = SimpleNamespace(max_image_bytes=4096)
        self.admitted = 0

    def admit(self, request: Request) -> None:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            raise ApiError(401, "this API needs a token")
        self.admitted += 1


def _app(ingress: _Ingress) -> Any:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"bytes": len(await request.body())})

    app = Starlette(routes=[Route("/v1/sources", echo, methods=["GET", "POST"])])
    return RequestLimits(app, replica=lambda: ingress)


async def _post(ingress: _Ingress, body: Any, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(ingress))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.post("/v1/sources", content=body, headers=headers)


async def test_a_request_without_a_token_is_refused_before_its_body_is_read() -> None:
    read = 0

    async def endless() -> Any:
        nonlocal read
        while True:  # a body that never ends: only refusing before reading it answers at all
            read += 1
            yield b"x" * 1024
            await asyncio.sleep(0)
            if read > 10_000:
                raise AssertionError("the body was read")

    ingress = _Ingress()
    response = await asyncio.wait_for(_post(ingress, endless(), {}), 10)
    assert response.status_code == 401 and read <= 1


async def test_body_limits_and_the_time_a_body_may_take() -> None:
    ingress = _Ingress(max_body_bytes=2048, body_timeout_s=0.5)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await _post(ingress, b"x" * 100, auth)).json() == {"bytes": 100}
    declared = await _post(ingress, b"x" * 3000, auth)  # refused on Content-Length alone
    assert declared.status_code == 413 and "limit of 2048" in declared.json()["error"]

    async def chunks(n: int, pause_s: float) -> Any:
        for _ in range(n):
            yield b"x" * 512
            await asyncio.sleep(pause_s)

    streamed = await _post(ingress, chunks(8, 0), auth)  # no Content-Length: counted as it comes
    assert streamed.status_code == 413
    slow = await asyncio.wait_for(_post(ingress, chunks(3, 0.4), auth), 10)
    assert slow.status_code == 408 and "0.5 s" in slow.json()["error"]
    huge_headers = await _post(ingress, b"{}", {**auth, "X-Pad": "p" * 40_000})
    assert huge_headers.status_code == 431


async def test_head_answers_as_get_without_the_body_and_ends_a_stream() -> None:
    from starlette.responses import StreamingResponse

    async def forever() -> Any:
        while True:
            yield b"data: x\n\n"
            await asyncio.sleep(0.01)

    async def feed(request: Request) -> StreamingResponse:
        return StreamingResponse(forever(), media_type="text/event-stream")

    async def page(request: Request) -> JSONResponse:
        return JSONResponse({"sources": []})

    ingress = _Ingress()
    app = Starlette(routes=[Route("/v1/sources", page), Route("/v1/events", feed)])
    transport = httpx.ASGITransport(app=RequestLimits(app, replica=lambda: ingress))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        got = await http.get("/v1/sources", headers=auth)
        head = await http.head("/v1/sources", headers=auth)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == got.headers["content-length"]
        streamed = await asyncio.wait_for(http.head("/v1/events", headers=auth), 10)
        assert streamed.status_code == 200 and streamed.content == b""
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert (await http.head("/v1/sources")).status_code == 401


async def test_health_is_neither_rate_limited_nor_guarded_but_its_headers_are_bounded() -> None:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    ingress = _Ingress()
    app = Starlette(routes=[Route("/healthz", healthz)])
    transport = httpx.ASGITransport(app=RequestLimits(app, replica=lambda: ingress))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/healthz")).status_code == 200  # no token
        assert ingress.admitted == 0
        assert (await http.get("/healthz", headers={"X-Pad": "p" * 40_000})).status_code == 431
