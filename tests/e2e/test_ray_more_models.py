"""``POST /v1/models/{name}`` through `framestream run` (the Ray runner, local Ray, a real
redis-server, the real Serve config): the run deploys one more Serve application for the model
while the first one's replicas go on untouched, and the API takes the request from admins only.
Both models are synthetic stand-ins in a model repository."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from stream.adapters.redis.server import RedisServer
from stream.core.keys import PipelineKeys
from stream.zoo.repository import ModelRepository
from tests.clips import write_clip
from tests.model_versions import add_version
from tests.waiting import wait_until

pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FIRST, ADDED = "cars", "people"
READ = "read-" + secrets.token_urlsafe(24)
ADMIN = "admin-" + secrets.token_urlsafe(24)


def _consumers(client: redis.Redis, keys: PipelineKeys, model: str) -> set[str]:
    """The consumers (Serve replica ids) in `model`'s three stage groups."""
    found = set()
    for stream, stage in (
        (keys.frames, "preprocess"),
        (keys.tensors(model), "infer"),
        (keys.scores(model), "postprocess"),
    ):
        for consumer in client.xinfo_consumers(stream, keys.group(stage, model)):
            found.add(f"{stage}:{consumer['name'].decode()}")
    return found  # fmt: skip


def test_a_run_on_ray_deploys_one_more_application_and_leaves_the_first_running(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    repository = ModelRepository(tmp_path / "repo")
    add_version(repository, FIRST, seed=1)
    add_version(repository, ADDED, seed=2)
    yy, xx = np.mgrid[0:96, 0:128]
    frames = [np.stack([(xx + i * 5) % 256, (yy + i * 7) % 256, (xx + yy) % 256], -1) for i in range(40)]
    clip = write_clip(tmp_path / "loop.mp4", [f.astype(np.uint8) for f in frames])
    pipeline = f"raymore{secrets.token_hex(3)}"
    keys = PipelineKeys(pipeline)
    results_file = tmp_path / "results.jsonl"
    env = {**os.environ, "CI": "true", "FRAMESTREAM_MODELS__CACHE_DIR": str(tmp_path / "cache"),
           "FRAMESTREAM_MODELS__REPOSITORY": str(repository.root), "FRAMESTREAM_STREAMS__PIPELINE": pipeline,
           "FRAMESTREAM_API__READ_TOKENS": READ, "FRAMESTREAM_API__ADMIN_TOKENS": ADMIN}  # fmt: skip
    env.pop("FRAMESTREAM_MODELS__WEIGHTS_DIR", None)
    run = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "run", "--json", "--redis", redis_server.url, "--model", FIRST,
         "--source", str(clip), "--loop", "--timeout", "400", "--results", str(results_file)],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        for line in run.stderr or []:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    client = redis.Redis.from_url(redis_server.url)
    admin = {"Authorization": f"Bearer {ADMIN}"}

    def models(http: httpx.Client) -> dict[str, dict[str, Any]]:
        answer = http.get("/v1/models", headers=admin)
        return {m["name"]: m for m in answer.json()["models"]} if answer.status_code == 200 else {}

    def results_of(model: str) -> int:
        return sum(json.loads(line)["model"] == model for line in results_file.read_text().splitlines())

    try:
        api = wait_until(
            lambda: next((line.split()[-1] for line in lines if line.startswith("HTTP API: ")), None),
            timeout_s=300,
            what="the run's HTTP API line",
        ).removesuffix("/docs")
        with httpx.Client(base_url=api, timeout=30) as http:
            wait_until(lambda: results_file.exists() and results_of(FIRST) >= 100, timeout_s=180,
                       what=f"100 results of {FIRST}\n" + "".join(lines[-30:]))  # fmt: skip
            before = _consumers(client, keys, FIRST)
            [source] = http.get("/v1/sources", headers=admin).json()["sources"]
            assert http.post(f"/v1/models/{ADDED}").status_code == 401
            read_only = http.post(f"/v1/models/{ADDED}", headers={"Authorization": f"Bearer {READ}"})
            assert read_only.status_code == 403, read_only.text
            assert http.post("/v1/models/bikes", headers=admin).status_code == 404
            asked = http.post(f"/v1/models/{ADDED}", headers=admin)
            assert asked.status_code == 202 and asked.json()["runner"] == "ray", asked.text
            assert models(http)[ADDED]["state"] == "starting"
            wait_until(lambda: models(http).get(ADDED, {}).get("state") == "serving", timeout_s=300,
                       what=f"{ADDED} serving\n" + "".join(lines[-30:]))  # fmt: skip
            wait_until(lambda: results_of(ADDED) >= 100, timeout_s=120, what=f"100 results of {ADDED}")
            assert http.post(f"/v1/models/{ADDED}", headers=admin).status_code == 409  # served now
            after = _consumers(client, keys, FIRST)
            [still] = http.get("/v1/sources", headers=admin).json()["sources"]
        # no replica of the first application was replaced (a replaced one leaves its groups)
        assert before <= after, (before, after)
        assert still["owner"] == source["owner"]  # the same ingest replica plays the source
        run.send_signal(signal.SIGTERM)  # stops as Ctrl-C does: drain, summary, exit 0
        assert run.wait(timeout=240) == 0, "".join(lines[-40:])
        out = run.stdout.read() if run.stdout else ""
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        client.close()
    summary = json.loads(out)
    assert summary["model"] == f"{FIRST}, {ADDED}"  # the summary follows the new model
    rows = {name: row for name, row in summary["sources"].items()}
    assert set(rows) == {f"loop [{FIRST}]", f"loop [{ADDED}]"}, rows
    seqs = Counter(json.loads(line)["seq"] for line in results_file.read_text().splitlines()
                   if json.loads(line)["model"] == FIRST)  # fmt: skip
    published = rows[f"loop [{FIRST}]"]["published"]
    assert sorted(seqs) == list(range(published)) and set(seqs.values()) == {1}  # every frame, once
    assert 0 < rows[f"loop [{ADDED}]"]["results"] < published
