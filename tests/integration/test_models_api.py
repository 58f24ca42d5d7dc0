"""``GET /v1/models`` and the admin model routes (deployments/api/models.py) on a real
redis-server and a real model repository: the router mounted on an app of its own, as the
ingress mounts it (tokens and scopes are the ingress's, tested in tests/e2e/test_api_access.py)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import yaml
from fastapi import FastAPI

from deployments.api import models as model_routes
from deployments.api.http_errors import install_error_handlers
from deployments.api.replica import serving_replica
from stream.core.codec import Message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.settings import Settings
from stream.zoo.repository import ModelRepository, seeds_dir

MODEL = "cat"


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepository:
    repository = ModelRepository(tmp_path / "repo")
    raw = yaml.safe_load((seeds_dir() / "mobilenet-v1-0.25-128" / "model.yml").read_text())
    for _ in range(2):
        with repository.new_version(MODEL, activate=False) as new:
            (new.folder / "model.yml").write_text(yaml.safe_dump(raw))
    repository.activate(MODEL, 1)
    return repository


@pytest.fixture
async def http(redis_client, repo: ModelRepository):
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(model_routes.router)
    ingress = SimpleNamespace(
        client=redis_client, keys=PipelineKeys(), settings=Settings(models={"repository": repo.root})
    )
    app.dependency_overrides[serving_replica] = lambda: ingress
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        yield client


async def _add(client, stream: str, meta: dict, array: np.ndarray | None = None) -> None:
    await client.xadd(stream, {FIELD: encode_message(Message(meta=meta, array=array))})


async def test_models_lists_what_serves_with_rates_and_the_shadows_agreement(
    redis_client, http: httpx.AsyncClient, repo: ModelRepository
) -> None:
    keys = PipelineKeys()
    await redis_client.xgroup_create(keys.frames, f"preprocess:{MODEL}", id="$", mkstream=True)
    repo.set_shadow(MODEL, 2)
    now = time.time() * 1000
    labels = ["tabby", "tabby", "lynx", "tabby"]
    shadow = ["tabby", "lynx", "lynx", "lion"]
    for seq, (mine, theirs) in enumerate(zip(labels, shadow, strict=True)):
        result = {"kind": "result", "source": "cam", "seq": seq, "model": MODEL, "model_version": 1,
                  "label": mine, "result_ms": now}  # fmt: skip
        await _add(redis_client, keys.results, result)
        meta = {"kind": "frame", "source": "cam", "seq": seq, "model_version": 2, "top_label": theirs,
                "infer_ms": 2.0}  # fmt: skip
        await _add(redis_client, keys.shadow(MODEL), meta, np.zeros(1000, np.float16))
    response = await http.get("/v1/models")
    assert response.status_code == 200, response.text
    [cat] = response.json()["models"]
    assert (cat["name"], cat["versions"], cat["active"], cat["shadow"], cat["classes"]) == (
        MODEL,
        [1, 2],
        1,
        2,
        1000,
    )
    assert cat["frames_per_s"] == {"1": 0.4}  # 4 results in the last 10 s
    agreement = cat["agreement"]
    assert (agreement["frames"], agreement["agreed"], agreement["top1_agreement"]) == (4, 2, 0.5)
    assert agreement["disagreements"] == [
        {"active": "tabby", "shadow": "lion", "frames": 1},
        {"active": "tabby", "shadow": "lynx", "frames": 1},
    ]


async def test_admin_routes_change_what_serves_and_refuse_unknown_names_and_versions(
    http: httpx.AsyncClient, repo: ModelRepository
) -> None:
    response = await http.post(f"/v1/models/{MODEL}/activate", json={"version": 2})
    assert response.status_code == 200 and response.json()["active"] == 2
    assert (await http.post(f"/v1/models/{MODEL}/rollback")).json()["active"] == 1
    assert (await http.post(f"/v1/models/{MODEL}/shadow", json={"version": 2})).json()["shadow"] == 2
    promoted = (await http.post(f"/v1/models/{MODEL}/promote")).json()
    assert (promoted["active"], promoted["shadow"]) == (2, None)
    assert repo.serving(MODEL).active == 2
    for path, body, status, says in [
        ("/v1/models/dog/activate", {"version": 1}, 404, "unknown model 'dog'"),
        (f"/v1/models/{MODEL}/activate", {"version": 9}, 404, "cat has no version 9; it has 1, 2"),
        (f"/v1/models/{MODEL}/shadow", {"version": 7}, 404, "no version 7"),
        (f"/v1/models/{MODEL}/promote", None, 409, "no shadow to promote"),
        ("/v1/models/mobilenet-v1-0.25-128/rollback", None, 409, "is a built-in model"),
        (f"/v1/models/{MODEL}/activate", {}, 400, "give the version"),
    ]:
        response = await http.post(path, json=body)
        assert response.status_code == status, (path, response.text)
        assert says in response.json()["error"], response.text
    assert repo.serving(MODEL).active == 2


async def test_serving_one_more_model_is_a_request_that_only_a_watching_runner_takes(
    redis_client, http: httpx.AsyncClient, repo: ModelRepository
) -> None:
    """``POST /v1/models/{name}`` records the request for the runner (stream.runners.more_models);
    with no runner watching (a KubeRay RayService) it says how to add the model there instead."""
    from stream.adapters.redis.model_requests import FAILED, mark_watched, set_request_state, unwatch

    keys = PipelineKeys()
    unwatched = await http.post(f"/v1/models/{MODEL}")
    assert unwatched.status_code == 409
    assert unwatched.json()["error"].startswith("no runner of this pipeline adds models while it runs")
    assert f"add an application for {MODEL} to serveConfigV2" in unwatched.json()["error"]
    assert (await http.get("/v1/models")).json()["models"] == []  # refused: nothing was recorded
    await mark_watched(redis_client, keys, "processes")
    unknown = await http.post("/v1/models/dog")
    assert unknown.status_code == 404 and "unknown model 'dog'" in unknown.json()["error"]
    asked = await http.post(f"/v1/models/{MODEL}")
    assert asked.status_code == 202, asked.text
    assert (asked.json()["name"], asked.json()["state"], asked.json()["runner"]) == (
        MODEL,
        "starting",
        "processes",
    )
    again = await http.post(f"/v1/models/{MODEL}")
    assert again.status_code == 409 and again.json()["error"] == f"{MODEL} is starting already"
    assert (await http.get("/v1/models")).json()["models"] == [
        {"name": MODEL, "state": "starting", "reason": None}
    ]

    await set_request_state(redis_client, keys, MODEL, FAILED, "stage infer[cat] exited with code 1")
    [failed] = (await http.get("/v1/models")).json()["models"]
    assert (failed["state"], failed["reason"]) == ("failed", "stage infer[cat] exited with code 1")
    assert (await http.post(f"/v1/models/{MODEL}")).status_code == 202  # a failed model may be asked again
    await redis_client.xgroup_create(keys.frames, f"preprocess:{MODEL}", id="$", mkstream=True)
    [starting] = (await http.get("/v1/models")).json()["models"]
    assert (starting["state"], starting["versions"]) == ("starting", [1, 2])  # its group is there already

    await redis_client.hset(keys.model_requests, "garbage", b"\x80 not json")  # never trusted further
    await set_request_state(redis_client, keys, MODEL, "serving")
    [serving] = (await http.get("/v1/models")).json()["models"]
    assert serving["state"] == "serving"
    served = await http.post(f"/v1/models/{MODEL}")
    assert served.status_code == 409 and served.json()["error"] == f"{MODEL} is served already"
    await unwatch(redis_client, keys)
