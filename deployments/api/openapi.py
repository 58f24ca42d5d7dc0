"""The ingress's OpenAPI document lists every status code each route can answer, with its schema.

Routes name their own codes with ``responses=errors(404, 503, ...)``; `complete_openapi` adds the
ones that follow from the app's rules to every operation, so a route added later is documented too:

- 400 for any operation with parameters or a body (validation errors come back as 400, not
  FastAPI's 422, which is removed);
- on ``/v1`` (`deployments.api.auth`): 401 (no or unknown token), 403 on methods other than GET/HEAD
  (a read token), 429 (rate limit, with ``Retry-After``), and the token security schemes;
- outside ``/v1`` (health, docs, the console): no security;
- everywhere (`deployments.api.limits`): 431 (headers over their limit) and 413 (a body over the
  route's limit); 408 on methods that carry a body (it did not arrive in time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from deployments.api.auth import READ_METHODS, Access

__all__ = ["ErrorBody", "complete_openapi", "errors"]

_REASONS = {
    400: "malformed request (bad parameter, body or source URI)",
    401: "no token, or a token that is not valid here",
    403: "not allowed: a read token on a route that changes something, or a source outside the policy",
    404: "no such resource",
    408: "the request body did not arrive within api.body_timeout_s",
    409: "it exists already",
    413: "over a size limit: the body, a source uri, or an image's pixels",
    415: "unsupported content type",
    429: "rate limit exceeded (retry after Retry-After seconds), or a cap on sources or feeds reached",
    431: "request line and headers over api.max_header_bytes",
    503: "a dependency (Redis, the model) is unavailable; retry later",
}
_SCHEMA_REF = "#/components/schemas/ErrorBody"


class ErrorBody(BaseModel):
    """Every error the API answers: one reason a person can act on."""

    error: str = Field(..., description="what was wrong and what to do")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer these error codes."""
    return {code: {"model": ErrorBody, "description": _REASONS.get(code, "error")} for code in codes}


def _error_response(code: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _REASONS.get(code, "error"),
        "content": {"application/json": {"schema": {"$ref": _SCHEMA_REF}}},
    }
    if code == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}
    if code == 429:
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}
    return response


def _complete(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["ErrorBody"] = ErrorBody.model_json_schema()
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    for path, item in schema.get("paths", {}).items():
        guarded = Access.guarded(path)
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            responses.pop("422", None)
            codes = {413, 431} | ({408} if method.upper() in {"POST", "PUT", "PATCH", "DELETE"} else set())
            if op.get("parameters") or op.get("requestBody"):
                codes.add(400)
            if guarded:
                codes |= {401, 429} if method.upper() in READ_METHODS else {401, 403, 429}
            else:
                op.pop("security", None)
            for code in sorted(codes):
                responses.setdefault(str(code), _error_response(code))
    return schema


def complete_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """A replacement for ``app.openapi`` that returns the completed document (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _complete(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    return openapi
