"""The command-line surface users and checks rely on: models list/check, classify."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from stream.cli import app

runner = CliRunner()
NAMES = (
    "mobilenet-v1-0.25-128",
    "mobilenet-v3-small-1.0-224-tf",
    "mobilenet-v2-pytorch",
    "mobilenetv2-7",
    "mobilenet-v1-0.25-128-quant",
    "mobilenet-v2-1.0-224-quant",
)


def test_models_list_shows_every_model_and_its_contract(tmp_path):
    result = runner.invoke(app, ["models", "list", "--cache-dir", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for name in NAMES:
        assert name in result.output
    assert "256 + crop" in result.output and "NCHW" in result.output and "1000" in result.output


def _framestream(*args: str, columns: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_models_list_through_a_pipe_prints_every_name_whole():
    proc = _framestream("models", "list", columns=60)
    assert proc.returncode == 0, proc.stderr
    first_words = [line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()]
    assert sorted(first_words) == sorted(NAMES), proc.stdout
    assert "…" not in proc.stdout


def test_models_list_json_lists_every_model():
    proc = _framestream("models", "list", "--json", columns=60)
    assert proc.returncode == 0, proc.stderr
    models = json.loads(proc.stdout)
    assert sorted(m["name"] for m in models) == sorted(NAMES)
    v2 = next(m for m in models if m["name"] == "mobilenetv2-7")
    assert v2["input_shape"] == [1, 3, 224, 224] and v2["resize_shorter"] == 256 and v2["top1"] == 70.94


def test_models_list_says_where_weights_are(shared_dir, tmp_path):
    result = runner.invoke(
        app,
        ["models", "list", "--weights-dir", str(shared_dir / "models"), "--cache-dir", str(tmp_path)],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0
    line = next(ln for ln in result.output.splitlines() if "mobilenet-v2-1.0-224-quant" in ln)
    assert "weights-dir" in line


def test_classify_prints_egyptian_cat_first(shared_dir, tmp_path):
    result = runner.invoke(
        app,
        ["classify", str(shared_dir / "images" / "cat.bmp"), "--model", "mobilenet-v2-1.0-224-quant",
         "--cache-dir", str(tmp_path)],
        env={"FRAMESTREAM_MODELS__WEIGHTS_DIR": str(shared_dir / "models")},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].endswith("Egyptian cat")
    assert "SYNTHETIC" not in result.output


def test_classify_json_top_k(shared_dir, tmp_path):
    images = [str(shared_dir / "images" / n) for n in ("cat.bmp", "parrot.jpg")]
    result = runner.invoke(
        app,
        ["classify", *images, "--model", "mobilenet-v1-0.25-128-quant", "--top", "3", "--json",
         "--weights-dir", str(shared_dir / "models"), "--cache-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["model"] == "mobilenet-v1-0.25-128-quant" and doc["synthetic"] is False
    assert [r["top"][0]["label"] for r in doc["results"]] == ["Egyptian cat", "macaw"]
    probs = [h["probability"] for h in doc["results"][0]["top"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)


def test_classify_with_a_synthetic_model_warns_loudly(tmp_path):
    pytest.importorskip("stream.zoo.synthetic")
    image = tmp_path / "img.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.full((40, 60, 3), 127, np.uint8))
    result = runner.invoke(
        app, ["classify", str(image), "--model", "mobilenet-v1-0.25-128", "--cache-dir", str(tmp_path / "c")]
    )
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.output and "MEAN NOTHING" in result.output
    assert "no labels file found" in result.output


def test_classify_errors_are_clear(shared_dir, tmp_path):
    bad = tmp_path / "not-an-image.jpg"
    bad.write_bytes(b"hello")
    result = runner.invoke(
        app,
        ["classify", str(bad), "--model", "mobilenet-v1-0.25-128-quant", "--weights-dir",
         str(shared_dir / "models"), "--cache-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 1 and "not a readable image" in result.output
    result = runner.invoke(app, ["classify", str(bad), "--model", "nope", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 1 and "unknown model 'nope'; known models:" in result.output
    result = runner.invoke(
        app,
        ["classify", str(bad), "--model", "mobilenet-v2-1.0-224-quant", "--no-synthetic", "--cache-dir",
         str(tmp_path)],
        env={"FRAMESTREAM_MODELS__WEIGHTS_DIR": str(tmp_path)},
    )  # fmt: skip
    assert result.exit_code == 1 and "framestream models fetch mobilenet-v2-1.0-224-quant" in result.output


@pytest.mark.slow
def test_models_check_runs_the_contract_and_prints_params_flops(shared_dir, tmp_path):
    result = runner.invoke(
        app,
        ["models", "check", "mobilenet-v1-0.25-128-quant", "--weights-dir", str(shared_dir / "models"),
         "--cache-dir", str(tmp_path), "--seconds", "0.2"],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "engine == numpy reference" in result.output and "FAIL" not in result.output
    assert "params: 0.468 M" in result.output and "FLOPs:" in result.output
    assert "images/s" in result.output
