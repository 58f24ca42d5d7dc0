"""Parameter and FLOP counts of an OpenVINO model, in the convention of the Open Model Zoo cards.

Parameters: the model as deployed, batch-norm folded into the convolution before it. That is
every convolution and fully-connected weight, plus one bias per output channel where the graph
has one (a bias `Add` after a convolution/MatMul, or a `BatchNormInference`, which folds into
exactly such a bias). Batch-norm running statistics are not parameters, nor are shape
constants, scalars, or the scales and zero points of quantized weights. With this convention
the counts land on the cards: MobileNet v1-0.25-128 467,593 (card 0.468 M), v3-small 2,536,800
(card 2.537 M), tonylins v2 3,488,872 (card 3.489 M).

FLOPs: 2 x the multiply-accumulates of convolutions (grouped and depthwise included) and
matrix multiplications, at batch 1; element-wise ops, activations, pooling and softmax are not
counted. This is the convention that fits all three cards: v1-0.25-128 0.0271 GFLOPs (card
0.028), v3-small 0.1130 (card 0.11682), tonylins v2 0.6272 (card 0.615). Adding one FLOP per
element for bias/activations moves v2 to +5 % of its card, so the cards count multiply-adds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov

from stream.errors import ModelError

__all__ = ["count_params", "count_flops"]

_WEIGHTED = {
    "Convolution",
    "GroupConvolution",
    "MatMul",
    "ConvolutionBackpropData",
    "GroupConvolutionBackpropData",
}
_BIAS_PRODUCERS = _WEIGHTED
_BIAS_OPS = {"Add"}
_INDEX_TYPES = {ov.Type.i32, ov.Type.i64, ov.Type.u32, ov.Type.u64, ov.Type.boolean}


def _as_model(model: ov.Model | str | Path) -> ov.Model:
    if isinstance(model, ov.Model):
        return model
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        return ov.Core().read_model(path)
    except RuntimeError as e:
        raise ModelError(f"cannot read model {path}: {e}") from e


def _constant_leaves(model: ov.Model) -> dict[str, list[ov.Node]]:
    """For every node computed from constants only, the Constant nodes it is computed from."""
    leaves: dict[str, list[ov.Node]] = {}
    for node in model.get_ordered_ops():
        kind = node.get_type_name()
        if kind == "Constant":
            leaves[node.get_name()] = [node]
            continue
        if kind in ("Parameter", "ReadValue") or node.get_input_size() == 0:
            continue
        sources = [node.input_value(i).get_node().get_name() for i in range(node.get_input_size())]
        if all(name in leaves for name in sources):
            leaves[node.get_name()] = [leaf for name in sources for leaf in leaves[name]]
    return leaves


def _size(node: ov.Node) -> int:
    return int(np.prod(list(node.get_output_shape(0)), dtype=np.int64))


def _main_leaf(leaves: list[ov.Node]) -> ov.Node | None:
    """The tensor a constant sub-graph is about (the weight, not its scale or zero point)."""
    candidates = [leaf for leaf in leaves if leaf.get_output_element_type(0) not in _INDEX_TYPES]
    return max(candidates, key=_size, default=None)


def count_params(model: ov.Model | str | Path) -> int:
    """Trainable parameters of `model` (an `openvino.Model` or a path OpenVINO can read).

    Counted as the Open Model Zoo cards count them (see the module docstring): weights of
    convolutions and matrix multiplications, plus one bias per output channel (an explicit
    bias `Add`, or a batch-norm, which folds into one). Each constant is counted once.
    """
    ov_model = _as_model(model)
    leaves = _constant_leaves(ov_model)
    counted: dict[str, int] = {}
    for node in ov_model.get_ordered_ops():
        kind = node.get_type_name()
        if node.get_name() in leaves:
            continue
        sources = [node.input_value(i).get_node() for i in range(node.get_input_size())]
        picks: list[ov.Node | None] = []
        is_bias = kind in _BIAS_OPS and any(s.get_type_name() in _BIAS_PRODUCERS for s in sources)
        if kind in _WEIGHTED or is_bias:
            picks = [_main_leaf(leaves[s.get_name()]) for s in sources if s.get_name() in leaves]
        elif kind == "BatchNormInference":
            # Folded, a batch-norm is one bias per channel (gamma goes into the weights).
            gamma = sources[1] if node.get_input_size() == 5 else sources[0]
            counted[node.get_name()] = _size(gamma)
        for leaf in picks:
            if leaf is not None:
                counted[leaf.get_name()] = _size(leaf)
    return int(sum(counted.values()))


def _static_batch_one(model: ov.Model) -> ov.Model:
    """A copy of `model` with every dynamic batch dimension set to 1; other dims must be static."""
    clone = model.clone()
    shapes = {}
    for port in clone.inputs:
        shape = port.get_partial_shape()
        if shape.rank.is_dynamic:
            raise ModelError(f"input {port.any_name!r} has a dynamic rank; cannot count FLOPs")
        dims = [d.get_length() if d.is_static else -1 for d in shape]
        if dims and dims[0] == -1:
            dims[0] = 1
        if -1 in dims:
            raise ModelError(f"input {port.any_name!r} has dynamic dims {shape}; cannot count FLOPs")
        shapes[port] = ov.PartialShape(dims)
    clone.reshape(shapes)
    return clone


def count_flops(model: ov.Model | str | Path) -> float:
    """GFLOPs of one inference at batch 1: 2 x multiply-accumulates of convolutions and MatMuls.

    Element-wise ops, activations, pooling and softmax are not counted (see the module
    docstring for why this is the cards' convention). Dynamic batch is evaluated at 1.
    """
    ov_model = _static_batch_one(_as_model(model))
    macs = 0
    for node in ov_model.get_ordered_ops():
        kind = node.get_type_name()
        if kind not in _WEIGHTED:
            continue
        out = int(np.prod(list(node.get_output_shape(0)), dtype=np.int64))
        weights = list(node.get_input_shape(1))
        if kind == "Convolution":
            per_output = int(np.prod(weights[1:]))  # [Cout, Cin, kh, kw]
        elif kind == "GroupConvolution":
            per_output = int(np.prod(weights[2:]))  # [G, Cout/G, Cin/G, kh, kw]
        elif kind == "MatMul":
            a = list(node.get_input_shape(0))
            per_output = a[-2] if node.get_attributes().get("transpose_a") and len(a) > 1 else a[-1]
        else:  # transposed convolutions: every input element meets Cout/G x kh x kw weights
            out = int(np.prod(list(node.get_input_shape(0)), dtype=np.int64))
            per_output = int(np.prod(weights[1:] if kind == "ConvolutionBackpropData" else weights[3:]))
            per_output *= 1 if kind == "ConvolutionBackpropData" else weights[2]
        macs += out * per_output
    return 2.0 * macs / 1e9
