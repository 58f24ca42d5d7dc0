"""What `models add` decides about a classifier from its ports and hints (pure)."""

from __future__ import annotations

import pytest

from stream.errors import ModelError
from stream.zoo.descriptors import parse_spec
from stream.zoo.inspect import Hints, Options, Port, decide, dequantize_params

FLOAT_NCHW = Port("pixels", (-1, 3, 224, 224), "f32")
LOGITS = Port("scores", (-1, 12), "f32", producer="MatMul")


def _decide(inputs=(FLOAT_NCHW,), outputs=(LOGITS,), hints=Hints(), **opts):
    return decide("onnx", "m.onnx", list(inputs), list(outputs), hints, Options(**opts))


def test_the_model_s_own_rt_info_sets_normalization_colour_resize_and_labels():
    labels = tuple(f"kind{i}" for i in range(12))
    hints = Hints(mean=(123.675, 116.28, 103.53), scale=(58.395,), bgr=True, resize="crop", labels=labels,
                  labels_from="m.xml's rt_info")  # fmt: skip
    d = _decide(hints=hints)
    spec = parse_spec("vehicles", d.descriptor)  # what models add writes is a valid descriptor
    assert (spec.layout, spec.color, spec.input_shape) == ("NCHW", "BGR", (1, 3, 224, 224))
    assert spec.mean == (123.675, 116.28, 103.53) and spec.scale == (58.395,) * 3
    assert (spec.resize, spec.resize_shorter) == ("center-crop", 256)  # 224 / 0.875
    assert (spec.output_kind, spec.labels_count, d.labels) == ("logits", 12, labels)
    # the user's flags win over the model's hints
    d = _decide(hints=hints, mean=(0.0,), scale=(255.0,), color="RGB", resize="letterbox", pad=114)
    spec = parse_spec("vehicles", d.descriptor)
    assert (spec.mean, spec.color, spec.resize, spec.pad) == ((0.0,) * 3, "RGB", "letterbox", 114)


def test_uint8_nhwc_input_takes_raw_pixels_and_a_quantized_output_its_own_parameters():
    quant = Port("probs", (1, 1001), "u8", producer="Softmax", quantize=(0.0, 0.99609375, 0.0, 255.0, 256))
    d = _decide(inputs=[Port("input", (1, 224, 224, 3), "u8")], outputs=[quant],
                labels=("background", *(f"c{i}" for i in range(1000))), labels_from="labels.txt")  # fmt: skip
    spec = parse_spec("imagenet", d.descriptor)
    assert (spec.layout, spec.normalization_in_graph, spec.output_kind) == ("NHWC", True, "quantized")
    assert spec.output_dequantize == (0.00390625, 0.0)
    assert spec.background and spec.labels_count == 1000 and d.labels[0] == "c0"
    assert dequantize_params((-1.0, 1.0, 0.0, 255.0, 256)) == pytest.approx((2 / 255, 127.5))


@pytest.mark.parametrize(
    ("producer", "flags", "kind", "sigmoid"),
    [
        ("Softmax", {}, "probabilities", True),
        ("MatMul", {}, "logits", True),
        ("Sigmoid", {}, "multi-label", False),
        ("MatMul", {"multi_label": True, "threshold": 0.3}, "multi-label", True),
    ],
)
def test_output_kind(producer, flags, kind, sigmoid):
    d = _decide(outputs=[Port("scores", (1, 12, 1, 1), "f32", producer=producer)], mean=(0.0,), scale=(1.0,),
                **flags)  # fmt: skip
    spec = parse_spec("x", d.descriptor)
    assert spec.output_kind == kind and spec.classes == 12
    if kind == "multi-label":
        assert spec.sigmoid is sigmoid and spec.threshold == flags.get("threshold", 0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "give --mean and --scale"),
        ({"inputs": [Port("input", (1, 64, 64, 3), "u8")], "mean": (1.0,)}, "uint8"),
        ({"inputs": [Port("gray", (1, 1, 64, 64), "f32")]}, "no image input"),
        ({"inputs": [FLOAT_NCHW, Port("mask", (1, 64), "f32")]}, "has 2 inputs"),
        ({"inputs": [Port("x", (1, 3, -1, -1), "f32")], "mean": (0.0,)}, "dynamic height or width"),
        ({"outputs": [Port("boxes", (1, 100, 7), "f32")], "mean": (0.0,)}, "detector"),
        ({"outputs": [LOGITS, Port("aux", (1, 5), "f32")], "mean": (0.0,)}, "several outputs"),
        ({"outputs": [Port("one", (1, 1), "f32")], "mean": (0.0,)}, "at least 2"),
        ({"outputs": [Port("q", (1, 12), "u8", producer="Softmax")], "mean": (0.0,)}, "quantization"),
        ({"mean": (1.0, 2.0)}, "1 or 3 values"),
        ({"mean": (0.0,), "scale": (0.0,)}, "must not be 0"),
        ({"mean": (0.0,), "labels": ("a", "b"), "labels_from": "l.txt"}, "12 classes but l.txt has 2"),
        ({"mean": (0.0,), "threshold": 0.4}, "--multi-label"),
        ({"mean": (0.0,), "resize": "center-crop", "crop_fraction": 1.5}, "crop-fraction"),
    ],
)
def test_refusals_say_what_to_do(kwargs, match):
    with pytest.raises(ModelError, match=match):
        _decide(**kwargs)
