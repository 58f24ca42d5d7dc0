"""How the ingress answers errors: `ApiError` (a status code and a reason), the exception handlers
that turn every error into JSON ``{"error": reason}``, and `redis_call` (Redis away -> 503).

400 replaces FastAPI's 422 for invalid requests; an unexpected exception is a 500 that names its
type and never shows its traceback (the ingress replica's log has it).
"""

# No `from __future__ import annotations`: FastAPI resolves these annotations at runtime.
import logging
from collections.abc import Awaitable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "install_error_handlers", "redis_call"]

log = logging.getLogger("framestream.ingress")


class ApiError(Exception):
    """An error with a status code and a reason the client gets as JSON."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


async def redis_call(coro: Awaitable[Any]) -> Any:
    """Await `coro` (a Redis call); ApiError(503) with the reason when Redis is unavailable."""
    from redis.exceptions import RedisError

    try:
        return await coro
    except (RedisError, OSError) as e:
        raise ApiError(503, f"redis unavailable: {e}") from e


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return _error(exc.status, exc.reason, exc.headers)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    reasons = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
    return _error(400, "; ".join(reasons) or "invalid request")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(500, f"internal error ({type(exc).__name__}); see the ingress replica's log")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of `app` as JSON ``{"error": reason}`` (see the module docstring)."""
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
