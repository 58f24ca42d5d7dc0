"""Counting conventions of `stream.zoo.flops` on tiny hand-made graphs, and the builders' helpers."""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from stream.errors import ModelError
from stream.zoo.flops import count_flops, count_params
from stream.zoo.synthetic_archs import _depth
from stream.zoo.synthetic_graph import same_pads, symmetric_pads


def _conv_model(batch: int = 1) -> ov.Model:
    x = ops.parameter([batch, 8, 10, 10], np.float32)
    w = ops.constant(np.ones((16, 8, 3, 3), np.float32))
    y = ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1])
    y = ops.add(y, ops.constant(np.zeros((1, 16, 1, 1), np.float32)))
    y = ops.relu(y)
    return ov.Model([ops.result(y)], [x])


def test_conv_with_bias_counts_weights_plus_one_bias_per_channel() -> None:
    assert count_params(_conv_model()) == 16 * 8 * 9 + 16


def test_flops_are_two_times_macs_of_conv_only() -> None:
    assert count_flops(_conv_model()) == pytest.approx(2 * 16 * 8 * 9 * 10 * 10 / 1e9)


def test_dynamic_batch_is_counted_at_batch_one() -> None:
    assert count_flops(_conv_model(batch=-1)) == count_flops(_conv_model())


def test_depthwise_matmul_batchnorm_and_quantized_weights() -> None:
    x = ops.parameter([1, 4, 6, 6], np.float32)
    dw = ops.group_convolution(
        x, ops.constant(np.ones((4, 1, 1, 3, 3), np.float32)), [2, 2], [1, 1], [1, 1], [1, 1]
    )  # -> [1, 4, 3, 3]
    c4 = np.ones(4, np.float32)
    bn = ops.batch_norm_inference(dw, c4, c4, c4, c4, 1e-3)  # folds into 4 biases
    flat = ops.reshape(bn, ops.constant(np.array([1, 36], np.int64)), False)
    # uint8 weights dequantized with a per-row scale and zero point: only the 10x36 weights count
    q = ops.convert(ops.constant(np.ones((10, 36), np.uint8)), np.float32)
    deq = ops.multiply(ops.subtract(q, ops.constant(np.ones((10, 1), np.float32))), ops.constant(c4[:1]))
    y = ops.matmul(flat, deq, False, True)
    model = ov.Model([ops.result(y)], [x])
    assert count_params(model) == 4 * 9 + 4 + 10 * 36
    assert count_flops(model) == pytest.approx(2 * (4 * 3 * 3 * 9 + 10 * 36) / 1e9)


def test_a_missing_model_file_is_a_model_error(tmp_path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        count_params(tmp_path / "nope.xml")


def test_same_padding_matches_tensorflow() -> None:
    assert same_pads(3, 2, 128) == (0, 1)  # TF puts the odd pixel at the end
    assert same_pads(5, 2, 28) == (1, 2)  # = Keras ZeroPadding2D(correct_pad) + valid
    assert same_pads(3, 1, 7) == (1, 1)
    assert same_pads(1, 1, 7) == (0, 0)
    assert symmetric_pads(3, 2, 224) == (1, 1)


def test_keras_depth_rounding() -> None:
    # channel counts of Keras MobileNetV3Small
    assert [_depth(v) for v in (16 * 0.25, 72, 88, 96 * 0.25, 240 * 0.25, 144 * 0.25, 576)] == [
        8, 72, 88, 24, 64, 40, 576,
    ]  # fmt: skip
