"""Models asked for while a pipeline runs (``POST /v1/models/{name}``), as desired state in Redis.

``keys.model_requests`` maps a model name to JSON ``{"state", "reason", "time_ms"}``: the API
writes ``starting``; the runner that watches the hash (`stream.runners.more_models`) starts the
model's stages and writes ``serving``, or ``failed`` with the reason. ``keys.model_runner`` is that
runner's heartbeat (a key with a TTL, renewed every `HEARTBEAT_EVERY_S`): without it nobody starts
a model asked for (a KubeRay RayService's applications are its ``serveConfigV2``), and the API
says so instead of accepting the request. Everything read back is plain JSON, checked field by
field.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from stream.adapters.redis.entries import text
from stream.core.keys import PipelineKeys

__all__ = [
    "FAILED",
    "HEARTBEAT_EVERY_S",
    "HEARTBEAT_TTL_MS",
    "SERVING",
    "STARTING",
    "ModelRequest",
    "clear_requests",
    "mark_watched",
    "model_requests",
    "request_model",
    "set_request_state",
    "unwatch",
    "watching_runner",
]

STARTING, SERVING, FAILED = "starting", "serving", "failed"
_STATES = (STARTING, SERVING, FAILED)
HEARTBEAT_EVERY_S = 1.0
HEARTBEAT_TTL_MS = 10_000
"""A runner that stopped renewing (killed) is taken for gone after this long."""


@dataclass(frozen=True)
class ModelRequest:
    state: str
    reason: str | None = None
    time_ms: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"state": self.state, "reason": self.reason, "time_ms": self.time_ms})

    @classmethod
    def from_json(cls, raw: str | bytes) -> ModelRequest | None:
        """The request, or None for a value that is not one (never trusted further)."""
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("state") not in _STATES:
            return None
        reason, at = data.get("reason"), data.get("time_ms")
        return cls(
            state=str(data["state"]),
            reason=reason if isinstance(reason, str) else None,
            time_ms=float(at) if isinstance(at, int | float) else 0.0,
        )


async def model_requests(client: Any, keys: PipelineKeys) -> dict[str, ModelRequest]:
    """Every model asked for while running, with its state."""
    out: dict[str, ModelRequest] = {}
    for name, raw in (await client.hgetall(keys.model_requests)).items():
        request = ModelRequest.from_json(text(raw))
        if request is not None:
            out[text(name)] = request
    return out


async def request_model(client: Any, keys: PipelineKeys, name: str) -> ModelRequest | None:
    """Ask for `name` (state ``starting``); None when it was asked for already and has not failed
    (that request is returned instead: two admins asking at once start it once)."""
    wanted = ModelRequest(STARTING, None, time.time() * 1000.0)
    if await client.hsetnx(keys.model_requests, name, wanted.to_json()):
        return None
    raw = await client.hget(keys.model_requests, name)
    earlier = ModelRequest.from_json(text(raw)) if raw is not None else None
    if earlier is not None and earlier.state != FAILED:
        return earlier
    await client.hset(keys.model_requests, name, wanted.to_json())  # a failed request: try again
    return None


async def set_request_state(
    client: Any, keys: PipelineKeys, name: str, state: str, reason: str | None = None
) -> None:
    await client.hset(keys.model_requests, name, ModelRequest(state, reason, time.time() * 1000.0).to_json())


async def clear_requests(client: Any, keys: PipelineKeys) -> None:
    """Forget every request (a run starts and ends with the models it serves)."""
    await client.delete(keys.model_requests)


async def mark_watched(client: Any, keys: PipelineKeys, runner: str) -> None:
    """Renew the heartbeat of the runner watching the requests (`runner`: its name)."""
    await client.set(keys.model_runner, runner, px=HEARTBEAT_TTL_MS)


async def unwatch(client: Any, keys: PipelineKeys) -> None:
    await client.delete(keys.model_runner)


async def watching_runner(client: Any, keys: PipelineKeys) -> str | None:
    """The name of the runner watching the requests, or None when none does."""
    raw = await client.get(keys.model_runner)
    return text(raw) if raw is not None else None
