"""`framestream models add`: users' own classifiers (any class count, IR / ONNX / TFLite, labels from
a file or from the model, every output kind) go into the repository and classify; bad models are
refused in one line with the repository left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from stream.cli import app
from tests.own_models import (
    COLOURS,
    CUT_CLASSES,
    colour_multi_label_onnx,
    colour_onnx,
    cut_ir,
    detector_onnx,
    two_inputs_onnx,
    write_labels,
)

runner = CliRunner()
PHOTOS = ("cat.bmp", "bird.bmp", "parrot.jpg", "hot_dog.jpg", "dragonfly.bmp", "sunflower.bmp",
          "traffic_frames/0001.bmp", "grace_hopper.bmp", "kite_and_cold.jpg")  # fmt: skip
RGB = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230), "yellow": (230, 230, 20)}


@pytest.fixture
def repository(tmp_path, monkeypatch) -> Path:
    """The setting `models.repository` pointing at a fresh folder (and a private model cache)."""
    root = tmp_path / "repository"
    monkeypatch.setenv("FRAMESTREAM_MODELS__REPOSITORY", str(root))
    monkeypatch.setenv("FRAMESTREAM_MODELS__CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FRAMESTREAM_MODELS__WEIGHTS_DIR", raising=False)
    return root


def _invoke(*args: str):
    return runner.invoke(app, list(args))


def _classify(model: str, *images: Path, top: int = 3) -> dict:
    result = _invoke("classify", *map(str, images), "--model", model, "--top", str(top), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _image(path: Path, colour: str, hw: tuple[int, int] = (48, 64)) -> Path:
    rgb = np.zeros((*hw, 3), np.uint8)
    rgb[:] = RGB[colour]
    cv2.imwrite(str(path), rgb[..., ::-1])
    return path


def _snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_cut_imagenet_model_with_rt_info_labels_picks_what_the_full_model_picks_among_its_classes(
    shared_dir, repository, tmp_path
):
    from stream.adapters.media.image import fit_to_model, read_image
    from stream.adapters.openvino.engine import open_engine

    xml = cut_ir(shared_dir / "models" / "mobilenet_v2_1.0_224_quant.tflite", tmp_path / "cut")
    added = _invoke("models", "add", "pets", str(xml))
    assert added.exit_code == 0, added.output
    assert "quantized u8, dequantized as 0.00390625 * (q - 0)" in added.output
    assert f"{len(CUT_CLASSES)} from cut.xml's rt_info model_info/labels" in added.output
    assert (repository / "pets" / "1" / "cut.bin").is_file()

    images = [shared_dir / "images" / name for name in PHOTOS]
    doc = _classify("pets", *images, top=len(CUT_CLASSES) + 5)
    assert doc["version"] == 1 and not doc["synthetic"]
    assert all(len(r["top"]) == len(CUT_CLASSES) for r in doc["results"])  # --top past the classes
    got = [r["top"][0]["label"] for r in doc["results"]]

    # the full model on the same pixels, its best among the kept columns (ties: the first kept)
    with open_engine(
        "mobilenet-v2-1.0-224-quant", weights_dir=shared_dir / "models", cache_dir=tmp_path
    ) as full:
        probs = full.infer(np.stack([fit_to_model(read_image(p), full.spec) for p in images]))
    kept = probs[:, [column - 1 for column in CUT_CLASSES.values()]]  # engine columns drop background
    want = [list(CUT_CLASSES)[i] for i in np.argmax(kept, axis=1)]
    assert got == want
    assert got[:7] == ["Egyptian_cat", "chickadee", "macaw", "hotdog", "dragonfly", "daisy", "racer"]


def test_a_tflite_file_brings_its_own_labels_from_its_metadata(shared_dir, repository):
    added = _invoke(
        "models", "add", "imagenet", str(shared_dir / "models" / "mobilenet_v2_1.0_224_quant.tflite")
    )
    assert added.exit_code == 0, added.output
    assert "1000 from mobilenet_v2_1.0_224_quant.tflite's metadata" in added.output
    assert "column 0 is background" in added.output
    doc = _classify("imagenet", shared_dir / "images" / "cat.bmp")
    assert doc["results"][0]["top"][0]["label"] == "Egyptian cat"


def test_an_onnx_classifier_with_a_label_file_and_its_next_version(repository, tmp_path):
    model = colour_onnx(tmp_path / "colour.onnx")
    labels = write_labels(tmp_path / "colours.txt", COLOURS)
    first = _invoke(
        "models", "add", "colour", str(model), "--labels", str(labels), "--mean", "0", "--scale", "255"
    )
    assert first.exit_code == 0, first.output
    assert "logits (no softmax in the model: framestream applies one)" in first.output
    images = [_image(tmp_path / f"{c}.png", c) for c in ("red", "green", "blue")]
    doc = _classify("colour", *images)
    assert [r["top"][0]["label"] for r in doc["results"]] == ["red", "green", "blue"]
    assert all(abs(sum(h["probability"] for h in r["top"]) - 1.0) < 1e-4 for r in doc["results"])

    # the same file again, letterboxed this time: version 2 serves, both are listed
    second = _invoke(
        "models", "add", "colour", str(model), "--labels", str(labels), "--mean", "0", "--scale", "255",
        "--resize", "letterbox", "--pad", "0",
    )  # fmt: skip
    assert second.exit_code == 0, second.output
    assert "colour version 2" in second.output and "letterbox, pad 0, as given" in second.output
    listed = {m["name"]: m for m in json.loads(_invoke("models", "list", "--json").output)}
    assert (listed["colour"]["version"], listed["colour"]["versions"]) == (2, [1, 2])
    assert (listed["colour"]["classes"], listed["colour"]["resize"], listed["colour"]["weights"]) == (
        3, "letterbox", "repository",
    )  # fmt: skip
    assert _classify("colour", images[0])["version"] == 2


@pytest.mark.parametrize("sigmoid_inside", [False, True])
def test_a_multi_label_model_lists_every_label_above_its_threshold(repository, tmp_path, sigmoid_inside):
    model = colour_multi_label_onnx(tmp_path / "colours.onnx", sigmoid_inside=sigmoid_inside)
    labels = write_labels(tmp_path / "colours.txt", COLOURS)
    flags = [] if sigmoid_inside else ["--multi-label"]  # a final sigmoid says so by itself
    added = _invoke(
        "models", "add", "colours", str(model), "--labels", str(labels), "--mean", "0", "--scale", "255",
        "--threshold", "0.6", *flags,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert ("sigmoid in the model" if sigmoid_inside else "sigmoid applied") in added.output
    images = [_image(tmp_path / f"{c}.png", c) for c in ("yellow", "blue")]
    doc = _classify("colours", *images)
    assert [r["labels"] for r in doc["results"]] == [["red", "green"], ["blue"]]
    scores = {h["label"]: h["probability"] for h in doc["results"][0]["top"]}
    assert scores["red"] > 0.9 and scores["blue"] < 0.1  # independent scores, not a softmax


def _refused(args: list[str], match: str, repository: Path) -> None:
    before = _snapshot(repository)
    result = _invoke(*args)
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], result.output
    assert _snapshot(repository) == before


def test_bad_models_get_one_clear_line_and_leave_the_repository_as_it_was(shared_dir, repository, tmp_path):
    good = colour_onnx(tmp_path / "colour.onnx")
    labels = write_labels(tmp_path / "colours.txt", COLOURS)
    norm = ["--mean", "0", "--scale", "255"]
    assert _invoke("models", "add", "colour", str(good), "--labels", str(labels), *norm).exit_code == 0

    ir = cut_ir(shared_dir / "models" / "mobilenet_v2_1.0_224_quant.tflite", tmp_path / "cut")
    no_bin = tmp_path / "nobin"
    no_bin.mkdir()
    (no_bin / "cut.xml").write_bytes(ir.read_bytes())
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(
        (shared_dir / "models" / "mobilenet_v2_1.0_224_quant.tflite").read_bytes()[:200_000]
    )
    four = write_labels(tmp_path / "four.txt", [*COLOURS, "purple"])
    cases = [
        (["models", "add", "det", str(detector_onnx(tmp_path / "det.onnx")), *norm], "looks like a detector"),
        (["models", "add", "pair", str(two_inputs_onnx(tmp_path / "pair.onnx")), *norm], "has 2 inputs"),
        (["models", "add", "colour", str(good), "--labels", str(four), *norm], "3 classes but"),
        (["models", "add", "trunc", str(truncated)], "corrupt, truncated"),
        (["models", "add", "nobin", str(no_bin / "cut.xml")], "without its weights: cut.bin"),
        (["models", "add", "colour", str(good), "--labels", str(labels)], "give --mean and --scale"),
        (["models", "add", "mobilenetv2-7", str(good), *norm], "built-in model"),
        (["models", "add", "../up", str(good), *norm], "is not a model name"),
        (["models", "add", "nothing", str(tmp_path / "missing.onnx")], "does not exist"),
        (["models", "check", "nope"], "unknown model 'nope'; known models: colour"),
        (["classify", str(tmp_path / "x.png"), "--model", "nope"], "unknown model 'nope'"),
        (["models", "fetch", "nope"], "unknown model 'nope'"),
    ]
    for args, match in cases:
        _refused(args, match, repository)


def test_letterbox_fills_the_bars_with_the_pad_value():
    from stream.adapters.media.image import fit_image

    wide = np.full((10, 40, 3), 200, np.uint8)
    out = fit_image(wide, (32, 32), "letterbox", pad=114)
    assert out.shape == (32, 32, 3)
    assert (out[:12] == 114).all() and (out[-12:] == 114).all() and (out[12:20] == 200).all()
