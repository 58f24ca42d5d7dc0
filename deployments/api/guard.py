"""The first step of every route of the ingress's FastAPI app (an app-wide dependency).

`guard` runs before each route, including routes added later (fail closed): on ``/v1`` it asks the
ingress replica serving the request to admit it (`Ingress.admit`: rate limit, then tokens); health,
the OpenAPI page and the console's files pass. `deployments.api.limits.RequestLimits` admits the
request before its body is read and marks it, so here it is admitted only once. The security
schemes below are declared only so the OpenAPI document and ``/docs`` say how to send a token;
`Ingress.admit` reads it from the request.
"""

# No `from __future__ import annotations`: FastAPI resolves these annotations at runtime.
from typing import Any

from fastapi import Depends, Request
from fastapi.security import APIKeyQuery, HTTPBearer
from ray import serve

from deployments.api.auth import Access
from deployments.api.limits import ADMITTED

__all__ = ["guard"]

_bearer = HTTPBearer(auto_error=False, description="an API token (api.read_tokens / api.admin_tokens)")
_query_token = APIKeyQuery(
    name="token",
    auto_error=False,
    description="the same token, accepted only where a browser cannot send a header: the SSE feeds "
    "(GET /v1/events, GET /v1/console/events) and thumbnails (GET /v1/sources/{id}/thumbnail)",
)


async def guard(request: Request, _b: Any = Depends(_bearer), _q: Any = Depends(_query_token)) -> None:
    """Admit the request (see the module docstring); raises the ingress's ApiError if not."""
    if not Access.guarded(request.url.path) or request.scope.get(ADMITTED):
        return  # unguarded, or admitted already by `deployments.api.limits.RequestLimits`
    ingress: Any = serve.get_replica_context().servable_object
    ingress.admit(request)
