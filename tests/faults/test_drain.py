"""Scenario 7: scale-down mid-stream. Serve stops the removed replicas gracefully (the stage
deployment's drain: stop reading, finish and ack what it holds, leave the group), so nothing is
lost, nothing is duplicated and nothing stays pending."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import yaml

from stream.adapters.redis.client import connect
from stream.adapters.redis.server import RedisServer
from stream.core.keys import PipelineKeys
from stream.runners.processes import StageProcess, create_groups
from tests.faults.conftest import MODEL, REPLICAS, Stack, fault_settings
from tests.faults.scenario import Harness

pytestmark = [pytest.mark.faults, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

FRAMES = 6_000


@pytest.mark.ray
async def test_scale_down_mid_stream_drains_without_loss_or_duplicates(
    harness: Harness, stack: Stack
) -> None:
    replay = await harness.replay("7-scale-down", FRAMES)
    assert await harness.follow(replay, timeout_s=60, until=lambda: replay.sink.distinct >= FRAMES // 4)
    before = {d: len(stack.app.pids(d)) for d in ("Preprocess", "Infer")}
    replay.fault()
    try:
        for deployment in ("Preprocess", "Infer"):
            await asyncio.to_thread(stack.app.scale, deployment, 1, wait=False)
        drained = await harness.follow(
            replay,
            timeout_s=90,
            until=lambda: len(stack.app.pids("Infer")) == len(stack.app.pids("Preprocess")) == 1,
        )
        finished = await harness.follow(replay, timeout_s=120)
        pending = await harness.settle(replay)
        outcome = await harness.outcome(
            "7 scale-down (drain)",
            replay,
            pending=pending,
            note=f"Ray; Preprocess {before['Preprocess']}->1 and Infer {before['Infer']}->1 mid-stream",
        )
        await harness.record(outcome, replay, runner="ray")
        await harness.close(replay)
    finally:
        for deployment in ("Preprocess", "Infer"):
            await asyncio.to_thread(stack.app.scale, deployment, REPLICAS[deployment], wait=False)
        await asyncio.to_thread(stack.app.wait_replicas, timeout_s=120)
    assert drained, "Serve did not remove the replicas"
    assert finished, f"{replay.sink.distinct}/{FRAMES} results"
    assert (outcome.lost, outcome.duplicates, outcome.pending) == (0, 0, 0), outcome


# -- SIGTERM of a stage process, on the processes runner, through an ACL user with a password ------

ACL_USER, ACL_PASSWORD = "framestream", "stage-secret"
ACL_COMMANDS = ["+@all", "-@dangerous", "+info"]
"""What the stages need: every command on the pipeline's keys (``fs:*``), nothing dangerous (no
CONFIG, FLUSHALL, KEYS, DEBUG, ACL, ...)."""


async def test_sigterm_a_stage_process_drains_through_an_acl_user_with_a_password(
    model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The four stages as `framestream stage` processes (no Ray) against a redis-server that needs a
    password, logged in as a restricted ACL user whose name and password come only from the
    environment; mid-stream the infer process gets SIGTERM, drains and exits 0, and a new one
    takes over: every frame has exactly one result and nothing stays pending."""
    settings = fault_settings(model_cache)
    settings = settings.model_copy(
        update={"streams": settings.streams.model_copy(update={"pipeline": "acl"})}
    )
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))  # no credentials in it
    monkeypatch.setenv("FRAMESTREAM_REDIS__USERNAME", ACL_USER)
    monkeypatch.setenv("FRAMESTREAM_REDIS__PASSWORD", ACL_PASSWORD)
    keys = PipelineKeys("acl")
    procs: list[StageProcess] = []
    with RedisServer(password="admin-secret") as server:
        admin = await connect(server.url)
        await admin.acl_setuser(ACL_USER, enabled=True, passwords=[f"+{ACL_PASSWORD}"], keys=["fs:*"],
                                channels=["*"], commands=ACL_COMMANDS)  # fmt: skip
        await admin.aclose()
        url = f"redis://127.0.0.1:{server.port}/0"
        client = await connect(url, username=ACL_USER, password=ACL_PASSWORD)
        with pytest.raises(aioredis.ResponseError, match="no permissions"):
            await client.flushall()  # the stages' user really is restricted
        try:
            await create_groups(client, keys, [MODEL])
            for stage in ("preprocess", "infer", "postprocess", "ingest"):
                procs.append(
                    StageProcess(stage, None if stage == "ingest" else MODEL, url, config, f"{stage}-1")
                )
            harness = Harness(client, keys, MODEL, tmp_path, settings.streams.claim_idle_ms)
            frames = 3_000
            replay = await harness.replay("7b-sigterm-infer", frames)
            assert await harness.follow(replay, timeout_s=120, until=lambda: replay.sink.distinct >= 600)
            infer = procs[1]
            infer.terminate()
            replay.fault()
            code = await asyncio.to_thread(infer.wait, settings.streams.drain_timeout_s + 10)
            procs.append(StageProcess("infer", MODEL, url, config, "infer-2"))
            finished = await harness.follow(replay, timeout_s=180)
            pending = await harness.settle(replay)
            outcome = await harness.outcome(
                "7b SIGTERM infer process",
                replay,
                pending=pending,
                note=f"processes runner; ACL user + password from env; drained, exit code {code}",
            )
            await harness.record(outcome, replay, runner="processes")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                await asyncio.to_thread(proc.wait, 15)
            await client.aclose()
    assert code == 0
    assert finished, f"{replay.sink.distinct}/{frames} results"
    assert (outcome.lost, outcome.duplicates, outcome.pending) == (0, 0, 0), outcome
