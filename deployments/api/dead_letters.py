"""Routes of dead letters (an ``APIRouter`` the ingress's app includes), over every partition
through `stream.adapters.redis.dead_letters`, as ``framestream dead`` does:

- ``GET /v1/dead-letters``: the newest, oldest first, and how many are kept;
- ``GET /v1/dead-letters/{id}``: one in full (400 malformed id, 404 none);
- ``POST /v1/dead-letters/{id}/retry``: back on the stream it came from (404 none, 409 no payload).
"""

# No `from __future__ import annotations`: FastAPI resolves the route annotations at runtime.
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Query

from deployments.api.http_errors import ApiError, redis_call
from deployments.api.openapi import errors
from deployments.api.replica import serving_replica

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/dead-letters", tags=["dead letters"], responses=errors(503))
async def get_dead_letters(
    stage: str | None = Query(None, description="only dead letters of this stage"),
    limit: int = Query(100, ge=1, le=1000, description="the newest N"),
    ingress: Any = Depends(serving_replica),
) -> dict[str, Any]:
    """The newest dead letters of every partition, oldest first, and how many are kept (200;
    503 when Redis is unavailable)."""
    from stream.adapters.redis.dead_letters import DeadLetters

    dead = DeadLetters(ingress.client, ingress.keys)
    records = await redis_call(dead.newest(limit=limit, stage=stage))
    total = await redis_call(dead.count())
    now_ms = time.time() * 1000.0
    return {"total": total, "dead_letters": [r.summary(now_ms) for r in records]}


@router.get("/v1/dead-letters/{dead_id}", tags=["dead letters"], responses=errors(404, 503))
async def get_dead_letter(dead_id: str, ingress: Any = Depends(serving_replica)) -> dict[str, Any]:
    """One dead letter in full: 200; 400 for a malformed id, 404 when there is none."""
    record = await _dead_letter_call(ingress, lambda dead: dead.get(dead_id))
    return dict(record.detail(time.time() * 1000.0))


@router.post("/v1/dead-letters/{dead_id}/retry", tags=["dead letters"], responses=errors(404, 409, 503))
async def retry_dead_letter(dead_id: str, ingress: Any = Depends(serving_replica)) -> dict[str, Any]:
    """Put a dead letter back on the stream it came from, then delete it (one transaction).

    200 with the new entry's stream and id; 400 for a malformed id; 404 when there is no such
    dead letter (already retried, trimmed); 409 when it cannot be retried (no payload kept);
    503 when Redis is unavailable. One still bad is dead-lettered again with its reason.
    """
    outcome = await _dead_letter_call(ingress, lambda dead: dead.retry(dead_id))
    return {"id": outcome.ref, "stream": outcome.stream, "new_id": outcome.new_id}


async def _dead_letter_call(ingress: Any, call: Callable[[Any], Awaitable[Any]]) -> Any:
    from stream.adapters.redis.dead_letters import DeadLetters
    from stream.errors import DeadLetterError, UnknownDeadLetter

    try:
        return await redis_call(call(DeadLetters(ingress.client, ingress.keys)))
    except ValueError as e:
        raise ApiError(400, str(e)) from e
    except UnknownDeadLetter as e:
        raise ApiError(404, str(e)) from e
    except DeadLetterError as e:
        raise ApiError(409, str(e)) from e
