"""Classifiers of the kind users bring, built in tests: none of them has 1000 classes.

- `cut_ir`: the real MobileNet v2 TFLite of ../shared cut to a handful of its classes (a Gather on
  its uint8 output), saved as OpenVINO IR with its labels in rt_info as DL Streamer writes them.
- `colour_onnx`: a small ONNX classifier of which colour dominates an image (red, green, blue):
  float NCHW input, logits out; its answer on a plain-coloured image is known.
- `colour_multi_label_onnx`: the same with one sigmoid score per colour (a yellow image is red and
  green), with the sigmoid inside the graph or not.
- bad models: a detector-shaped output, two image inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "COLOURS",
    "CUT_CLASSES",
    "colour_multi_label_onnx",
    "colour_onnx",
    "cut_ir",
    "detector_onnx",
    "two_inputs_onnx",
    "write_labels",
]

COLOURS = ("red", "green", "blue")

# ImageNet classes (1001-numbering of the TF-slim file: index 0 is background) the cut model keeps:
# the expected top-1 of several shared photos, and some that no photo shows.
CUT_CLASSES = {
    "Egyptian_cat": 286,
    "chickadee": 20,
    "macaw": 89,
    "hotdog": 935,
    "dragonfly": 320,
    "daisy": 986,
    "racer": 752,
    "tench": 1,
    "goldfish": 2,
    "hammerhead": 5,
    "volcano": 981,
    "toaster": 860,
}


def write_labels(path: Path, labels: list[str] | tuple[str, ...]) -> Path:
    path.write_text("\n".join(labels) + "\n", encoding="utf-8")
    return path


def cut_ir(tflite: Path, folder: Path, classes: dict[str, int] = CUT_CLASSES) -> Path:
    """`tflite`'s output cut to `classes` (label -> its output column), as IR with rt_info labels."""
    import openvino as ov
    import openvino.opset13 as ops

    model = ov.Core().read_model(str(tflite))
    result = model.outputs[0].get_node()
    columns = ops.constant(np.array(list(classes.values()), np.int64))
    cut = ops.gather(result.input_value(0), columns, ops.constant(np.int64(1)))
    cut.output(0).get_tensor().set_names({"scores"})
    small = ov.Model([cut.output(0)], model.get_parameters(), "cut")
    small.set_rt_info(" ".join(classes), ["model_info", "labels"])  # DL Streamer: space-separated
    small.set_rt_info("standard", ["model_info", "resize_type"])
    folder.mkdir(parents=True, exist_ok=True)
    xml = folder / "cut.xml"
    ov.save_model(small, str(xml), compress_to_fp16=False)
    return xml


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _colour_graph(name: str, size: int, sigmoid: bool, multi: bool) -> onnx.GraphProto:
    """pixels in [0, 1] (mean 0, scale 255 outside) -> per-channel means -> 3 scores.

    Softmax-style: 20 * (channel mean - mean of the three), so the dominant colour wins. Multi-label:
    20 * (channel mean - 0.5), so every colour over half brightness is on."""
    if multi:
        weights = np.eye(3, dtype=np.float32) * 20.0
        bias = np.full(3, -10.0, np.float32)
    else:
        weights = (np.eye(3, dtype=np.float32) - 1.0 / 3.0) * 20.0
        bias = np.zeros(3, np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits" if sigmoid else "scores"]),
    ]
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["scores"]))
    return helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")],
    )


def colour_onnx(path: Path, size: int = 32) -> Path:
    """Which colour dominates: 3 logits (labels `COLOURS`); needs --mean 0 --scale 255."""
    return _save(_colour_graph("colour", size, sigmoid=False, multi=False), path)


def colour_multi_label_onnx(path: Path, size: int = 32, *, sigmoid_inside: bool) -> Path:
    """Which colours are over half brightness: 3 independent scores (labels `COLOURS`)."""
    return _save(_colour_graph("colours", size, sigmoid=sigmoid_inside, multi=True), path)


def detector_onnx(path: Path) -> Path:
    """A 1x1 convolution to a [N, 6, 8, 8] map: shaped like a detector's or segmenter's output."""
    w = np.ones((6, 3, 1, 1), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["boxes"])],
        "detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 6, 8, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    return _save(graph, path)


def two_inputs_onnx(path: Path) -> Path:
    """Two images in, 3 scores out (a siamese-style model framestream cannot feed)."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["left", "right"], ["both"]),
            helper.make_node("GlobalAveragePool", ["both"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["scores"], axis=1),
        ],
        "pair",
        [
            helper.make_tensor_value_info("left", TensorProto.FLOAT, [1, 3, 8, 8]),
            helper.make_tensor_value_info("right", TensorProto.FLOAT, [1, 3, 8, 8]),
        ],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])],
    )
    return _save(graph, path)
