"""loadtest against the real pipeline (four stages, real v2 TFLite model, real redis-server):
accuracy equals the model's offline answer on the same frames, nothing is lost, per-stage times
account for the end-to-end latency, and an overload shows up as latency/drops and fails the SLOs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from loadtest.recorder import read_labels_tsv, record_source
from loadtest.replayer import ReplayPlan, load_clip
from loadtest.schedule import Pace
from loadtest.session import replay_on
from stream.adapters.redis.client import connect
from stream.adapters.redis.server import RedisServer
from stream.core.codec import Message
from stream.settings import Settings
from stream.stages import build_stage
from tests.clips import SCENE_PHOTOS, expected_labels, read_photo, scene_frames, write_clip

pytestmark = pytest.mark.slow

V2 = "mobilenet-v2-1.0-224-quant"
PIPELINE = "lt"


class StagesThread:
    """The four stage loops for one model on their own event loop in a thread: a pipeline the
    load tester attaches to with --redis, as it would to one started by `framestream run`."""

    def __init__(self, url: str, settings: Settings, model: str) -> None:
        self.url, self.settings, self.model = url, settings, model
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            self._loop.run_until_complete(self._run())
        except BaseException as e:  # noqa: BLE001 - reported to the test
            self.error = e
            self.ready.set()

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        clients, tasks = [], []
        for name in ("preprocess", "infer", "postprocess"):
            client = await connect(self.url)
            clients.append(client)
            stage = await asyncio.to_thread(
                build_stage, name, self.settings, client, consumer=f"{name}-0", model=self.model
            )
            if hasattr(stage, "start"):
                await stage.start()
            tasks.append(asyncio.create_task(stage.run(self._stop)))
        self.ready.set()
        try:
            await asyncio.gather(*tasks)
        finally:
            for c in clients:
                await c.aclose()

    def __enter__(self) -> StagesThread:
        self._thread.start()
        assert self.ready.wait(120), "stages did not start"
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


@pytest.fixture(scope="module")
def pipeline(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(
        streams={"pipeline": PIPELINE, "claim_idle_ms": 2_000, "block_ms": 20},
        infer={"max_batch_size": 8, "max_wait_ms": 5},
        models={"weights_dir": shared_dir / "models", "cache_dir": tmp_path_factory.mktemp("cache")},
    )
    with RedisServer() as server, StagesThread(server.url, settings, V2):
        yield server.url


@pytest.fixture(scope="module")
def labelled_clip(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recorded replay file: 3 photo scenes x 10 frames (H.264 -> `loadtest record`), labelled."""
    tmp = tmp_path_factory.mktemp("clip")
    truth = expected_labels(shared_dir / "images")
    frames, lines = [], []
    for i, photo in enumerate(SCENE_PHOTOS[:3]):
        frames += scene_frames(read_photo(shared_dir / "images" / photo), 10, (320, 240))
        lines.append(f"{10 * i}-{10 * i + 9}\t{truth[photo]}")
    video = write_clip(tmp / "scenes.mp4", frames)
    (tmp / "labels.tsv").write_text("\n".join(lines) + "\n")
    rec = record_source(str(video), tmp / "scenes.fsr", labels=read_labels_tsv(tmp / "labels.tsv"))
    assert rec.frames == 30 and rec.labelled == 30
    return rec.path


def _offline_labels(path: Path, weights: Path) -> list[str]:
    """What the model answers on the replay file's frames, with the engine directly."""
    from stream.adapters.openvino.engine import open_engine
    from stream.stages.preprocess import prepare_tensor

    clip = load_clip(path)
    with open_engine(V2, weights_dir=weights, allow_synthetic=False) as engine:
        batch = np.stack(
            [
                prepare_tensor(Message({"encoding": e}, p), engine.spec)
                for p, e in zip(clip.payloads, clip.encodings, strict=True)
            ]
        )
        probs = engine.infer(batch)
        return [engine.labels[int(i)] for i in probs.argmax(axis=1)]


def test_replay_reports_offline_accuracy_no_loss_and_stage_times_that_add_up(
    pipeline: str, labelled_clip: Path, shared_dir: Path
) -> None:
    offline = _offline_labels(labelled_clip, shared_dir / "models")
    clip = load_clip(labelled_clip)
    offline_acc = float(np.mean([o == t for o, t in zip(offline, clip.labels, strict=True)]))
    assert offline_acc > 0.5, "the photos should mostly be recognised"

    plan = ReplayPlan(sources=2, pace=Pace("fps", fps=15), source_prefix="acc")
    run = asyncio.run(replay_on(pipeline, [clip], plan, pipeline=PIPELINE, model=V2, settle_s=5))

    d = run["delivery"]
    assert (d["sent"], d["distinct"], d["missing"], d["lost"], d["duplicates"]) == (60, 60, 0, 0, 0)
    assert run["accuracy"] == {"top1": pytest.approx(offline_acc), "labelled": 60}
    assert set(run["stages"]) == {"ingest", "preprocess", "infer", "postprocess"}
    lat = run["latency"]
    assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    # at light load the stages' own stamps account for (almost) all of the end-to-end time
    stage_sum = run["stage_breakdown"]["sum_of_stage_means_ms"]
    assert stage_sum <= lat["mean_ms"] + 0.5
    assert lat["mean_ms"] - stage_sum <= max(15.0, 0.25 * lat["mean_ms"]), run["stage_breakdown"]
    # every result is counted under the size of the batch it was inferred in (max_batch_size 8)
    histogram = {int(k): n for k, n in run["batch"]["histogram"].items()}
    assert sum(histogram.values()) == 60 and set(histogram) <= set(range(1, 9)), histogram
    assert 1 <= run["batch"]["mean"] <= max(histogram), run["batch"]
    assert sorted(run["send"]["eos_results"]) == ["acc-0", "acc-1"]


def test_overload_at_twice_capacity_shows_latency_not_silent_loss_and_fails_the_slo(
    pipeline: str, labelled_clip: Path, tmp_path: Path
) -> None:
    clip = load_clip(labelled_clip)
    # capacity: as fast as possible, 4 passes over the clip
    plan = ReplayPlan(sources=1, pace=Pace("max"), loops=4, source_prefix="cap")
    cap = asyncio.run(replay_on(pipeline, [clip], plan, pipeline=PIPELINE, model=V2))
    capacity = cap["throughput"]["fps"]
    assert capacity and cap["delivery"]["missing"] == 0

    light_p99 = cap["latency"]["p99_ms"]
    out = tmp_path / "overload.json"
    cmd = [
        sys.executable, "-m", "loadtest", "replay", str(labelled_clip), "--redis", pipeline,
        "--pipeline", PIPELINE, "--model", V2, "--fps", f"{2 * capacity:.1f}", "--duration", "3",
        "--p99-ms", f"{max(light_p99, 100):.0f}", "--min-fps", f"{1.5 * capacity:.1f}",
        "--max-loss", "0", "--settle", "5", "--timeout", "60", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={"CI": "true", "PATH": ""})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "SLO failed" in proc.stdout
    run = json.loads(out.read_text())
    d = run["delivery"]
    # every frame is accounted for: a result, a counted drop or a dead letter; nothing silent
    assert d["lost"] == 0 and d["distinct"] + d["dropped"] + d["dead_lettered"] >= d["sent"]
    assert d["sent"] >= 2 * capacity * 3 * 0.8
    series = [r["p99_ms"] for r in run["series"] if r["p99_ms"] is not None]
    assert max(series[len(series) // 2 :]) > 2 * series[0], "latency should climb while overloaded"
    assert run["latency"]["p99_ms"] > max(light_p99, 100)
    assert any("--p99-ms" in f for f in run["slo"]["failures"])


def test_sweep_finds_the_highest_rate_that_holds_the_slo(pipeline: str, labelled_clip: Path) -> None:
    import cv2

    from loadtest.sweep import plot_sweep, sweep_on

    clip = load_clip(labelled_clip)
    result = asyncio.run(
        sweep_on(pipeline, [clip], p99_ms=400, by="fps", start=10, factor=6, max_steps=4,
                 step_duration_s=2.0, pipeline=PIPELINE, model=V2)
    )  # fmt: skip
    steps = result["steps"]
    assert [s["rate"] for s in steps if s["attempt"] == 0][:2] == [10, 60]
    assert any(s["passed"] for s in steps if s["rate"] == 10), steps
    assert result["first_failing"] is not None, "a rate far past capacity must fail the p99 SLO"
    failing = [s for s in steps if not s["passed"]]
    assert all((s["p99_ms"] or 1e9) > 400 or s["missing"] for s in failing)
    assert result["best"] is not None and result["best"] < result["first_failing"]
    png = cv2.imdecode(np.frombuffer(plot_sweep(result), np.uint8), cv2.IMREAD_COLOR)
    assert png is not None and png.shape[0] > 200 and len(np.unique(png.reshape(-1, 3), axis=0)) > 20
