"""Who may call a route of the HTTP API: bearer tokens in two scopes (pure, no I/O).

`Access(read_tokens, admin_tokens).check(method, path, token)` returns None (go ahead) or a
`Refusal` (401: no or unknown token; 403: a read token on a route that changes something).
Only ``/v1`` routes are guarded: health (``/healthz``, ``/readyz``), the OpenAPI page and the
console's static files hold no data. GET and HEAD need the read scope, every other method the admin
scope (admin implies read); the sinks (``/v1/sinks``, `ADMIN_ONLY`) need the admin scope for every
method: their settings name the user's own systems. With no token configured every route is open.

Tokens are compared in constant time (`hmac.compare_digest`, against every configured token), and
never appear in a reason.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ADMIN_ONLY",
    "GUARDED_PREFIX",
    "READ_METHODS",
    "Access",
    "Refusal",
    "bearer_token",
    "url_token_allowed",
]

GUARDED_PREFIX = "/v1"
READ_METHODS = frozenset({"GET", "HEAD"})
ADMIN_ONLY = ("/v1/sinks",)
"""Paths (and everything under them) that need an admin token even to read."""
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="framestream"'}


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str
    headers: dict[str, str]


def url_token_allowed(method: str, path: str) -> bool:
    """Whether ``?token=`` counts on `method path`: only where a browser cannot send a header
    (an EventSource, an ``<img>``), all GETs. A token in a URL ends up in logs and histories, so
    every other route takes it from the ``Authorization`` header only."""
    if method.upper() not in READ_METHODS:
        return False
    if path in ("/v1/events", "/v1/console/events"):
        return True
    parts = path.split("/")
    return len(parts) == 5 and parts[1:3] == ["v1", "sources"] and parts[4] == "thumbnail"


def bearer_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token a request carries: ``Authorization: Bearer <t>`` first, else ``?token=<t>``
    (pass None for it where `url_token_allowed` says no)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or None


def _matches(token: bytes, known: tuple[bytes, ...]) -> bool:
    found = False
    for candidate in known:  # no early exit: the time taken does not tell which token matched
        found |= hmac.compare_digest(token, candidate)
    return found


class Access:
    """The configured tokens and the rule above."""

    def __init__(self, read_tokens: Iterable[str], admin_tokens: Iterable[str]) -> None:
        self._read = tuple(t.encode() for t in read_tokens)
        self._admin = tuple(t.encode() for t in admin_tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._read or self._admin)

    @staticmethod
    def guarded(path: str) -> bool:
        return path == GUARDED_PREFIX or path.startswith(GUARDED_PREFIX + "/")

    def check(self, method: str, path: str, token: str | None) -> Refusal | None:
        """None if a request with `token` may call `method path`, else why not."""
        if not self.enabled or not self.guarded(path):
            return None
        if not token:
            return Refusal(
                401,
                "this API needs a token: send 'Authorization: Bearer <token>' (?token=<token> only on "
                "the SSE feeds and thumbnails)",
                CHALLENGE,
            )
        given = token.encode()
        admin = _matches(given, self._admin)
        read = _matches(given, self._read)
        if not (admin or read):
            return Refusal(
                401,
                "the token is not valid here",
                {"WWW-Authenticate": CHALLENGE["WWW-Authenticate"] + ', error="invalid_token"'},
            )
        admin_only = any(path == p or path.startswith(p + "/") for p in ADMIN_ONLY)
        if (method.upper() not in READ_METHODS or admin_only) and not admin:
            return Refusal(
                403,
                f"{method.upper()} {path} needs an admin token; this one may only read",
                {"WWW-Authenticate": CHALLENGE["WWW-Authenticate"] + ', error="insufficient_scope"'},
            )
        return None
