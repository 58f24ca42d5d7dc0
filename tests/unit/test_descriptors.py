"""Model descriptors: the contracts in models/<name>/model.yml, and clear errors for bad ones."""

from __future__ import annotations

import pytest

from stream.errors import ModelError
from stream.zoo import list_specs, load_spec
from stream.zoo.descriptors import parse_spec

SEEDS = ["mobilenet-v1-0.25-128", "mobilenet-v3-small-1.0-224-tf", "mobilenet-v2-pytorch", "mobilenetv2-7"]
REAL = ["mobilenet-v1-0.25-128-quant", "mobilenet-v2-1.0-224-quant"]


def test_every_model_is_listed(tmp_path):
    assert sorted(s.name for s in list_specs(tmp_path)) == sorted(SEEDS + REAL)


@pytest.mark.parametrize(
    ("name", "input_name", "shape", "layout", "mean", "scale", "in_graph", "classes", "kind", "resize"),
    [
        # the seed table of ../shared/design/ARCHITECTURE.md, original-framework contracts
        ("mobilenet-v1-0.25-128", "input", (1, 128, 128, 3), "NHWC", (127.5,) * 3, (127.5,) * 3, False, 1001,
         "probabilities", "stretch"),
        ("mobilenet-v3-small-1.0-224-tf", "input_1", (1, 224, 224, 3), "NHWC", (0.0,) * 3, (1.0,) * 3, True,
         1000, "probabilities", "stretch"),
        ("mobilenet-v2-pytorch", "data", (1, 3, 224, 224), "NCHW", (123.675, 116.28, 103.53),
         (58.624, 57.12, 57.375), False, 1000, "logits", "center-crop"),
        ("mobilenetv2-7", "data", (1, 3, 224, 224), "NCHW", (123.675, 116.28, 103.53),
         (0.229 * 255, 0.224 * 255, 0.225 * 255), False, 1000, "logits", "center-crop"),
        ("mobilenet-v2-1.0-224-quant", "input", (1, 224, 224, 3), "NHWC", (0.0,) * 3, (1.0,) * 3, True, 1001,
         "probabilities", "stretch"),
    ],
)  # fmt: skip
def test_seed_contracts(name, input_name, shape, layout, mean, scale, in_graph, classes, kind, resize):
    spec = load_spec(name)
    assert (spec.input_name, spec.input_shape, spec.layout, spec.color) == (input_name, shape, layout, "RGB")
    assert spec.mean == pytest.approx(mean) and spec.scale == pytest.approx(scale)
    assert spec.normalization_in_graph is in_graph
    assert (spec.classes, spec.output_kind, spec.resize) == (classes, kind, resize)
    assert spec.input_hw == (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])


def test_onnx_model_is_resize_256_center_crop_224():
    spec = load_spec("mobilenetv2-7")
    assert (spec.resize, spec.resize_shorter, spec.input_hw) == ("center-crop", 256, (224, 224))


def test_files_carry_url_size_sha256_where_published():
    v1 = load_spec("mobilenet-v1-0.25-128")
    (f,) = v1.files
    assert f.size == 10_800_019 and f.sha256.startswith("879ddc3e") and f.sha256.endswith("010dfe")
    assert f.url.startswith("http") and f.is_archive
    for spec in [load_spec(n) for n in REAL]:
        assert spec.files[0].sha256 and spec.files[0].size and spec.output_dequantize == (1 / 256, 0.0)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ModelError, match=r"unknown model 'mobilenet-v9'.*mobilenetv2-7"):
        load_spec("mobilenet-v9")


def test_a_repository_adds_its_models_to_the_seeds(tmp_path):
    (tmp_path / "tiny" / "1").mkdir(parents=True)
    (tmp_path / "tiny" / "1" / "model.yml").write_text(
        "framework: onnx\ninput: {name: x, shape: [1, 3, 8, 8], layout: NCHW}\n"
        "output: {name: y, classes: 3, kind: logits}\n"
    )
    assert sorted(s.name for s in list_specs(tmp_path)) == sorted([*SEEDS, *REAL, "tiny"])
    tiny = load_spec("tiny", tmp_path)
    assert (tiny.input_hw, tiny.labels_count, tiny.version) == ((8, 8), 3, 1)


@pytest.mark.parametrize(
    ("output", "preprocess", "want"),
    [
        ({"classes": 12}, {}, (12, 0, "stretch", None)),
        ({"classes": 1001}, {"resize": "full"}, (1000, 1, "stretch", None)),  # the seeds' background rule
        ({"classes": 1001, "background": False}, {}, (1001, 0, "stretch", None)),
        ({"classes": 2}, {"resize": "center-crop", "crop_fraction": 0.875}, (2, 0, "center-crop", 9)),
        ({"classes": 2}, {"resize": "shorter_crop"}, (2, 0, "center-crop", 8)),
        ({"classes": 5}, {"resize": "letterbox", "pad": 114}, (5, 0, "letterbox", None)),
    ],
)
def test_any_class_count_and_resize_kinds(output, preprocess, want):
    spec = parse_spec("x", {**GOOD, "output": {"name": "y", **output}, "preprocess": preprocess})
    assert (spec.labels_count, spec.background_offset, spec.resize, spec.resize_shorter) == want
    assert spec.pad == preprocess.get("pad", 0)


def test_output_kinds():
    multi = parse_spec(
        "x", {**GOOD, "output": {"name": "y", "classes": 4, "kind": "multi-label", "threshold": 0.3}}
    )
    assert multi.multi_label and multi.threshold == 0.3 and multi.sigmoid
    quant = parse_spec(
        "x", {**GOOD, "output": {"name": "y", "classes": 4, "kind": "quantized", "dequantize": [0.5, 3]}}
    )
    assert quant.output_dequantize == (0.5, 3.0) and not quant.multi_label


GOOD = {
    "framework": "onnx",
    "input": {"name": "x", "shape": [1, 8, 8, 3], "layout": "NHWC"},
    "output": {"name": "y", "classes": 1000},
}


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"framework": "caffe"}, "framework must be one of"),
        ({"input": {"name": "x", "shape": [1, 8, 8, 4], "layout": "NHWC"}}, "3 channels"),
        ({"input": {"name": "x", "shape": [1, 8, 8, 3], "layout": "HWC"}}, "input.layout"),
        ({"output": {"name": "y", "classes": 1}}, "at least 2"),
        ({"output": {"name": "y", "classes": 4, "kind": "quantized"}}, "dequantize"),
        ({"output": {"name": "y", "classes": 4, "kind": "multi-label", "threshold": 1.5}}, "threshold"),
        ({"preprocess": {"resize": "squash"}}, "preprocess.resize"),
        ({"preprocess": {"resize": "letterbox", "pad": 300}}, "pad"),
        ({"output": {"name": "y", "classes": 1000, "kind": "scores"}}, "output.kind"),
        ({"files": [{"name": "a.onnx", "sha256": "xyz"}]}, "64 lowercase hex"),
        ({"input": None}, "malformed"),
    ],
)
def test_malformed_descriptors_say_what_is_wrong(patch, match):
    with pytest.raises(ModelError, match=match):
        parse_spec("bad", {**GOOD, **patch})
