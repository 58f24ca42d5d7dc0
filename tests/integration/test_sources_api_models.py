"""``POST /v1/sources`` with `models` (the ingress's route, in a FastAPI app of its own, on a real
redis-server): a source may name the models that classify it, only among those the pipeline
serves; the registry keeps them for ingest to stamp on every frame."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from deployments.api import sources as source_routes
from deployments.api.http_errors import install_error_handlers
from deployments.api.replica import serving_replica
from stream.adapters.redis.source_registry import list_sources
from stream.adapters.source_access import policy_from
from stream.core.keys import PipelineKeys
from stream.settings import Settings


@pytest.fixture
async def api(redis_client: Any, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = Settings(
        streams={"pipeline": f"m{secrets.token_hex(3)}"}, ingest={"allowed_sources": {"roots": [tmp_path]}}
    )
    keys = PipelineKeys(settings.streams.pipeline)
    for model in ("cars", "people"):  # what serving a model looks like: its preprocess group on the frames
        await redis_client.xgroup_create(keys.frames, f"preprocess:{model}", id="$", mkstream=True)
    ingress = SimpleNamespace(
        client=redis_client,
        settings=settings,
        keys=keys,
        source_policy=policy_from(settings.ingest.allowed_sources),
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(source_routes.router)
    app.dependency_overrides[serving_replica] = lambda: ingress
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        yield http, ingress


async def test_a_source_names_its_models_among_those_served(
    api: tuple[httpx.AsyncClient, Any], tmp_path: Path
) -> None:
    http, ingress = api
    clip = tmp_path / "gate.mp4"
    clip.write_bytes(b"")
    ok = await http.post("/v1/sources", json={"uri": str(clip), "id": "gate", "models": ["cars"]})
    assert ok.status_code == 201, ok.text
    assert ok.json()["models"] == ["cars"]
    [status] = await list_sources(ingress.client, ingress.keys)
    assert status.spec.models == ("cars",)
    listed = await http.get("/v1/sources")
    assert listed.json()["sources"][0]["models"] == ["cars"]


@pytest.mark.parametrize(
    ("models", "status", "says"),
    [
        (["bikes"], 400, "not served by this pipeline"),
        ([], 400, "at least 1 item"),
        (["cars", 7], 400, "valid string"),
    ],
)
async def test_models_the_pipeline_does_not_serve_are_refused(
    api: tuple[httpx.AsyncClient, Any], tmp_path: Path, models: list[Any], status: int, says: str
) -> None:
    http, ingress = api
    clip = tmp_path / "gate.mp4"
    clip.write_bytes(b"")
    answer = await http.post("/v1/sources", json={"uri": str(clip), "models": models})
    assert answer.status_code == status, answer.text
    assert says in answer.text
    assert await list_sources(ingress.client, ingress.keys) == []


async def test_a_model_still_starting_is_not_served_yet(
    api: tuple[httpx.AsyncClient, Any], tmp_path: Path
) -> None:
    """A model asked for while running (``POST /v1/models/{name}``) has its groups before its stages
    run: a source may name it once it serves, not while it starts."""
    from stream.adapters.redis.model_requests import SERVING, STARTING, set_request_state

    http, ingress = api
    clip = tmp_path / "gate.mp4"
    clip.write_bytes(b"")
    await set_request_state(ingress.client, ingress.keys, "people", STARTING)
    early = await http.post("/v1/sources", json={"uri": str(clip), "models": ["people"]})
    assert early.status_code == 400, early.text
    assert early.json()["error"] == (
        "models ['people'] are not served by this pipeline; it serves ['cars'] "
        "(people starting: try again once GET /v1/models says serving)"
    )
    await set_request_state(ingress.client, ingress.keys, "people", SERVING)
    ok = await http.post("/v1/sources", json={"uri": str(clip), "models": ["people"]})
    assert ok.status_code == 201, ok.text
