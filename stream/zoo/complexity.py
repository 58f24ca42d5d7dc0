"""Parameter and FLOP counts of an `openvino.Model`, the way model cards count them.

- params: weights of every Convolution / GroupConvolution / MatMul (the shape of the weights port,
  so quantized weights count once however they are dequantized), plus the constant bias added right
  after one, plus BatchNorm gamma and beta.
- FLOPs: 2 x multiply-accumulates of those layers at batch 1 (the Open Model Zoo convention:
  MobileNet v2 1.0/224 has about 300 M MACs and is listed as 0.615 GFLOPs). Element-wise ops,
  pooling and activations are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import openvino as ov

__all__ = ["Complexity", "count_complexity"]

_WEIGHTED = ("Convolution", "GroupConvolution", "MatMul")
# ops between a stored weight and its use (dequantization, reshapes); input 0 leads to the weight
_DECOMPRESSION = (
    "Convert",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "FakeQuantize",
    "Multiply",
    "Subtract",
    "Transpose",
)


@dataclass(frozen=True)
class Complexity:
    params: int
    flops: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def _static(shape: ov.PartialShape) -> list[int] | None:
    if shape.is_dynamic:
        return None
    return [d.get_length() for d in shape]


def _is_constant_chain(node: ov.Node) -> bool:
    """A Constant, possibly behind Convert / Reshape / Unsqueeze / FakeQuantize (weight decompression)."""
    while node.get_type_name() != "Constant":
        if node.get_type_name() not in _DECOMPRESSION:
            return False
        node = node.input_value(0).get_node()
    return True


def _macs(node: ov.Node) -> int:
    kind = node.get_type_name()
    out = _static(node.get_output_partial_shape(0))
    w = _static(node.get_input_partial_shape(1))
    if out is None or w is None:
        return 0
    if kind == "Convolution":  # weights [Cout, Cin, kh, kw]
        return prod(out) * prod(w[1:])
    if kind == "GroupConvolution":  # weights [G, Cout/G, Cin/G, kh, kw]
        return prod(out) * prod(w[2:])
    a = _static(node.get_input_partial_shape(0))
    if a is None or not a:
        return 0
    k = a[-2] if node.get_attributes().get("transpose_a") else a[-1]
    return prod(out) * k


def _bias(node: ov.Node) -> int:
    for target in node.output(0).get_target_inputs():
        add = target.get_node()
        if add.get_type_name() != "Add":
            continue
        other = add.input_value(1 - target.get_index()).get_node()
        if _is_constant_chain(other):
            shape = _static(other.get_output_partial_shape(0))
            return prod(shape) if shape else 0
    return 0


def count_complexity(model: ov.Model, input_shape: tuple[int, ...] | None = None) -> Complexity:
    """Count params/FLOPs of `model` (not modified); `input_shape` fixes a dynamic input first."""
    m = model.clone()
    if input_shape is not None:
        m.reshape({m.inputs[0]: ov.PartialShape([1, *input_shape[1:]])})
    params = flops = 0
    for node in m.get_ordered_ops():
        kind = node.get_type_name()
        if kind in _WEIGHTED:
            if not _is_constant_chain(node.input_value(1).get_node()):
                continue
            w = _static(node.get_input_partial_shape(1))
            params += prod(w) if w else 0
            params += _bias(node)
            flops += 2 * _macs(node)
        elif kind == "BatchNormInference":
            shape = _static(node.get_input_partial_shape(1))
            params += 2 * (prod(shape) if shape else 0)
    return Complexity(params=params, flops=flops)
