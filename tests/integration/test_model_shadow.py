"""A shadow version beside the active one on the same frames, then promoted: the four stage loops
against a real redis-server and real OpenVINO, two versions of one model in a model repository."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from stream.adapters.redis.server import RedisServer
from stream.adapters.redis.source_registry import SourceSpec, add_source, remove_source
from stream.core.keys import PipelineKeys
from stream.readers.model_stats import models_overview
from stream.zoo.repository import ModelRepository
from tests.integration.test_model_swap import (
    MODEL,
    all_results,
    looping_clip,
    results_by_frame,
    swap_settings,
)
from tests.integration.test_stages import pipeline
from tests.model_versions import StreamTap, add_version, offline_scores
from tests.waiting import until

__all__ = ["looping_clip"]  # the fixture, shared


async def shadow_done(client, keys: PipelineKeys) -> bool:
    """The shadow group has read and acked every tensor."""
    for g in await client.xinfo_groups(keys.tensors(MODEL)):
        if g["name"] == f"shadow:{MODEL}".encode():
            return g["pending"] == 0 and g["lag"] == 0
    return False


async def test_a_shadow_compares_on_the_same_frames_writes_only_its_stream_and_promotes_without_a_gap(
    redis_server: RedisServer, redis_client, tmp_path: Path, looping_clip: Path
) -> None:
    repo = ModelRepository(tmp_path / "repo")
    add_version(repo, MODEL, seed=1)
    add_version(repo, MODEL, seed=2, activate=False)
    settings = swap_settings(tmp_path)
    keys = PipelineKeys()
    async with (
        StreamTap(redis_client, keys.tensors(MODEL)) as tensors,
        StreamTap(redis_client, keys.results) as results,
        StreamTap(redis_client, keys.shadow(MODEL)) as shadow,
        pipeline(redis_server.url, settings, [MODEL]),
    ):
        await add_source(redis_client, keys, "loop", SourceSpec(uri=str(looping_clip), loop=True))
        await until(lambda: len(results.metas("result")) >= 200, timeout_s=120, what="200 results")
        repo.set_shadow(MODEL, 2)
        await until(lambda: len(shadow.messages) >= 400, timeout_s=120, what="400 shadow scores")
        await remove_source(redis_client, keys, "loop")
        await until(lambda: results.metas("eos"), timeout_s=60, what="the loop source's eos")
        await until(lambda: all_results(results), timeout_s=60, what="a result for every frame")
        await until(lambda: shadow_done(redis_client, keys), timeout_s=60, what="the shadow through")
        # the agreement, as the API (GET /v1/models) reports it
        overview = await models_overview(redis_client, keys, repo, now_ms=time.time() * 1000)
        reported = overview[0]["agreement"]
        await shadow.catch_up()
        await results.catch_up()
        compared = set(results_by_frame(results.metas("result"))) & {
            (m.meta["source"], m.meta["seq"]) for m in shadow.messages
        }
        shadow_seen = len(shadow.messages)
        # promoted under load (a second source): no gap, no load (the shadow's engine serves)
        await add_source(redis_client, keys, "loop2", SourceSpec(uri=str(looping_clip), loop=True))
        await until(
            lambda: sum(r["source"] == "loop2" for r in results.metas("result")) >= 300,
            timeout_s=120, what="300 results of loop2",
        )  # fmt: skip
        repo.promote(MODEL)
        await until(
            lambda: sum(r["model_version"] == 2 for r in results.metas("result")) >= 200,
            timeout_s=120, what="200 results of the promoted version",
        )  # fmt: skip
        await remove_source(redis_client, keys, "loop2")
        await until(lambda: len(results.metas("eos")) == 2, timeout_s=60, what="loop2's eos")
        await until(lambda: all_results(results), timeout_s=60, what="a result for every frame")
        groups = {g["name"].decode() for g in await redis_client.xinfo_groups(keys.tensors(MODEL))}
        groups.discard(StreamTap.GROUP)  # the test's own reader
        dead = await redis_client.xlen(keys.dead)

    # exactly what running both versions on those tensors says
    tensor_of = {(m.meta["source"], m.meta["seq"]): m.array for m in tensors.of_kind("frame")}
    keys_compared = sorted(compared)
    x = np.stack([tensor_of[k] for k in keys_compared])
    active_top = np.argmax(offline_scores(repo, MODEL, 1, x, tmp_path / "cache"), axis=1)
    shadow_top = np.argmax(offline_scores(repo, MODEL, 2, x, tmp_path / "cache"), axis=1)
    pairs = Counter(
        (f"class_{a}", f"class_{s}") for a, s in zip(active_top, shadow_top, strict=True) if a != s
    )
    assert [(m["name"], m["active"], m["shadow"]) for m in overview] == [(MODEL, 1, 2)]
    assert (reported["active_version"], reported["shadow_version"]) == (1, 2)
    assert reported["frames"] == len(keys_compared) >= 300
    assert reported["agreed"] == int(np.sum(active_top == shadow_top))
    assert reported["top1_agreement"] == reported["agreed"] / reported["frames"]
    top = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert reported["disagreements"] == [{"active": a, "shadow": s, "frames": c} for (a, s), c in top]
    assert reported["shadow_infer_ms"] > 0

    # the shadow wrote only its own stream: every result of the first source is version 1's,
    # one per frame; no dead letter
    frames = results_by_frame(results.metas("result"))
    eos = {e["source"]: e["frames"] for e in results.metas("eos")}
    for source in ("loop", "loop2"):
        assert sorted(seq for src, seq in frames if src == source) == list(range(eos[source])), source
    assert {r["model_version"] for (src, _), r in frames.items() if src == "loop"} == {1}
    assert dead == 0 and shadow_seen >= 400
    # promoted with no gap: by seq, version 1 then version 2, and the shadow group is gone
    versions = [frames[("loop2", s)]["model_version"] for s in range(eos["loop2"])]
    switch = versions.index(2)
    assert set(versions[:switch]) == {1} and set(versions[switch:]) == {2}
    assert groups == {f"infer:{MODEL}"}
