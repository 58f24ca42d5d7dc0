"""Every seed contract, tested rather than assumed.

The same uint8 photo goes (a) through the engine, which does colour order, mean/scale, layout,
resize/crop, background drop and softmax inside the compiled model, and (b) through a plain-numpy
reference written here from the seed table of ../shared/design/ARCHITECTURE.md, into the raw model.
They must agree.

Models: small stand-ins built here with each seed's exact I/O contract (names, shapes, layout,
in-graph normalization, 1001 vs 1000 classes, probabilities vs logits, v1's batch-1 Reshape), and,
when `stream.zoo.synthetic` is present, the full-size synthetic seeds as well.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import openvino as ov
import pytest
from onnx import TensorProto, helper, numpy_helper

from stream.adapters.media.image import fit_to_model
from stream.adapters.openvino.engine import open_engine

MEAN_TORCH = np.array([123.675, 116.28, 103.53], np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _full(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def _resize256_crop224(img: np.ndarray) -> np.ndarray:
    assert img.shape[:2] == (480, 640), "the crop numbers below are for a 480x640 photo"
    resized = cv2.resize(img, (341, 256), interpolation=cv2.INTER_AREA)  # torchvision Resize(256)
    return resized[16:240, 58:282]  # CenterCrop(224)


# name -> (fit, numpy preprocessing of float RGB HWC -> model input (batch of 1), postprocessing)
REFERENCE = {
    "mobilenet-v1-0.25-128": (
        lambda img: _full(img, (128, 128)),
        lambda x: ((x - 127.5) / 127.5)[None],  # NHWC RGB, mean 127.5 scale 127.5
        lambda out: out[:, 1:],  # 1001 probabilities, index 0 = background
    ),
    "mobilenet-v3-small-1.0-224-tf": (
        lambda img: _full(img, (224, 224)),
        lambda x: x[None],  # NHWC RGB 0..255, the model rescales inside
        lambda out: out,  # 1000 probabilities
    ),
    "mobilenet-v2-pytorch": (
        _resize256_crop224,
        lambda x: ((x - MEAN_TORCH) / np.array([58.624, 57.12, 57.375], np.float32)).transpose(2, 0, 1)[None],
        _softmax,  # 1000 raw scores
    ),
    "mobilenetv2-7": (
        _resize256_crop224,
        lambda x: ((x / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)[None],
        _softmax,
    ),
}

# name -> (input name, input shape, output name, classes, softmax in graph, rescale in graph)
STANDIN = {
    "mobilenet-v1-0.25-128": (
        "input",
        [1, 128, 128, 3],
        "MobilenetV1/Predictions/Reshape_1",
        1001,
        True,
        False,
    ),
    "mobilenet-v3-small-1.0-224-tf": (
        "input_1",
        [1, 224, 224, 3],
        "StatefulPartitionedCall/MobilenetV3small/Predictions/Softmax",
        1000,
        True,
        True,
    ),
    "mobilenet-v2-pytorch": ("data", [1, 3, 224, 224], "prob", 1000, False, False),
    "mobilenetv2-7": ("data", [1, 3, 224, 224], "mobilenetv20_output_flatten0_reshape0", 1000, False, False),
}


def build_standin(name: str, path: Path) -> Path:
    """A small random-weight ONNX model with the seed's exact I/O contract."""
    in_name, shape, out_name, classes, softmax, rescale = STANDIN[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # str hash() changes every process
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (16, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.5, (16,)).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(0, 1.0, (16, classes)).astype(np.float32), "fc"),
        numpy_helper.from_array(np.array([1, classes], np.int64), "batch1_shape"),
        numpy_helper.from_array(np.array(1 / 127.5, np.float32), "k"),
        numpy_helper.from_array(np.array(-1.0, np.float32), "minus1"),
    ]
    nodes, x = [], in_name
    if rescale:  # Keras MobileNetV3 rescales 0..255 to -1..1 inside the model
        nodes += [
            helper.make_node("Mul", [x, "k"], ["scaled"]),
            helper.make_node("Add", ["scaled", "minus1"], ["r"]),
        ]
        x = "r"
    if shape[3] == 3:  # NHWC model: the TF graph transposes internally
        nodes.append(helper.make_node("Transpose", [x], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [
        helper.make_node("Conv", [x, "w", "b"], ["conv"], strides=[4, 4], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    last = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", [last], ["sm"], axis=1))
        last = "sm"
    # like the real TF graphs: a final Reshape that hard-codes batch 1
    nodes.append(helper.make_node("Reshape", [last, "batch1_shape"], [out_name]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [1, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _photo() -> np.ndarray:
    """A deterministic 480x640 RGB 'photo' with structure in every channel."""
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    rgb = np.stack([xx / 640 * 255, yy / 480 * 255, 128 + 100 * np.sin(xx / 23) * np.cos(yy / 31)], -1)
    noise = np.random.default_rng(7).normal(0, 25, rgb.shape)
    return np.clip(rgb + noise, 0, 255).astype(np.uint8)


def _synthetic_available() -> bool:
    try:
        from stream.zoo.synthetic import build_synthetic  # noqa: F401
    except ImportError:
        return False
    return True


SOURCES = [
    "stand-in",
    pytest.param(
        "synthetic",
        marks=pytest.mark.skipif(not _synthetic_available(), reason="stream/zoo/synthetic.py not there yet"),
    ),
]


@pytest.fixture(params=SOURCES)
def source(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory) -> Path:
    """One cache for the module, so each synthetic seed is built once."""
    return tmp_path_factory.mktemp("synthetic-cache")


def _open(name: str, source: str, tmp_path: Path, synthetic_cache: Path):
    if source == "stand-in":
        weights = tmp_path / "weights"
        weights.mkdir()
        build_standin(name, weights / f"{name}.onnx")
        return open_engine(
            name,
            weights_dir=weights,
            cache_dir=tmp_path / "cache",
            allow_synthetic=False,
            inference_precision="f32",
        )
    return open_engine(name, cache_dir=synthetic_cache, allow_synthetic=True, inference_precision="f32")


def _raw(path: Path, x: np.ndarray) -> np.ndarray:
    # float32 math on both sides, so the comparison is about the contract, not bfloat16 rounding
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled(x.astype(compiled.inputs[0].get_element_type().to_dtype()))[compiled.outputs[0]]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_engine_equals_numpy_reference_of_the_seed_contract(name, source, tmp_path, synthetic_cache):
    fit, pre, post = REFERENCE[name]
    photo = _photo()
    with _open(name, source, tmp_path, synthetic_cache) as engine:
        assert engine.synthetic is (source == "synthetic")
        fitted = fit_to_model(photo, engine.spec)
        np.testing.assert_array_equal(fitted, fit(photo), err_msg="resize/crop policy differs")
        got = engine.infer(fitted[None])
        want = post(_raw(engine.model_path, pre(fit(photo).astype(np.float32))))
        assert got.shape == want.shape == (1, 1000)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        # the check has teeth: the same photo with R and B swapped must come out different
        swapped = post(_raw(engine.model_path, pre(fit(photo)[..., ::-1].astype(np.float32))))
        assert np.abs(swapped - got).max() > 1e-4, (
            "model is insensitive to channel order; test proves nothing"
        )


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_seed_models_batch_like_they_run_one_at_a_time(name, source, tmp_path, synthetic_cache):
    with _open(name, source, tmp_path, synthetic_cache) as engine:
        h, w = engine.spec.input_hw
        batch = np.random.default_rng(3).integers(0, 256, (9, h, w, 3), dtype=np.uint8)
        singles = np.concatenate([engine.infer(batch[i : i + 1]) for i in range(9)])
        together = engine.infer(batch)
        # batch 1 runs on a model compiled for exactly batch 1, batch 9 on the dynamic one: float
        # kernels may round differently in the last digits, never in the answer
        np.testing.assert_allclose(together, singles, rtol=1e-3, atol=1e-6)
        assert (together.argmax(axis=1) == singles.argmax(axis=1)).all()
