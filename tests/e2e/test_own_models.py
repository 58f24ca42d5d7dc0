"""A user's own classifiers end to end, as the user runs them: in a fresh home with no settings,
`framestream models add NAME FILE --labels FILE`, then `classify --json` and `framestream run` with
two such models at once on one clip (processes runner, and one short Ray run), and the HTTP API's
classify endpoint serving a repository model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from tests.clips import read_photo, scene_frames, write_clip
from tests.own_models import COLOURS, CUT_CLASSES, colour_onnx, cut_ir, write_labels

pytestmark = [pytest.mark.slow]
SCENE_FRAMES = 12


@dataclass
class Home:
    env: dict[str, str]
    home: Path
    clip: Path
    shared: Path


def _cli(home: Home, *args: str, timeout_s: float = 280) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env=home.env,
        cwd=home.home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def home(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Home:
    """A fresh $HOME, no FRAMESTREAM_* variable at all, and the user's two models added there."""
    root = tmp_path_factory.mktemp("home")
    env = {"HOME": str(root), "PATH": os.environ["PATH"], "LANG": "C.UTF-8", "CI": "true"}
    files = tmp_path_factory.mktemp("downloads")
    pets = cut_ir(shared_dir / "models" / "mobilenet_v2_1.0_224_quant.tflite", files / "pets")
    pet_labels = write_labels(files / "pets.txt", [n.replace("_", " ") for n in CUT_CLASSES])
    colour = colour_onnx(files / "colour.onnx")
    colour_labels = write_labels(files / "colours.txt", COLOURS)
    frames = []
    for photo in ("cat.bmp", "hot_dog.jpg"):
        frames += scene_frames(read_photo(shared_dir / "images" / photo), SCENE_FRAMES, (320, 240))
    clip = write_clip(files / "pets.mp4", frames)
    h = Home(env, root, clip, shared_dir)
    _ok(_cli(h, "models", "add", "pets", str(pets), "--labels", str(pet_labels)))
    _ok(_cli(h, "models", "add", "colour", str(colour), "--labels", str(colour_labels), "--mean", "0",
             "--scale", "255"))  # fmt: skip
    return h


def test_added_models_live_in_the_home_repository_and_classify(home: Home):
    repository = home.home / ".local" / "share" / "framestream" / "models"
    assert (repository / "pets" / "1" / "model.yml").is_file()
    assert (repository / "colour" / "1" / "colour.onnx").is_file()
    photos = [str(home.shared / "images" / name) for name in ("cat.bmp", "hot_dog.jpg")]
    doc = json.loads(_ok(_cli(home, "classify", "--json", "--model", "pets", *photos)))
    assert doc["model"] == "pets" and doc["version"] == 1 and doc["synthetic"] is False
    assert [r["top"][0]["label"] for r in doc["results"]] == ["Egyptian cat", "hotdog"]


def test_run_refuses_an_unknown_model_in_one_line_before_starting_anything(home: Home):
    done = _cli(home, "run", "--runner", "processes", "--model", "pets", "--model", "nope",
                "--source", str(home.clip), timeout_s=60)  # fmt: skip
    assert done.returncode == 2
    said = " ".join(done.stderr.split())  # the terminal wraps long lines
    assert "framestream run: unknown model 'nope'; known models: colour, " in said and "pets" in said


def _run(home: Home, runner: str, *models: str) -> tuple[dict, list[dict]]:
    results = home.home / f"results-{runner}.jsonl"
    model_args = [a for m in models for a in ("--model", m)]
    summary = json.loads(_ok(_cli(home, "run", "--json", "--runner", runner, "--source", str(home.clip),
                                  *model_args, "--results", str(results))))  # fmt: skip
    return summary, [json.loads(line) for line in results.read_text().splitlines()]


def _check_run(summary: dict, rows: list[dict], models: tuple[str, ...]) -> None:
    frames = 2 * SCENE_FRAMES
    assert (summary["published"], summary["results"], summary["dead_lettered"]) == (
        frames, frames * len(models), 0,
    )  # fmt: skip
    results = [r for r in rows if r.get("kind") == "result"]
    for model in models:
        mine = sorted((r for r in results if r["model"] == model), key=lambda r: r["seq"])
        assert [r["seq"] for r in mine] == list(range(frames)), model
        names = {n.replace("_", " ") for n in CUT_CLASSES} if model == "pets" else set(COLOURS)
        assert {label for r in mine for label, _ in r["top"]} <= names
    pets = sorted((r for r in results if r["model"] == "pets"), key=lambda r: r["seq"])
    if pets:  # the smoothed label follows the scenes
        assert pets[SCENE_FRAMES - 1]["smoothed_label"] == "Egyptian cat"
        assert pets[-1]["smoothed_label"] == "hotdog"


def test_run_with_two_own_models_on_one_clip_processes(home: Home):
    summary, rows = _run(home, "processes", "pets", "colour")
    _check_run(summary, rows, ("pets", "colour"))


@pytest.mark.ray
def test_run_with_an_own_model_under_ray(home: Home):
    summary, rows = _run(home, "ray", "pets")
    assert summary["runner"] == "ray"
    _check_run(summary, rows, ("pets",))


@pytest.fixture(scope="module")
def api(home: Home, redis_server) -> Iterator[str]:
    """The Serve application serving the repository model `colour`, as the k8s config runs it."""
    pytest.importorskip("ray.serve")
    from ray import serve

    from deployments.serve.app import APP_NAME
    from deployments.serve.config import deploy, load_config, override, start_local_ray
    from stream.adapters.redis.server import find_free_port
    from tests.leftovers import stop_ray

    repository = home.home / ".local" / "share" / "framestream" / "models"
    start_local_ray(num_cpus=2)
    port = find_free_port()
    config = override(
        load_config(),
        args={
            "model": "colour",
            "settings": {"redis": {"url": redis_server.url}, "models": {"repository": str(repository)}},
        },
        http={"host": "127.0.0.1", "port": port},
    )
    try:
        deploy(config, timeout_s=240)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.delete(APP_NAME)
        serve.shutdown()
        stop_ray()


@pytest.mark.ray
# the config sets metrics_interval_s, which Serve 2.60 still reads but calls deprecated
@pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning")
def test_the_api_classifies_with_a_repository_model(api: str):
    for colour, rgb in (("red", (230, 20, 20)), ("blue", (20, 20, 230))):
        image = np.zeros((60, 80, 3), np.uint8)
        image[:] = rgb
        ok, png = cv2.imencode(".png", image[..., ::-1])
        assert ok
        response = httpx.post(f"{api}/v1/classify", content=png.tobytes(),
                              headers={"content-type": "image/png"}, timeout=60)  # fmt: skip
        assert response.status_code == 200, response.text
        result = response.json()
        assert (result["model"], result["label"], len(result["top"])) == ("colour", colour, 3)
