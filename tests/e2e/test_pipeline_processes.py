"""`framestream run --runner processes` end to end: four stage processes on a real redis-server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import pytest

from stream.adapters.redis.server import RedisServer
from stream.errors import ModelError
from tests.clips import SCENE_PHOTOS, expected_labels, read_photo, scene_frames, write_clip

V1 = "mobilenet-v1-0.25-128-quant"
V2 = "mobilenet-v2-1.0-224-quant"
SCENE_FRAMES = 40
SETTLE_FRAMES = 10  # frames a scene needs before its smoothed label must be right (EMA + hysteresis)

pytestmark = pytest.mark.slow


def run_cli(args: list[str], redis_url: str, env: dict[str, str] | None = None, timeout_s: float = 150):
    cmd = [sys.executable, "-m", "stream.cli", "run", "--runner", "processes", "--redis", redis_url, *args]
    proc = subprocess.run(
        [*cmd, "--json", "--timeout", str(timeout_s - 20)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    )
    return proc, json.loads(proc.stdout)  # --json: the summary alone on stdout


def read_results(path: Path) -> dict[tuple[str, str], list[dict]]:
    by_pair: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for line in path.read_text().splitlines():
        r = json.loads(line)
        by_pair[(r["source"], r["model"])].append(r)
    return by_pair


def first_synonym(label: str) -> str:
    return label.split(",")[0].strip()


@pytest.fixture(scope="module")
def scenes_clip(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = []
    for photo in SCENE_PHOTOS:
        frames += scene_frames(read_photo(shared_dir / "images" / photo), SCENE_FRAMES, (320, 240))
    return write_clip(tmp_path_factory.mktemp("clips") / "scenes.mp4", frames)


def test_scene_clip_real_v2_smoothed_label_per_scene(
    redis_server: RedisServer, shared_dir: Path, scenes_clip: Path, tmp_path: Path
) -> None:
    """Every frame's result, the smoothed label right in every scene, and the segments file: one
    segment per scene (a boundary within the smoothing window of each scene change)."""
    results_file, segments_file = tmp_path / "results.jsonl", tmp_path / "segments.jsonl"
    env = {
        "FRAMESTREAM_MODELS__WEIGHTS_DIR": str(shared_dir / "models"),
        "FRAMESTREAM_STREAMS__PIPELINE": "scenes",
    }
    _, summary = run_cli(
        ["--source", str(scenes_clip), "--model", V2, "--results", str(results_file),
         "--segments", str(segments_file)],
        redis_server.url,
        env,
    )  # fmt: skip
    results = read_results(results_file)
    [(source, model)] = results
    rows = results[(source, model)]
    total = len(SCENE_PHOTOS) * SCENE_FRAMES
    # every frame exactly one result, written in seq order
    assert [r["seq"] for r in rows] == list(range(total))
    expected = expected_labels(shared_dir / "images")
    for i, photo in enumerate(SCENE_PHOTOS):
        scene = rows[i * SCENE_FRAMES : (i + 1) * SCENE_FRAMES]
        settled = {first_synonym(r["smoothed_label"]) for r in scene[SETTLE_FRAMES:]}
        assert settled == {expected[photo]}, (photo, settled)
    r = rows[100]
    assert {"source", "seq", "label", "score", "top", "smoothed_label", "latency_ms", "stages_ms"} <= set(r)
    assert len(r["top"]) == 5 and r["top"][0][0] == r["label"] and r["latency_ms"] > 0
    # ingest made the frames to v2's input, the only model: they skipped preprocess
    assert set(r["stages_ms"]) == {"ingest", "infer", "postprocess"}
    assert (summary["results"], summary["dead_lettered"], summary["failed"]) == (total, 0, [])
    check_scene_segments(segments_file, rows, [expected[photo] for photo in SCENE_PHOTOS], source)
    assert summary["segments"] == len(segments_file.read_text().splitlines())


def check_scene_segments(path: Path, rows: list[dict], scene_labels: list[str], source: str) -> None:
    """The closed segments of a clip of scenes (`SCENE_FRAMES` each) played without loss: they tile
    every seq, follow the results' smoothed labels, and start within the smoothing window
    (`SETTLE_FRAMES`) of each scene change whose label differs from the scene before, and nowhere
    else."""
    segments = [json.loads(line) for line in path.read_text().splitlines()]
    assert [s["first_seq"] for s in segments] == [0, *(s["last_seq"] + 1 for s in segments[:-1])]
    assert segments[-1]["last_seq"] == len(rows) - 1
    assert [s["closed_by"] for s in segments] == ["label_change"] * (len(segments) - 1) + ["eos"]
    for s in segments:
        span = rows[s["first_seq"] : s["last_seq"] + 1]
        assert {r["smoothed_label"] for r in span} == {s["label"]}, s
        assert s["frames"] == len(span) and s["id"] == f"{source}/{V2}/{s['first_seq']}" and not s["open"]
        assert (s["start_ms"], s["end_ms"]) == (span[0]["capture_ms"], span[-1]["capture_ms"])
        assert min(r["smoothed_score"] for r in span) <= s["score"] <= max(r["smoothed_score"] for r in span)
    changes = [
        i * SCENE_FRAMES for i in range(1, len(scene_labels)) if scene_labels[i] != scene_labels[i - 1]
    ]
    boundaries = [s["first_seq"] for s in segments[1:]]
    windows = [range(change, change + SETTLE_FRAMES + 1) for change in changes]
    settling = range(SETTLE_FRAMES + 1)  # the first scene settles like the others
    assert all(any(b in w for w in [settling, *windows]) for b in boundaries), (boundaries, changes)
    assert all(any(b in w for b in boundaries) for w in windows), (boundaries, changes)


def test_two_models_one_frames_stream_each_full_result_set(
    redis_server: RedisServer, shared_dir: Path, tmp_path: Path
) -> None:
    """A clip and a JPEG image folder, both models: four complete, ordered result sets."""
    photos = [read_photo(shared_dir / "images" / p) for p in SCENE_PHOTOS[:3]]
    clip = write_clip(tmp_path / "clip.mp4", [f for p in photos for f in scene_frames(p, 20, (320, 240))])
    folder = tmp_path / "stills"
    folder.mkdir()
    for i, frame in enumerate(scene_frames(photos[0], 15, (400, 300))):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    results_file = tmp_path / "results.jsonl"
    env = {
        "FRAMESTREAM_MODELS__WEIGHTS_DIR": str(shared_dir / "models"),
        "FRAMESTREAM_STREAMS__PIPELINE": "two",
    }
    args = ["--source", str(clip), "--source", str(folder), "--model", V1, "--model", V2]
    run_cli([*args, "--results", str(results_file)], redis_server.url, env)
    results = read_results(results_file)
    counts = {(src, model): len(rows) for (src, model), rows in results.items()}
    assert counts == {("clip", V1): 60, ("clip", V2): 60, ("stills", V1): 15, ("stills", V2): 15}
    for rows in results.values():
        assert [r["seq"] for r in rows] == list(range(len(rows)))
    still_labels = {first_synonym(r["smoothed_label"]) for r in results[("stills", V2)][SETTLE_FRAMES:]}
    assert still_labels == {"Egyptian cat"}


async def test_a_source_with_models_of_its_own_gets_results_of_those_alone(
    redis_server: RedisServer, shared_dir: Path, tmp_path: Path
) -> None:
    """Two models served; one source asks for v1 alone: it gets v1's results and nothing of v2's,
    the other source gets both, and the run ends when what each asked for is done."""
    from stream.adapters.redis.source_registry import SourceSpec
    from stream.runners.processes import run_processes
    from stream.settings import Settings

    photos = [read_photo(shared_dir / "images" / p) for p in SCENE_PHOTOS[:2]]
    clip = write_clip(tmp_path / "clip.mp4", [f for p in photos for f in scene_frames(p, 15, (320, 240))])
    other = write_clip(tmp_path / "other.mp4", scene_frames(photos[0], 12, (320, 240)))
    settings = Settings(models={"weights_dir": shared_dir / "models"}, streams={"pipeline": "own-models"})
    results_file = tmp_path / "results.jsonl"
    report = await run_processes(
        settings,
        redis_url=redis_server.url,
        sources=[SourceSpec(uri=str(clip), models=(V1,)), str(other)],
        models=[V1, V2],
        results_path=results_file,
        timeout_s=150,
    )
    assert not report.interrupted
    counts = {pair: len(rows) for pair, rows in read_results(results_file).items()}
    assert counts == {("clip", V1): 30, ("other", V1): 12, ("other", V2): 12}
    assert {(r.source, r.model) for r in report.rows} == set(counts)


def test_corrupt_frame_mid_clip_is_dead_lettered_others_all_get_results(
    redis_server: RedisServer, shared_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    frames = scene_frames(read_photo(shared_dir / "images" / "bird.bmp"), 30, (320, 240))
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (folder / "0015.jpg").write_bytes(b"\xff\xd8\xff\xe0 this frame got corrupted on disk" * 20)
    results_file = tmp_path / "results.jsonl"
    env = {
        "FRAMESTREAM_MODELS__WEIGHTS_DIR": str(shared_dir / "models"),
        "FRAMESTREAM_STREAMS__PIPELINE": "corrupt",
    }
    _, summary = run_cli(
        ["--source", str(folder), "--model", V1, "--results", str(results_file)], redis_server.url, env
    )
    [rows] = read_results(results_file).values()
    assert [r["seq"] for r in rows] == [s for s in range(30) if s != 15]
    assert (summary["dead_lettered"], summary["results"]) == (1, 29)


def _synthetic_available(tmp_path: Path) -> None:
    from stream.zoo.repository import load_spec
    from stream.zoo.store import locate_model

    try:
        locate_model(
            load_spec("mobilenet-v1-0.25-128"), weights_dir=None, cache_dir=tmp_path, allow_synthetic=True
        )
    except ModelError as e:
        pytest.skip(f"synthetic stand-ins are not available in this build: {e}")


def test_synthetic_seed_model_without_shared_data(redis_server: RedisServer, tmp_path: Path) -> None:
    """What a fresh clone can run: a generated clip through a synthetic seed model (labels unchecked)."""
    cache = tmp_path / "cache"
    _synthetic_available(cache)
    from stream.adapters.media.video import write_demo_clip

    clip = write_demo_clip(tmp_path / "demo.mp4", frames=60)
    results_file = tmp_path / "results.jsonl"
    env = {"FRAMESTREAM_MODELS__CACHE_DIR": str(cache), "FRAMESTREAM_STREAMS__PIPELINE": "synthetic"}
    env["FRAMESTREAM_MODELS__WEIGHTS_DIR"] = ""
    proc, summary = run_cli(
        ["--source", str(clip), "--model", "mobilenet-v1-0.25-128", "--results", str(results_file)],
        redis_server.url,
        env,
    )
    [rows] = read_results(results_file).values()
    assert [r["seq"] for r in rows] == list(range(60))
    assert all(len(r["top"]) == 5 for r in rows)
    assert summary["synthetic"] and "SYNTHETIC" in proc.stderr  # the red notice


def test_postprocess_replicas_share_the_partitions_and_every_frame_comes_out_once_in_order(
    redis_server: RedisServer, shared_dir: Path, scenes_clip: Path, tmp_path: Path
) -> None:
    """P = 3 and postprocess.replicas = 3: each replica owns partitions of its own (leases); every
    source's results are complete and in seq order."""
    sources = []
    for name in ("cam-3", "cam-1", "cam-0"):  # partitions 0, 1, 2
        (tmp_path / f"{name}.mp4").symlink_to(scenes_clip)
        sources += ["--source", str(tmp_path / f"{name}.mp4")]
    results_file = tmp_path / "results.jsonl"
    env = {
        "FRAMESTREAM_MODELS__WEIGHTS_DIR": str(shared_dir / "models"),
        "FRAMESTREAM_STREAMS__PIPELINE": "shared",
        "FRAMESTREAM_STREAMS__PARTITIONS": "3",
        "FRAMESTREAM_POSTPROCESS__REPLICAS": "3",
    }
    proc, _ = run_cli([*sources, "--model", V1, "--results", str(results_file)], redis_server.url, env)
    results = read_results(results_file)
    total = len(SCENE_PHOTOS) * SCENE_FRAMES
    assert sorted(source for source, _ in results) == ["cam-0", "cam-1", "cam-3"]
    for rows in results.values():
        assert [r["seq"] for r in rows] == list(range(total))
    takers = set(re.findall(r"postprocess (\S+): took partition", proc.stderr))
    assert len(takers) >= 2, proc.stderr[-3000:]  # the partitions were shared, not all on one replica
