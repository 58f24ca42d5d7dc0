"""The four stage loops in one process against a real redis-server (the processes runner and the
Ray layer run these same loops): ordering, exactly one result per frame, dead letters, two models,
sources added and removed while running."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from stream.adapters.metrics import metrics
from stream.adapters.redis.client import connect
from stream.adapters.redis.server import RedisServer
from stream.adapters.redis.source_registry import SourceSpec, add_source, list_sources, remove_source
from stream.core.codec import Message, decode_message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.settings import Settings
from stream.stages import build_stage
from tests.clips import SCENE_PHOTOS, read_photo, scene_frames, write_clip
from tests.waiting import until

V1 = "mobilenet-v1-0.25-128-quant"
V2 = "mobilenet-v2-1.0-224-quant"


def make_settings(tmp_path: Path, weights: Path | None, **ingest: object) -> Settings:
    return Settings(
        streams={"claim_idle_ms": 1_000, "block_ms": 50, "drain_timeout_s": 5},
        infer={"max_batch_size": 8, "max_wait_ms": 5, "inflight": 2},
        postprocess={"reorder_max_wait_ms": 5_000, "hysteresis_frames": 3},
        models={"weights_dir": weights, "cache_dir": tmp_path / "cache"},
        ingest=ingest,
    )


class Pipeline:
    """Stage loops as tasks on this event loop, each with its own Redis connection."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url, self.settings = url, settings
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.stages: list = []
        self.clients: list = []

    async def start(self, name: str, model: str | None = None, consumer: str | None = None):
        client = await connect(self.url)
        self.clients.append(client)
        stage = await asyncio.to_thread(
            build_stage,
            name,
            self.settings,
            client,
            consumer=consumer or f"{name}-{len(self.stages)}",
            model=model,
        )
        self.stages.append(stage)
        self.tasks.append(asyncio.create_task(stage.run(self.stop), name=name))
        return stage

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 30)
        for c in self.clients:
            await c.aclose()


@contextlib.asynccontextmanager
async def pipeline(url: str, settings: Settings, models: list[str]) -> AsyncIterator[Pipeline]:
    p = Pipeline(url, settings)
    keys = PipelineKeys(settings.streams.pipeline)
    client = await connect(url)
    for m in models:  # groups up front, so ingest never outruns a group that does not exist yet
        with contextlib.suppress(Exception):
            await client.xgroup_create(keys.frames, keys.group("preprocess", m), id="0", mkstream=True)
    await client.aclose()
    try:
        for m in models:
            await p.start("preprocess", m)
            await p.start("infer", m)
            await p.start("postprocess", m)
        await p.start("ingest")
        yield p
    finally:
        await p.close()
        for task in p.tasks:
            if task.done() and task.exception():
                raise task.exception()  # type: ignore[misc]


async def collect_results(client, keys: PipelineKeys, want_eos: set[tuple[str, str]], timeout_s: float = 60):
    """Every result entry until an eos arrived for each (source, model) in `want_eos`."""
    results: list[dict] = []
    eos: dict[tuple[str, str], dict] = {}
    last = "0"
    deadline = time.monotonic() + timeout_s
    while not want_eos <= set(eos):
        assert time.monotonic() < deadline, f"no eos for {want_eos - set(eos)} after {timeout_s} s"
        reply = await client.xread({keys.results: last}, count=500, block=200)
        for _, items in reply or []:
            for entry_id, fields in items:
                last = entry_id
                meta = decode_message(fields[FIELD.encode()]).meta
                if meta["kind"] == "eos":
                    eos[(meta["source"], meta["model"])] = meta
                else:
                    results.append(meta)
    return results, eos


@pytest.fixture
def weights(shared_dir: Path) -> Path:
    return shared_dir / "models"


@pytest.fixture
def clip(tmp_path: Path, shared_dir: Path) -> Path:
    frames = []
    for photo in SCENE_PHOTOS[:3]:
        frames += scene_frames(read_photo(shared_dir / "images" / photo), 12, (320, 240))
    return write_clip(tmp_path / "clip.mp4", frames)


@pytest.mark.parametrize("straight", [True, False], ids=["straight-to-tensors", "all-through-preprocess"])
async def test_clip_through_the_four_stages_one_result_per_frame_in_order(
    redis_server: RedisServer, redis_client, tmp_path: Path, weights: Path, clip: Path, straight: bool
) -> None:
    settings = make_settings(tmp_path, weights, straight_to_tensors=straight)
    keys = PipelineKeys()
    async with pipeline(redis_server.url, settings, [V1]):
        await add_source(redis_client, keys, "cam1", SourceSpec(uri=str(clip)))
        results, eos = await collect_results(redis_client, keys, {("cam1", V1)})
    assert [r["seq"] for r in results] == list(range(36))
    assert eos[("cam1", V1)]["frames"] == 36 and eos[("cam1", V1)]["results"] == 36
    r = results[5]
    assert r["label"] == r["top"][0][0] and len(r["top"]) == 5 and 0 < r["score"] <= 1
    # raw frames ingest made to the model's input have nothing left for preprocess: they skip it
    # when ingest.straight_to_tensors is on, and go through it when it is off
    stages = [set(r["stages_ms"]) for r in results]
    passed = {"ingest", "infer", "postprocess"} | (set() if straight else {"preprocess"})
    assert stages == [passed] * 36
    assert r["latency_ms"] > 0
    assert all(1 <= r["batch_size"] <= 8 for r in results), [r["batch_size"] for r in results]
    # the cat scene (seq 0-11) reads as a cat once smoothing settles; not "frame 0 is a cat": the
    # quantized v1 can tie Egyptian cat with mortarboard on that frame (0.0898 each), and which
    # wins by one quantization step depends on the batch size it ran in, i.e. on the load
    cat_scene = results[:12]
    assert cat_scene[-1]["smoothed_label"].startswith("Egyptian cat"), [r["top"][:2] for r in cat_scene]
    assert sum(r["label"].startswith("Egyptian cat") for r in cat_scene) > len(cat_scene) // 2
    # the label-change events name each switch between scenes
    events = [decode_message(f[FIELD.encode()]).meta for _, f in await redis_client.xrange(keys.events)]
    assert events[0]["previous"] is None and len(events) >= 3
    assert (await list_sources(redis_client, keys))[0].done
    # everything acked: nothing pending in any group
    for stream in (keys.frames, keys.tensors(V1), keys.scores(V1)):
        for g in await redis_client.xinfo_groups(stream):
            assert g["pending"] == 0, (stream, g)


async def test_end_to_end_latency_histogram_counts_every_result_with_its_queueing(
    redis_server: RedisServer, redis_client, tmp_path: Path, weights: Path, clip: Path
) -> None:
    """framestream_e2e_latency_seconds{model}: one observation per result, capture to result."""
    settings = make_settings(tmp_path, weights)
    keys = PipelineKeys()
    count_before, sum_before = metrics.tally("e2e_latency", model=V1)
    async with pipeline(redis_server.url, settings, [V1]):
        await add_source(redis_client, keys, "cam-e2e", SourceSpec(uri=str(clip)))
        results, _ = await collect_results(redis_client, keys, {("cam-e2e", V1)})
    count, total_s = metrics.tally("e2e_latency", model=V1)
    count, total_s = count - count_before, total_s - sum_before
    assert count == len(results) == 36
    # the same numbers the results carry, in seconds
    assert total_s == pytest.approx(sum(r["latency_ms"] for r in results) / 1000.0, rel=1e-3)
    # capture to result covers every stage's time and the waits between them
    stage_s = sum(sum(r["stages_ms"].values()) for r in results) / 1000.0
    assert total_s / count >= stage_s / count > 0
    assert total_s / count < 60  # seconds, not milliseconds


async def _scores(client, keys: PipelineKeys, model: str, after: str, n: int) -> tuple[list[dict], str]:
    """The next `n` entries of the model's scores stream after id `after`, and the last id read."""
    metas: list[dict] = []
    deadline = time.monotonic() + 60
    while len(metas) < n:
        assert time.monotonic() < deadline, f"{len(metas)} of {n} scores after 60 s"
        for _, items in await client.xread({keys.scores(model): after}, count=n, block=200) or []:
            for entry_id, fields in items:
                after = entry_id
                metas.append(decode_message(fields[FIELD.encode()]).meta)
    return metas, after


async def test_infer_batches_a_backlog_across_sources_and_sends_a_trickle_alone_within_max_wait(
    redis_server: RedisServer, redis_client, tmp_path: Path
) -> None:
    """Dynamic batching in the stream path. A backlog from two sources leaves infer in batches larger
    than one that mix the sources; a trickle (the next tensor only once the last one's scores are
    out) leaves in batches of one, no later than `max_wait_ms` after it arrived."""
    model = "mobilenet-v1-0.25-128"  # its synthetic stand-in: no weights needed
    max_batch, max_wait_ms = 8, 100
    settings = Settings(
        streams={"claim_idle_ms": 1_000, "block_ms": 50, "drain_timeout_s": 5},
        infer={"max_batch_size": max_batch, "max_wait_ms": max_wait_ms, "inflight": 1, "batch_tuning": False},
        models={"weights_dir": None, "cache_dir": tmp_path / "cache"},
    )
    keys = PipelineKeys()
    tensor = np.zeros((128, 128, 3), np.uint8)

    async def publish(source: str, seq: int) -> None:
        meta = {
            "kind": "frame",
            "source": source,
            "seq": seq,
            "capture_ms": time.time() * 1000,
            "model": model,
        }
        await redis_client.xadd(
            keys.tensors(model), {FIELD: encode_message(Message(meta=meta, array=tensor))}
        )

    for seq in range(16):
        for source in ("cam-a", "cam-b"):
            await publish(source, seq)
    stages = Pipeline(redis_server.url, settings)
    try:
        await stages.start("infer", model)
        backlog, last = await _scores(redis_client, keys, model, "0", 32)
        batches: dict[float, list[dict]] = {}  # one `done` stamp per batch
        for meta in backlog:
            batches.setdefault(meta["stamps"]["infer"][1], []).append(meta)
        sizes = [len(b) for b in batches.values()]
        assert all(m["batch_size"] == len(b) for b in batches.values() for m in b), sizes
        assert sum(sizes) == 32 and max(sizes) > 1 and max(sizes) <= max_batch, sizes
        assert any({m["source"] for m in b} == {"cam-a", "cam-b"} for b in batches.values()), sizes
        for seq in range(16, 21):
            await publish("cam-a", seq)
            (alone,), last = await _scores(redis_client, keys, model, last, 1)
            assert (alone["seq"], alone["batch_size"]) == (seq, 1)
            assert alone["batch_wait_ms"] <= max_wait_ms + 100, alone  # + scheduling slack
    finally:
        await stages.close()


async def test_corrupt_frame_is_dead_lettered_every_other_frame_gets_a_result(
    redis_server: RedisServer, redis_client, tmp_path: Path, weights: Path
) -> None:
    """Frames pushed straight into the frames stream, one of them garbage JPEG."""
    settings = make_settings(tmp_path, weights)
    keys = PipelineKeys()
    photo = read_photo(weights.parent / "images" / "cat.bmp")
    frames = scene_frames(photo, 20, (160, 120))
    from stream.adapters.media.jpeg import encode_jpeg

    async with pipeline(redis_server.url, settings, [V1]):
        for seq, rgb in enumerate(frames):
            data = np.frombuffer(encode_jpeg(rgb), np.uint8)
            if seq == 9:
                data = np.frombuffer(b"\xff\xd8not a jpeg at all" * 10, np.uint8)
            meta = {
                "kind": "frame",
                "source": "push",
                "seq": seq,
                "capture_ms": time.time() * 1000,
                "encoding": "jpeg",
            }
            await redis_client.xadd(keys.frames, {FIELD: encode_message(Message(meta=meta, array=data))})
        await redis_client.xadd(keys.frames, {FIELD: b"garbage that is no message"})
        eos = {"kind": "eos", "source": "push", "seq": 20}
        await redis_client.xadd(keys.frames, {FIELD: encode_message(Message(meta=eos))})
        started = time.monotonic()
        results, eos_meta = await collect_results(redis_client, keys, {("push", V1)})
        waited = time.monotonic() - started
    assert [r["seq"] for r in results] == [s for s in range(20) if s != 9]
    assert eos_meta[("push", V1)]["skipped"] == 1
    dead = [(f[b"stage"], f[b"reason"].decode()) for _, f in await redis_client.xrange(keys.dead)]
    assert len(dead) == 2 and {d[0] for d in dead} == {b"preprocess"}
    assert any("JPEG" in reason for _, reason in dead) and any("undecodable" in r for _, r in dead)
    # the skip marker let the reorder buffer move on instead of waiting out its timeout
    assert waited < 30


async def test_raw_frames_cut_short_or_of_the_wrong_shape_or_dtype_are_dead_letters_with_skips(
    redis_server: RedisServer, redis_client, tmp_path: Path, weights: Path
) -> None:
    """Raw frames pushed straight into the frames stream: three bad ones, each a dead letter with
    its reason and a skip marker (postprocess moves on); every other frame gets its result."""
    settings = make_settings(tmp_path, weights)
    keys = PipelineKeys()
    frames = scene_frames(read_photo(weights.parent / "images" / "cat.bmp"), 12, (128, 128))
    bad = {3: "wrong payload length", 6: "uint8 HxWx3", 9: "uint8 HxWx3"}

    def entry(seq: int, rgb: np.ndarray) -> bytes:
        meta = {"kind": "frame", "source": "push", "seq": seq, "capture_ms": time.time() * 1000}
        meta |= {"encoding": "raw", "fit": "stretch 128x128 shorter=None pad=0"}
        if seq == 6:
            rgb = rgb[:, :, 0]  # one channel: the shape is wrong
        if seq == 9:
            rgb = rgb.astype(np.float32)
        data = encode_message(Message(meta=meta, array=rgb))
        return data[:-1000] if seq == 3 else data  # the header says 128x128x3, the bytes run out

    async with pipeline(redis_server.url, settings, [V1]):
        for seq, rgb in enumerate(frames):
            await redis_client.xadd(keys.frames, {FIELD: entry(seq, rgb)})
        eos = {"kind": "eos", "source": "push", "seq": len(frames)}
        await redis_client.xadd(keys.frames, {FIELD: encode_message(Message(meta=eos))})
        results, eos_meta = await collect_results(redis_client, keys, {("push", V1)})
    assert [r["seq"] for r in results] == [s for s in range(12) if s not in bad]
    # each lost frame was a skip marker, not a gap the reorder buffer gave up waiting on
    assert eos_meta[("push", V1)]["skipped"] == 3 and eos_meta[("push", V1)]["gaps"] == 0
    dead = [(f[b"stage"], f[b"reason"].decode()) for _, f in await redis_client.xrange(keys.dead)]
    assert len(dead) == 3 and {d[0] for d in dead} == {b"preprocess"}
    for (_, reason), why in zip(dead, bad.values(), strict=True):
        assert why in reason, reason
    assert "float32" in dead[2][1] and "(128, 128)" in dead[1][1]


async def test_a_tensor_cut_short_is_a_dead_letter_of_infer_with_a_skip(
    redis_server: RedisServer, redis_client, tmp_path: Path, weights: Path
) -> None:
    """A tensor whose bytes run out before its header's shape (written straight into the tensors
    stream): infer dead-letters it with the reason and sends a skip marker, so postprocess moves
    on at once instead of waiting out its reorder timeout; every other frame gets its result."""
    settings = make_settings(tmp_path, weights)
    keys = PipelineKeys()
    frames = scene_frames(read_photo(weights.parent / "images" / "cat.bmp"), 8, (128, 128))
    async with pipeline(redis_server.url, settings, [V1]):
        for seq, rgb in enumerate(frames):
            meta = {"kind": "frame", "source": "push", "seq": seq, "capture_ms": time.time() * 1000}
            if seq == 5:
                data = encode_message(Message(meta={**meta, "model": V1}, array=rgb))[:-1000]
                await redis_client.xadd(keys.tensors(V1), {FIELD: data})
                continue
            meta |= {"encoding": "raw", "fit": "stretch 128x128 shorter=None pad=0"}
            await redis_client.xadd(keys.frames, {FIELD: encode_message(Message(meta=meta, array=rgb))})
        eos = {"kind": "eos", "source": "push", "seq": len(frames)}
        await redis_client.xadd(keys.frames, {FIELD: encode_message(Message(meta=eos))})
        results, eos_meta = await collect_results(redis_client, keys, {("push", V1)})
    assert [r["seq"] for r in results] == [s for s in range(8) if s != 5]
    assert eos_meta[("push", V1)]["skipped"] == 1 and eos_meta[("push", V1)]["gaps"] == 0
    dead = [(f[b"stage"], f[b"reason"].decode()) for _, f in await redis_client.xrange(keys.dead)]
    assert len(dead) == 1 and dead[0][0] == b"infer" and "wrong payload length" in dead[0][1], dead


@pytest.mark.slow
async def test_two_models_from_one_frames_stream_each_get_every_frame(
    redis_server: RedisServer, redis_client, tmp_path: Path, weights: Path, clip: Path
) -> None:
    settings = make_settings(tmp_path, weights)
    keys = PipelineKeys()
    async with pipeline(redis_server.url, settings, [V1, V2]):
        await add_source(redis_client, keys, "cam1", {"uri": str(clip), "every_nth": 2})
        results, eos = await collect_results(redis_client, keys, {("cam1", V1), ("cam1", V2)})
    for model in (V1, V2):
        assert sorted(r["seq"] for r in results if r["model"] == model) == list(range(18))
        assert eos[("cam1", model)]["frames"] == 18
    assert await redis_client.xlen(keys.frames) <= 19  # the frames stream is trimmed once both groups acked


async def test_unreadable_source_ends_with_an_error_and_the_loop_keeps_going(
    redis_server: RedisServer, redis_client, tmp_path: Path, weights: Path, clip: Path
) -> None:
    settings = make_settings(tmp_path, weights)
    keys = PipelineKeys()
    bogus = tmp_path / "broken.mp4"
    bogus.write_bytes(b"\x00" * 1000)
    async with pipeline(redis_server.url, settings, [V1]):
        await add_source(redis_client, keys, "bad", {"uri": str(bogus)})
        await add_source(redis_client, keys, "good", {"uri": str(clip), "every_nth": 4})
        results, eos = await collect_results(redis_client, keys, {("bad", V1), ("good", V1)})
    assert "cannot open video" in eos[("bad", V1)]["error"] and eos[("bad", V1)]["frames"] == 0
    assert [r["seq"] for r in results if r["source"] == "good"] == list(range(9))
    status = {s.source_id: s for s in await list_sources(redis_client, keys)}
    assert status["bad"].error and status["good"].done and not status["good"].error


async def test_looping_source_can_be_removed_while_running(
    redis_server: RedisServer, redis_client, tmp_path: Path, weights: Path, clip: Path
) -> None:
    settings = make_settings(tmp_path, weights, high_water=50)
    keys = PipelineKeys()
    async with pipeline(redis_server.url, settings, [V1]):
        await add_source(redis_client, keys, "loop", {"uri": str(clip), "loop": True})

        async def looped() -> bool:
            state = json.loads(await redis_client.hget(keys.source_state, "loop") or "{}")
            return int(state.get("next_seq", 0)) >= 80

        await until(looped, timeout_s=60, what="80 frames of the looping source")
        assert await remove_source(redis_client, keys, "loop")
        results, eos = await collect_results(redis_client, keys, {("loop", V1)})
    n = eos[("loop", V1)]["frames"]
    assert n >= 80 and eos[("loop", V1)]["reason"] == "removed"
    assert [r["seq"] for r in results] == list(range(n))  # the clip played more than twice, seq kept rising


async def test_entries_held_by_a_dead_consumer_are_reclaimed_and_finished(
    redis_server: RedisServer, redis_client, tmp_path: Path, weights: Path
) -> None:
    """A preprocess consumer read frames and died before acking: the live one reclaims them."""
    from stream.adapters.media.jpeg import encode_jpeg
    from stream.settings import PostprocessSettings

    # the reorder buffer must outwait the reclaim (claim_idle_ms=1000) to keep results in order
    settings = make_settings(tmp_path, weights).model_copy(
        update={"postprocess": PostprocessSettings(reorder_max_wait_ms=10_000)}
    )
    keys = PipelineKeys()
    group = keys.group("preprocess", V1)
    await redis_client.xgroup_create(keys.frames, group, id="0", mkstream=True)
    photo = read_photo(weights.parent / "images" / "parrot.jpg")
    for seq, rgb in enumerate(scene_frames(photo, 10, (160, 120))):
        meta = {
            "kind": "frame",
            "source": "ghosted",
            "seq": seq,
            "capture_ms": time.time() * 1000,
            "encoding": "jpeg",
        }
        array = np.frombuffer(encode_jpeg(rgb), np.uint8)
        await redis_client.xadd(keys.frames, {FIELD: encode_message(Message(meta=meta, array=array))})
    await redis_client.xadd(
        keys.frames, {FIELD: encode_message(Message(meta={"kind": "eos", "source": "ghosted", "seq": 10}))}
    )
    taken = await redis_client.xreadgroup(group, "ghost", {keys.frames: ">"}, count=6)
    assert len(taken[0][1]) == 6  # the ghost holds seq 0..5 and never acks them
    async with pipeline(redis_server.url, settings, [V1]):
        results, eos = await collect_results(redis_client, keys, {("ghosted", V1)})
    assert [r["seq"] for r in results] == list(range(10))
    assert eos[("ghosted", V1)]["gaps"] == 0
    pending = await redis_client.xpending(keys.frames, group)
    assert pending["pending"] == 0


async def test_entries_delivered_to_a_live_consumer_that_never_got_them_are_taken_back(
    redis_server: RedisServer, redis_client, tmp_path: Path, weights: Path
) -> None:
    """A read whose reply was lost: Redis delivered entries to the live preprocess consumer (the
    read ran after its connection had been given up, as when a host's route to Redis comes back),
    but the loop never received them. Nobody else may take them (the consumer is not silent); the
    loop finds them pending under its own name, idle and not held, and handles them."""
    from stream.adapters.media.jpeg import encode_jpeg

    settings = make_settings(tmp_path, weights)
    keys = PipelineKeys()
    group = keys.group("preprocess", V1)
    photo = read_photo(weights.parent / "images" / "parrot.jpg")
    async with pipeline(redis_server.url, settings, [V1]) as p:
        consumer = p.stages[0].consumer
        assert p.stages[0].name == "preprocess"
        async with redis_client.pipeline(transaction=True) as tx:  # Redis serves the loop's blocked
            for seq, rgb in enumerate(scene_frames(photo, 6, (160, 120))):  # read only after EXEC
                meta = {"kind": "frame", "source": "lost", "seq": seq, "capture_ms": time.time() * 1000,
                        "encoding": "jpeg"}  # fmt: skip
                array = np.frombuffer(encode_jpeg(rgb), np.uint8)
                tx.xadd(keys.frames, {FIELD: encode_message(Message(meta=meta, array=array))})
            tx.xadd(
                keys.frames,
                {FIELD: encode_message(Message(meta={"kind": "eos", "source": "lost", "seq": 6}))},
            )
            tx.xreadgroup(group, consumer, {keys.frames: ">"}, count=100)
            *_, lost = await tx.execute()
        assert len(lost[0][1]) == 7  # every entry went to the loop's name, none to the loop
        results, eos = await collect_results(redis_client, keys, {("lost", V1)}, timeout_s=30)
    assert sorted(r["seq"] for r in results) == list(range(6))
    assert (await redis_client.xpending(keys.frames, group))["pending"] == 0
