"""``POST /v1/models/{name}``: a running pipeline serves one more model without stopping the
others. The processes runner's run (`run_processes`: the run loop of `framestream run`, real stage
processes, real OpenVINO, a real redis-server) plays a looping source with one model; the model
routes (deployments/api/models.py, mounted on an app of their own as in test_models_api.py; the
tokens are the ingress's, tested through `framestream run` in tests/e2e/test_ray_more_models.py)
ask for a second one. Both models are synthetic stand-ins in a model repository."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from deployments.api import models as model_routes
from deployments.api import sources as source_routes
from deployments.api.http_errors import install_error_handlers
from deployments.api.replica import serving_replica
from stream.adapters.redis.model_requests import watching_runner
from stream.adapters.redis.server import RedisServer
from stream.adapters.redis.source_registry import SourceSpec
from stream.adapters.source_access import policy_from
from stream.core.keys import PipelineKeys
from stream.runners.processes import RunReport, run_processes
from stream.settings import Settings
from stream.zoo.repository import ModelRepository
from tests.clips import write_clip
from tests.model_versions import StreamTap, add_version
from tests.waiting import until

pytestmark = pytest.mark.slow

FIRST, ADDED = "cars", "people"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    repository = ModelRepository(tmp_path / "repo")
    add_version(repository, FIRST, seed=1)
    add_version(repository, ADDED, seed=2)
    media = tmp_path / "media"
    media.mkdir()
    return Settings(
        streams={"pipeline": f"more{secrets.token_hex(3)}", "claim_idle_ms": 1_000, "drain_timeout_s": 5},
        infer={"max_batch_size": 8, "max_wait_ms": 5, "batch_tuning": False},
        models={"cache_dir": tmp_path / "cache", "repository": repository.root},
        ingest={"allowed_sources": {"roots": [media]}},
    )


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """40 frames of a moving colour pattern, played in a loop."""
    yy, xx = np.mgrid[0:96, 0:128]
    frames = [
        np.stack([(xx * 2 + i * 5) % 256, (yy * 3 + i * 7) % 256, ((xx + yy) + i * 11) % 256], -1).astype(
            np.uint8
        )
        for i in range(40)
    ]
    return write_clip(tmp_path / "media" / "loop.mp4", frames)


@pytest.fixture
async def http(redis_client: Any, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(model_routes.router)
    app.include_router(source_routes.router)
    ingress = SimpleNamespace(
        client=redis_client,
        keys=PipelineKeys(settings.streams.pipeline),
        settings=settings,
        source_policy=policy_from(settings.ingest.allowed_sources),
    )
    app.dependency_overrides[serving_replica] = lambda: ingress
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        yield client


def _models(answer: httpx.Response) -> dict[str, dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return {m["name"]: m for m in answer.json()["models"]}


def _seqs(results: Path, model: str) -> list[int]:
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    return sorted(r["seq"] for r in rows if r["source"] == "loop" and r["model"] == model)


async def test_a_running_pipeline_serves_one_more_model_and_the_first_misses_no_frame(
    redis_server: RedisServer, redis_client: Any, http: httpx.AsyncClient, settings: Settings, clip: Path
) -> None:
    keys = PipelineKeys(settings.streams.pipeline)
    refused = await http.post(f"/v1/models/{ADDED}")
    assert refused.status_code == 409, refused.text  # nothing runs yet: nobody would start it
    assert "serveConfigV2" in refused.json()["error"]
    stop = asyncio.Event()
    results_file = settings.models.cache_dir.parent / "results.jsonl"
    async with StreamTap(redis_client, keys.results) as results:
        run = asyncio.create_task(
            run_processes(
                settings,
                redis_url=redis_server.url,
                sources=[SourceSpec(uri=str(clip), loop=True)],
                models=[FIRST],
                results_path=results_file,
                stop=stop,
            )
        )
        try:
            await until(lambda: watching_runner(redis_client, keys), timeout_s=120, what="the run's watch")

            def of(model: str) -> list[dict[str, Any]]:
                return [r for r in results.metas("result") if r["model"] == model]

            await until(lambda: len(of(FIRST)) >= 100, timeout_s=120, what=f"100 results of {FIRST}")
            unknown = await http.post("/v1/models/bikes")
            assert unknown.status_code == 404 and "unknown model 'bikes'" in unknown.json()["error"]
            served = await http.post(f"/v1/models/{FIRST}")
            assert served.status_code == 409 and "served already" in served.json()["error"]
            early = await http.post("/v1/sources", json={"uri": str(clip), "id": "early", "models": [ADDED]})
            assert early.status_code == 400 and "not served" in early.json()["error"], early.text

            asked = await http.post(f"/v1/models/{ADDED}")
            assert asked.status_code == 202, asked.text
            assert (asked.json()["state"], asked.json()["runner"]) == ("starting", "processes")
            again = await http.post(f"/v1/models/{ADDED}")
            assert again.status_code == 409, again.text
            listed = _models(await http.get("/v1/models"))
            assert (listed[FIRST]["state"], listed[ADDED]["state"]) == ("serving", "starting")

            await until(lambda: _serving(http), timeout_s=120, what=f"{ADDED} serving")
            await until(lambda: len(of(ADDED)) >= 100, timeout_s=120, what=f"100 results of {ADDED}")
            first_added = min(r["seq"] for r in of(ADDED))
            await until(
                lambda: sum(r["seq"] > first_added + 100 for r in of(FIRST)) >= 100,
                timeout_s=60,
                what=f"{FIRST}'s results going on",
            )
            late = await http.post("/v1/sources", json={"uri": str(clip), "id": "late", "models": [ADDED]})
            assert late.status_code == 201, late.text  # now it serves: a source may ask for it
            await until(
                lambda: [r for r in results.metas("eos") if r["source"] == "late"],
                timeout_s=60,
                what="the late source's end",
            )
        finally:
            stop.set()
            report: RunReport = await asyncio.wait_for(run, 120)
    assert await watching_runner(redis_client, keys) is None  # the run is over: nobody adds models
    rows = {(r.source, r.model): r for r in report.rows}
    assert set(rows) == {("loop", FIRST), ("loop", ADDED)}, rows  # the summary follows the new model
    frames = rows["loop", FIRST].frames
    assert frames is not None and frames > first_added + 200
    assert _seqs(results_file, FIRST) == list(range(frames))  # every frame of the first, once
    added = _seqs(results_file, ADDED)  # the frames from its start on, each once
    assert added == list(range(first_added, frames)) and first_added > 0, added[:5]
    counts = Counter((r["source"], r["model"]) for r in results.metas("result") if r["source"] == "late")
    assert counts == Counter({("late", ADDED): 40})  # the late source: the new model alone


async def _serving(http: httpx.AsyncClient) -> bool:
    return _models(await http.get("/v1/models")).get(ADDED, {}).get("state") == "serving"


async def test_a_model_that_cannot_start_fails_with_its_reason_and_the_running_one_goes_on(
    redis_server: RedisServer, redis_client: Any, http: httpx.AsyncClient, settings: Settings, clip: Path
) -> None:
    """A model whose file is not a model: its infer process exits while starting; the request says
    failed with the reason, its groups are removed (nobody reads them: they would hold ingest
    back), and the running model's processes and results go on."""
    broken = "broken"
    add_version(ModelRepository(settings.models.repository), broken, seed=3, broken=True)
    keys = PipelineKeys(settings.streams.pipeline)
    stop = asyncio.Event()
    async with StreamTap(redis_client, keys.results) as results:
        run = asyncio.create_task(
            run_processes(
                settings,
                redis_url=redis_server.url,
                sources=[SourceSpec(uri=str(clip), loop=True)],
                models=[FIRST],
                stop=stop,
            )
        )
        try:
            await until(lambda: watching_runner(redis_client, keys), timeout_s=120, what="the run's watch")
            assert (await http.post(f"/v1/models/{broken}")).status_code == 202
            failed = await until(lambda: _failed(http, broken), timeout_s=120, what=f"{broken} failed")
            assert "exited with code" in failed["reason"], failed
            groups = [g["name"] for g in await redis_client.xinfo_groups(keys.frames)]
            assert groups == [f"preprocess:{FIRST}".encode()]
            count = len(results.metas("result"))
            await until(
                lambda: len(results.metas("result")) >= count + 100, timeout_s=60, what=f"{FIRST} going on"
            )
            assert not run.done()
        finally:
            stop.set()
            report: RunReport = await asyncio.wait_for(run, 120)
    [row] = report.rows
    assert (row.model, row.results, row.duplicates) == (FIRST, row.frames, 0)


async def _failed(http: httpx.AsyncClient, name: str) -> dict[str, Any] | None:
    found = _models(await http.get("/v1/models")).get(name)
    return found if found is not None and found["state"] == "failed" else None
