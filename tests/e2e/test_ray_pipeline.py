"""The pipeline as one Ray Serve application: per-stage autoscaling, replica loss, the HTTP ingress.

One local Ray and one deployment of ``deployments/serve/serve_config.yaml`` serve the whole module
(Ray takes ~5 s to start and the application ~20 s to deploy on 2 cores). Tests keep apart by
source id. The model is the real v2 TFLite file from ../shared when present, else a synthetic
stand-in of the same architecture (the label checks then skip).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from deployments.serve.status import replica_states
from stream.adapters.redis.client import connect
from stream.adapters.redis.entries import text
from stream.adapters.redis.server import RedisServer, find_free_port
from stream.core.codec import Message, decode_message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.sources.ids import source_id
from stream.settings import load_settings
from tests.leftovers import stop_ray
from tests.waiting import poll

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    # the config sets metrics_interval_s, which Serve 2.60 still reads (default 10 s) but calls deprecated
    pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning"),
]

REAL_MODEL = "mobilenet-v2-1.0-224-quant"
KEYS = PipelineKeys("p")
FAST_SCALING = {
    "autoscaling_config": {
        "upscale_delay_s": 1,
        "downscale_delay_s": 6,
        "look_back_period_s": 2,
        "metrics_interval_s": 0.5,
    }
}


@dataclass
class App:
    base_url: str
    redis_url: str
    model: str
    real: bool
    input_hw: tuple[int, int]


@pytest.fixture(scope="module")
def app(redis_server: RedisServer) -> Iterator[App]:
    from deployments.serve.app import APP_NAME
    from deployments.serve.config import deploy, load_config, override, start_local_ray
    from stream.runners.setup import choose_model
    from stream.zoo.repository import load_spec
    from tests.conftest import SHARED

    real = (SHARED / "models" / "mobilenet_v2_1.0_224_quant.tflite").is_file()
    weights_dir = str(SHARED / "models") if real else None
    settings = load_settings(models={"weights_dir": weights_dir})
    model, synthetic = choose_model(REAL_MODEL if real else None, settings)
    assert synthetic != real
    start_local_ray(num_cpus=2)
    port = find_free_port()
    config = override(
        load_config(),
        args={
            "model": model,
            "settings": {
                "redis": {"url": redis_server.url},
                "models": {"weights_dir": weights_dir},
                # one small batch in flight: a burst outlasts a replica's start-up on 2 cores
                "infer": {"max_batch_size": 4, "inflight": 1},
                # entries are reclaimed from a consumer only after 15 s idle: on a shared 2-core box
                # (load average 20 seen) one batch took 7 s, and a shorter claim_idle_ms turns a
                # slow-but-alive replica's entries into duplicates, which is not what this measures
                "streams": {"claim_idle_ms": 15000, "drain_timeout_s": 10},
            },
            "ingress": {"max_image_bytes": 2_000_000},
        },
        http={"host": "127.0.0.1", "port": port},
        deployments={"Infer": FAST_SCALING, "Preprocess": FAST_SCALING},
    )
    try:
        deploy(config, timeout_s=240)
        yield App(f"http://127.0.0.1:{port}", redis_server.url, model, real, load_spec(model).input_hw)
    finally:
        serve.delete(APP_NAME)
        serve.shutdown()
        stop_ray()  # and what ray.shutdown leaves running


def _replicas() -> dict[str, dict[str, int]]:
    from deployments.serve.app import APP_NAME

    return replica_states(APP_NAME)


def _live(states: dict[str, int]) -> int:
    """Replicas that are running or on their way (not stopping)."""
    return sum(v for k, v in states.items() if "STOPPING" not in k)


async def _wait(condition: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.25) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(every_s)


def _tensor_message(source: str, seq: int, model: str, array: np.ndarray) -> bytes:
    now = time.time() * 1000.0
    meta = {
        "kind": "frame",
        "source": source,
        "seq": seq,
        "model": model,
        "capture_ms": now,
        "ingest_ms": now,
    }
    return encode_message(Message(meta=meta, array=array))


def _eos_message(source: str, frames: int) -> bytes:
    return encode_message(Message(meta={"kind": "eos", "source": source, "seq": frames}))


async def _results(client, source: str) -> tuple[Counter[int], dict | None]:
    """Result count per seq of `source` on the results stream, and its end-of-stream entry."""
    seqs: Counter[int] = Counter()
    eos = None
    last = "-"
    while True:
        page = await client.xrange(KEYS.results, min=last, max="+", count=2000)
        for _id, fields in page:
            meta = decode_message(fields[FIELD.encode()]).meta
            if meta.get("source") != source:
                continue
            if meta["kind"] == "result":
                seqs[int(meta["seq"])] += 1
            elif meta["kind"] == "eos":
                eos = meta
        if len(page) < 2000:
            return seqs, eos
        last = "(" + text(page[-1][0])


async def _wait_eos(client, source: str, timeout_s: float) -> Counter[int]:
    """Results per seq once the end-of-stream is there and every frame it announced has a result
    ("late" results, which the reorder buffer stopped waiting for, may follow the end)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seqs, eos = await _results(client, source)
        if eos is not None and len(seqs) >= eos["frames"] - eos["skipped"]:
            return seqs
        if time.monotonic() > deadline:
            raise AssertionError(f"{source}: no end-of-stream after {timeout_s:.0f} s ({len(seqs)} results)")
        await asyncio.sleep(0.5)


async def _pending_total(client) -> int:
    total = 0
    for stream in await client.keys(f"{KEYS.prefix}:*"):
        if (await client.type(stream)) not in (b"stream", "stream"):
            continue
        for group in await client.xinfo_groups(stream):
            total += int(group["pending"])
    return total


# -- autoscaling ------------------------------------------------------------------------------


async def test_an_inference_burst_scales_infer_alone_up_then_down_without_losing_a_frame(app: App):
    """A burst of tensors builds lag on infer only: Infer gains replicas, the other stages keep
    theirs; after the burst Infer shrinks back while frames still flow, and every frame has
    exactly one result."""
    client = await connect(app.redis_url)
    source, burst = "burst", 1200
    rng = np.random.default_rng(5)
    tensors = [rng.integers(0, 256, (*app.input_hw, 3), dtype=np.uint8) for _ in range(8)]
    stream = KEYS.tensors(app.model)
    async with client.pipeline(transaction=False) as pipe:
        for seq in range(burst):
            pipe.xadd(stream, {FIELD: _tensor_message(source, seq, app.model, tensors[seq % 8])})
        await pipe.execute()

    peak: dict[str, int] = {}

    def infer_at(predicate: Callable[[int], bool]) -> Callable[[], bool]:
        def check() -> bool:
            states = _replicas()
            for name, s in states.items():
                peak[name] = max(peak.get(name, 0), _live(s))
            return predicate(states["Infer"].get("RUNNING", 0))

        return check

    await _wait(infer_at(lambda running: running >= 2), 120, "Infer to run 2+ replicas")
    # after the burst a trickle keeps frames flowing through the scale-down
    seq = burst
    scaled_down = infer_at(lambda running: running == 1)
    deadline = time.monotonic() + 180
    while True:
        backlog = (await client.xinfo_groups(stream))[0]
        drained = int(backlog["lag"] or 0) + int(backlog["pending"]) < 50
        if drained and await asyncio.to_thread(scaled_down) and _live(_replicas()["Infer"]) == 1:
            break
        assert time.monotonic() < deadline, f"Infer did not scale back down: {_replicas()['Infer']}"
        await client.xadd(stream, {FIELD: _tensor_message(source, seq, app.model, tensors[seq % 8])})
        seq += 1
        await asyncio.sleep(0.1)
    for _ in range(20):  # and a little after it
        await client.xadd(stream, {FIELD: _tensor_message(source, seq, app.model, tensors[seq % 8])})
        seq += 1
        await asyncio.sleep(0.05)
    await client.xadd(stream, {FIELD: _eos_message(source, seq)})

    seqs = await _wait_eos(client, source, 180)
    assert peak["Infer"] >= 2
    for other in ("Ingest", "Preprocess", "Postprocess", "Ingress"):
        assert peak[other] == 1, f"{other} should have stayed at 1 replica, peaked at {peak[other]}"
    assert sorted(seqs) == list(range(seq)), f"lost {seq - len(seqs)} of {seq} frames"
    duplicates = sum(n - 1 for n in seqs.values())
    if duplicates:
        dup = sorted(s for s, n in seqs.items() if n > 1)
        page = await client.xrange(KEYS.results, min="-", max="+")
        for _id, fields in page:
            meta = decode_message(fields[FIELD.encode()]).meta
            if meta.get("source") == source and meta.get("seq") in dup[:5]:
                print(_id, {k: meta.get(k) for k in ("seq", "late", "stages_ms", "result_ms", "batch_size")})
        print("dups", dup, "total", seq)
    assert duplicates == 0, f"{duplicates} duplicate results across a graceful scale-down"
    await _wait(lambda: True, 1, "")
    assert await _pending_total(client) == 0
    await client.aclose()


# -- replica loss -----------------------------------------------------------------------------


async def test_a_killed_infer_replica_is_replaced_and_its_pending_entries_reclaimed(app: App):
    """ray.kill on the Infer replica mid-stream: Serve starts another, the dead consumer's pending
    entries are claimed by the new one, and every frame gets a result (duplicates counted)."""
    from deployments.serve.app import APP_NAME

    client = await connect(app.redis_url)
    source, frames = "killed", 400
    stream = KEYS.tensors(app.model)
    rng = np.random.default_rng(9)
    tensor = rng.integers(0, 256, (*app.input_hw, 3), dtype=np.uint8)
    await _wait(lambda: _replicas()["Infer"] == {"RUNNING": 1}, 120, "Infer back at exactly one replica")
    infer = serve.get_deployment_handle("Infer", app_name=APP_NAME)
    victim = await infer.status.remote()

    next_seq = 0

    async def publish(until: int) -> None:
        nonlocal next_seq
        while next_seq < until:
            await client.xadd(stream, {FIELD: _tensor_message(source, next_seq, app.model, tensor)})
            next_seq += 1
            await asyncio.sleep(0.01)

    await publish(frames // 3)
    held = 0
    deadline = time.monotonic() + 30
    while held == 0 and time.monotonic() < deadline:  # kill it while it holds entries
        rows = await client.xpending_range(stream, "infer:" + app.model, "-", "+", 1000, victim["consumer"])
        held = len(rows)
        if held == 0:
            await publish(next_seq + 1)
    ray.kill(ray.get_actor(victim["actor_name"], namespace="serve"), no_restart=True)
    await publish(max(frames, next_seq + 100))
    frames = next_seq
    await client.xadd(stream, {FIELD: _eos_message(source, frames)})

    seqs = await _wait_eos(client, source, 180)
    assert held > 0, "the killed replica held no entries, so nothing was reclaimed"
    assert sorted(seqs) == list(range(frames)), f"lost {frames - len(seqs)} of {frames} frames"
    duplicates = sum(n - 1 for n in seqs.values())
    assert duplicates <= held, f"{duplicates} duplicates, more than the {held} entries it held"
    replacement = await infer.status.remote()
    assert replacement["consumer"] != victim["consumer"]
    left = await client.xpending_range(stream, "infer:" + app.model, "-", "+", 1000, victim["consumer"])
    assert left == [], "the dead consumer still holds entries"
    await client.aclose()


# -- ingress ----------------------------------------------------------------------------------


def _png(path: Path) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.imread(str(path)))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("image", "label", "ctype"),
    [("cat_720p.jpg", "Egyptian cat", "image/jpeg"), ("bird.bmp", "chickadee", "image/png")],
)
async def test_a_pushed_photo_gets_its_label_from_the_real_model(
    app: App, shared_dir: Path, image: str, label: str, ctype: str
):
    if not app.real:
        pytest.skip("real v2 weights are absent: labels of a synthetic model mean nothing")
    path = shared_dir / "images" / image
    body = path.read_bytes() if ctype == "image/jpeg" else _png(path)
    async with httpx.AsyncClient(base_url=app.base_url, timeout=60) as http:
        response = await http.post("/v1/classify", content=body, headers={"content-type": ctype})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["label"] == label
    assert result["model"] == REAL_MODEL
    assert len(result["top"]) == 5


async def test_concurrent_pushes_are_batched(app: App):
    image = np.zeros((*app.input_hw, 3), np.uint8)
    body = cv2.imencode(".png", image)[1].tobytes()
    async with httpx.AsyncClient(base_url=app.base_url, timeout=60) as http:
        responses = await asyncio.gather(
            *[
                http.post("/v1/classify", content=body, headers={"content-type": "image/png"})
                for _ in range(24)
            ]
        )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    assert max(r.json()["batch_size"] for r in responses) > 1


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"\xff" * 2_100_000, {"content-type": "image/jpeg"}, 413),
        (b"GIF89a....", {"content-type": "image/gif"}, 415),
        (b"not an image at all", {"content-type": "image/png"}, 400),
        (b"", {"content-type": "image/jpeg"}, 400),
    ],
    ids=["oversize", "wrong-type", "garbage", "empty"],
)
async def test_bad_pushes_get_json_errors(app: App, body: bytes, headers: dict[str, str], status: int):
    async with httpx.AsyncClient(base_url=app.base_url, timeout=60) as http:
        response = await http.post("/v1/classify", content=body, headers=headers)
    assert response.status_code == status
    assert set(response.json()) == {"error"}
    assert "Traceback" not in response.text


async def test_sources_results_and_health_over_http(app: App, tmp_path: Path):
    """A source added over HTTP plays through the stages; its results come back by seq."""
    from stream.adapters.media.video import write_demo_clip

    clip = write_demo_clip(tmp_path / "http.mp4", frames=40)
    async with httpx.AsyncClient(base_url=app.base_url, timeout=60) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = (await http.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["model"] == app.model
        created = await http.post("/v1/sources", json={"id": "http-clip", "uri": str(clip)})
        assert created.status_code == 201, created.text
        assert (await http.post("/v1/sources", json={"id": "http-clip", "uri": str(clip)})).status_code == 409
        listed = (await http.get("/v1/sources")).json()["sources"]
        assert "http-clip" in [s["id"] for s in listed]
        results: list[dict] = []
        deadline = time.monotonic() + 120
        while len(results) < 40 and time.monotonic() < deadline:
            after = results[-1]["seq"] if results else -1
            page = await http.get("/v1/results/http-clip", params={"after_seq": after})
            assert page.status_code == 200
            results += page.json()["results"]
            await asyncio.sleep(0.3)
        assert [r["seq"] for r in results] == list(range(40))
        (item,) = [s for s in (await http.get("/v1/sources")).json()["sources"] if s["id"] == "http-clip"]
        assert item["status"] in ("playing", "finished") and item["frames"] >= 40, item
        assert (item["reconnects"], item["dropped"]) == (0, 0) and item["last_frame_age_s"] is not None
        assert (await http.get("/v1/results/nobody")).status_code == 404
        assert (await http.delete("/v1/sources/http-clip")).status_code == 204
        assert (await http.delete("/v1/sources/http-clip")).status_code == 404
        # without an id the API names a source as both runners name a --source
        unnamed = await http.post("/v1/sources", json={"uri": str(clip)})
        assert unnamed.status_code == 201 and unnamed.json()["id"] == source_id(str(clip)) == "http"
        assert (await http.delete("/v1/sources/http")).status_code == 204
        missing = await http.get("/v1/no-such-route")
        assert missing.status_code == 404 and "error" in missing.json()
        assert "/v1/classify" in (await http.get("/openapi.json")).json()["paths"]
        stages = (await http.get("/v1/stages")).json()["stages"]
        assert stages["infer"]["replicas"]["RUNNING"] >= 1
        assert stages["preprocess"]["processed"] >= 40


async def test_events_stream_results_as_server_sent_events(app: App):
    client = await connect(app.redis_url)
    received: list[str] = []
    following = asyncio.Event()

    async def listen() -> None:
        async with (
            httpx.AsyncClient(base_url=app.base_url, timeout=30) as http,
            http.stream("GET", "/v1/events", params={"source": "sse"}) as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                following.set()  # the stream's first line comes after its cursor was fixed
                if line.startswith("data:"):
                    received.append(line)
                    if len(received) == 3:
                        return

    task = asyncio.create_task(listen())
    assert await poll(lambda: following.is_set() or task.done(), timeout_s=30), "no event stream"
    assert following.is_set(), "the event stream ended before its first line"
    for seq in range(3):
        meta = {"kind": "result", "source": "sse", "seq": seq, "label": "x"}
        await client.xadd(KEYS.results, {FIELD: encode_message(Message(meta=meta))})
    await asyncio.wait_for(task, 20)
    assert [f'"seq":{i}' in line for i, line in enumerate(received)] == [True, True, True]
    await client.aclose()


async def test_dead_letters_over_http_are_listed_shown_and_retried(app: App):
    """A frame the pipeline dead-lettered is put back over HTTP and gets its result; garbage put
    back is dead-lettered again; every answer has its documented status code."""
    from stream.adapters.media.jpeg import encode_jpeg
    from stream.adapters.redis.entries import DeadLetter, Entry
    from stream.adapters.redis.streams import StreamTransport

    client = await connect(app.redis_url)
    rgb = np.tile(np.arange(96, dtype=np.uint8)[:, None, None], (1, 128, 3))
    meta = {"kind": "frame", "source": "dl-http", "seq": 0, "capture_ms": time.time() * 1000.0}
    good = encode_message(
        Message(meta={**meta, "encoding": "jpeg"}, array=np.frombuffer(encode_jpeg(rgb), np.uint8))
    )
    group = KEYS.group("preprocess", app.model)
    # as preprocess writes one after a frame crashed its replicas max_deliveries times
    writer = StreamTransport(client, KEYS, stage="preprocess")
    await writer.dead_letter([DeadLetter(Entry(KEYS.frames, "1-1", good, 6), "delivered 6 times")], group)
    await client.xadd(KEYS.frames, {FIELD: b"dl-http garbage"})
    async with httpx.AsyncClient(base_url=app.base_url, timeout=30) as http:

        async def letters() -> list[dict]:
            page = await http.get("/v1/dead-letters", params={"limit": 1000})
            assert page.status_code == 200, page.text
            return page.json()["dead_letters"]

        deadline = time.monotonic() + 60
        while not any(r["reason"].startswith("undecodable") for r in await letters()):
            assert time.monotonic() < deadline, "the garbage was not dead-lettered"
            await asyncio.sleep(0.3)
        mine = await letters()
        (crashed,) = [r for r in mine if r["source"] == "dl-http"]
        (garbage,) = [r for r in mine if r["reason"].startswith("undecodable")]
        shown = await http.get(f"/v1/dead-letters/{crashed['id']}")
        assert shown.status_code == 200 and shown.json()["payload"]["message"]["meta"]["seq"] == 0

        retried = await http.post(f"/v1/dead-letters/{crashed['id']}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["stream"] == KEYS.frames and retried.json()["new_id"]
        deadline = time.monotonic() + 60
        while not (await http.get("/v1/results/dl-http")).json().get("results"):
            assert time.monotonic() < deadline, "the retried frame got no result"
            await asyncio.sleep(0.3)
        assert (await http.post(f"/v1/dead-letters/{crashed['id']}/retry")).status_code == 404

        assert (await http.post(f"/v1/dead-letters/{garbage['id']}/retry")).status_code == 200
        deadline = time.monotonic() + 60
        while True:
            again = [r for r in await letters() if r["reason"].startswith("undecodable")]
            if again and again[-1]["id"] != garbage["id"]:
                break
            assert time.monotonic() < deadline, "the retried garbage was not dead-lettered again"
            await asyncio.sleep(0.3)
        assert (await http.get(f"/v1/dead-letters/{garbage['id']}")).status_code == 404
        assert (await http.post("/v1/dead-letters/nonsense/retry")).status_code == 400
        no_payload = await client.xadd(KEYS.dead, {"stage": "infer", "reason": "gone", "stream": KEYS.frames})
        refused = await http.post(f"/v1/dead-letters/0:{no_payload.decode()}/retry")
        assert refused.status_code == 409 and "kept no payload" in refused.json()["error"]
    await client.aclose()


# -- health check (the replica's own logic, without Ray) --------------------------------------


class _FakeLoop:
    def __init__(self, last_progress_s: float, backlog: int) -> None:
        self.last_progress_s = last_progress_s
        self._backlog = backlog
        self.processed = 0

    async def backlog(self):
        from stream.adapters.redis.group_stats import GroupStats

        return GroupStats("s", "g", lag=self._backlog, pending=0, consumers=1)


def _replica(loop: _FakeLoop, task: asyncio.Future, stuck_after_s: float = 30.0):
    from deployments.serve.stage import StageDeployment

    replica = object.__new__(StageDeployment.func_or_class)
    replica.stage, replica.consumer, replica.loop = "infer", "r1", loop
    replica.stuck_after_s, replica._task = stuck_after_s, task
    return replica


# Serve awaits the replica's `async def __del__` at shutdown; Python's own GC only creates it
@pytest.mark.filterwarnings("ignore:coroutine 'StageDeployment.__del__' was never awaited")
async def test_health_check_reports_a_stuck_or_crashed_loop_and_passes_an_idle_one():
    running: asyncio.Future = asyncio.get_running_loop().create_future()
    idle_long = _replica(_FakeLoop(time.monotonic() - 120, backlog=0), running)
    await idle_long.check_health()  # nothing to do is not stuck
    with pytest.raises(RuntimeError, match="no progress for"):
        await _replica(_FakeLoop(time.monotonic() - 120, backlog=7), running).check_health()
    await _replica(_FakeLoop(time.monotonic(), backlog=7), running).check_health()
    crashed: asyncio.Future = asyncio.get_running_loop().create_future()
    crashed.set_exception(ValueError("boom"))
    with pytest.raises(RuntimeError, match="loop ended.*boom"):
        await _replica(_FakeLoop(time.monotonic(), backlog=0), crashed).check_health()
    running.cancel()
