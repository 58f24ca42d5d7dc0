"""The synthetic stand-ins: the seed's exact contract, card-sized, runnable, batchable, reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import openvino as ov
import pytest

from stream.errors import ModelError
from stream.zoo.flops import count_flops, count_params
from stream.zoo.synthetic import SYNTHETIC_NAMES, build_synthetic, is_synthetic

# name: input name, shape, layout, value range fed to the raw model, output name, shape, kind,
#       card MParams, card GFLOPs
CONTRACTS = {
    "mobilenet-v1-0.25-128": (
        "input", [1, 128, 128, 3], "NHWC", (-1.0, 1.0),
        "MobilenetV1/Predictions/Reshape_1", [1, 1001], "probabilities", 0.468, 0.028,
    ),
    "mobilenet-v3-small-1.0-224-tf": (
        "input_1", [1, 224, 224, 3], "NHWC", (0.0, 255.0),
        "StatefulPartitionedCall/MobilenetV3small/Predictions/Softmax", [1, 1000], "probabilities",
        2.537, 0.11682,
    ),
    "mobilenet-v2-pytorch": (
        "data", [1, 3, 224, 224], "NCHW", (-2.1, 2.6), "prob", [1, 1000], "logits", 3.489, 0.615,
    ),
    "mobilenetv2-7": (
        "data", [-1, 3, 224, 224], "NCHW", (-2.1, 2.6),
        "mobilenetv20_output_flatten0_reshape0", [-1, 1000], "logits", 3.489, 0.615,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each stand-in built once for the module (about 5-10 s in all on 2 cores)."""
    root = tmp_path_factory.mktemp("synthetic")
    return {name: build_synthetic(name, root / name) for name in SYNTHETIC_NAMES}


def _read(path: Path) -> ov.Model:
    return ov.Core().read_model(path)


def _inputs(name: str, batch: int, seed: int = 0) -> np.ndarray:
    _, shape, layout, (low, high), *_ = CONTRACTS[name]
    rng = np.random.default_rng(seed)
    shape = [batch, *shape[1:]]
    # photo-like: coarse colour blobs plus noise, in the range the raw model expects
    hw = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
    coarse = rng.uniform(0.0, 1.0, size=(batch, 4, 4, 3))
    img = np.kron(coarse, np.ones((1, hw[0] // 4, hw[1] // 4, 1))) + rng.normal(0, 0.05, (batch, *hw, 3))
    img = low + (high - low) * np.clip(img, 0.0, 1.0)
    return (img if layout == "NHWC" else img.transpose(0, 3, 1, 2)).astype(np.float32)


def test_names_cover_the_four_seed_models() -> None:
    assert set(SYNTHETIC_NAMES) == set(CONTRACTS)


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_file_format(built: dict[str, Path], name: str) -> None:
    path = built[name]
    if name == "mobilenetv2-7":
        assert path.name == "model.onnx"
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        assert [(o.domain, o.version) for o in proto.opset_import] == [("", 7)]
        clips = [n for n in proto.graph.node if n.op_type == "Clip"]
        assert clips and all({a.name for a in n.attribute} == {"min", "max"} for n in clips)
        assert any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    else:
        assert path.name == "model.xml" and path.with_suffix(".bin").is_file()
        # float32 weights, not compressed to f16
        assert all(
            op.get_element_type() != ov.Type.f16
            for op in _read(path).get_ops()
            if op.get_type_name() == "Constant"
        )
    assert is_synthetic(path) and is_synthetic(_read(path)) if path.suffix == ".xml" else is_synthetic(path)


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_exact_input_output_contract(built: dict[str, Path], name: str) -> None:
    in_name, in_shape, layout, _, out_name, out_shape, *_ = CONTRACTS[name]
    model = _read(built[name])
    assert len(model.inputs) == 1 and len(model.outputs) == 1
    (inp,), (out,) = model.inputs, model.outputs
    assert inp.any_name == in_name and inp.get_element_type() == ov.Type.f32
    assert inp.get_partial_shape() == ov.PartialShape(in_shape)
    assert out.any_name == out_name and out.get_partial_shape() == ov.PartialShape(out_shape)
    if built[name].suffix == ".xml":
        assert model.get_parameters()[0].get_layout() == ov.Layout(layout)


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_params_and_flops_match_the_seed_card(built: dict[str, Path], name: str) -> None:
    """Params within 1% and GFLOPs within 5% of the card (conventions: `stream.zoo.flops`)."""
    *_, card_mparams, card_gflops = CONTRACTS[name]
    model = _read(built[name])
    assert count_params(model) / 1e6 == pytest.approx(card_mparams, rel=0.01)
    assert count_flops(model) == pytest.approx(card_gflops, rel=0.05)


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_runs_with_sane_outputs(built: dict[str, Path], name: str) -> None:
    *_, out_shape, kind, _, _ = CONTRACTS[name]
    compiled = ov.Core().compile_model(built[name], "CPU")
    outs = np.stack([compiled(_inputs(name, 1, seed))[0][0] for seed in range(6)])
    assert outs.shape == (6, out_shape[1]) and np.isfinite(outs).all()
    if kind == "probabilities":
        assert ((outs >= 0) & (outs <= 1)).all()
        np.testing.assert_allclose(outs.sum(axis=1), 1.0, atol=1e-4)
        probs = outs
    else:
        assert not np.allclose(outs.sum(axis=1), 1.0)  # raw scores, softmax is the caller's job
        z = np.exp(outs - outs.max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
    # Not degenerate: a clear winner per image (far above uniform), and it depends on the image.
    assert (probs.max(axis=1) > 20.0 / out_shape[1]).all()
    assert len(set(probs.argmax(axis=1).tolist())) >= 3


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_dynamic_batch_gives_per_image_results(built: dict[str, Path], name: str) -> None:
    model = _read(built[name])
    shape = model.inputs[0].get_partial_shape()
    shape[0] = -1
    model.reshape({model.inputs[0]: shape})
    assert model.inputs[0].get_partial_shape()[0].is_dynamic
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    batch = _inputs(name, 3, seed=7)
    together = compiled(batch)[0]
    alone = np.concatenate([compiled(batch[i : i + 1])[0] for i in range(3)])
    assert together.shape[0] == 3
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_two_builds_are_byte_identical(built: dict[str, Path], name: str, tmp_path: Path) -> None:
    again = build_synthetic(name, tmp_path / "again")
    for suffix in (".xml", ".bin") if again.suffix == ".xml" else (".onnx",):
        assert again.with_suffix(suffix).read_bytes() == built[name].with_suffix(suffix).read_bytes()


def test_unknown_name_is_a_model_error_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no synthetic stand-in for model 'resnet-50'"):
        build_synthetic("resnet-50", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_rebuild_over_an_existing_dir_replaces_it_and_leaves_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "v1"
    out.mkdir()
    (out / "model.xml").write_text("stale")
    path = build_synthetic("mobilenet-v1-0.25-128", out)
    assert path == out / "model.xml"
    assert _read(path).outputs[0].any_name == "MobilenetV1/Predictions/Reshape_1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]
