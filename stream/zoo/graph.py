"""Graph surgery on an `openvino.Model` so every model takes the pipeline layout and batches.

`prepare_model` turns a raw model (as its framework defined it) into the one the engine compiles:
- input: uint8 [N, h, w, 3] RGB with a dynamic N; dtype, channel order, mean/scale and layout are
  done inside the graph by `openvino.preprocess.PrePostProcessor`;
- output: float32 [N, classes] scores (integer outputs dequantized, softmax on logits, sigmoid on
  multi-label logits, a background column dropped): probabilities, or for multi-label models
  independent per-class scores in [0, 1].
Models that hard-code batch 1 in a Reshape target (both real TFLite MobileNets do) get that
constant rewritten to -1 first (`relax_batch`).
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from openvino.preprocess import PrePostProcessor

from stream.errors import ModelError
from stream.zoo.descriptors import ModelSpec

__all__ = ["find_input", "find_output", "prepare_model", "raw_model", "relax_batch"]


def find_input(model: ov.Model, spec: ModelSpec) -> ov.Output:
    for port in model.inputs:
        if spec.input_name in port.get_names():
            return port
    names = sorted(n for p in model.inputs for n in p.get_names())
    raise ModelError(f"{spec.name}: model has no input {spec.input_name!r} (inputs: {names})")


def find_output(model: ov.Model, spec: ModelSpec) -> ov.Output:
    for port in model.outputs:
        if spec.output_name in port.get_names():
            return port
    names = sorted(n for p in model.outputs for n in p.get_names())
    raise ModelError(f"{spec.name}: model has no output {spec.output_name!r} (outputs: {names})")


def relax_batch(model: ov.Model) -> int:
    """Rewrite Reshape targets that pin batch 1 to -1 (infer it). Returns how many were rewritten.

    Only a constant target whose first element is 1, that has no other -1, and whose data input
    has a static batch of 1 (the batch dimension flows into it unchanged) is touched.
    """
    rewritten = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Reshape":
            continue
        target = node.input_value(1).get_node()
        if target.get_type_name() != "Constant":
            continue
        values = np.array(target.get_vector()).astype(np.int64)
        data_shape = node.input_value(0).get_partial_shape()
        if values.ndim != 1 or values.size == 0 or values[0] != 1 or (values == -1).any():
            continue
        if data_shape.rank.is_dynamic or data_shape.rank.get_length() == 0:
            continue
        first = data_shape[0]
        if not (first.is_static and first.get_length() == 1):
            continue
        values[0] = -1
        new_target = ops.constant(values.astype(target.get_element_type().to_dtype()))
        node.input(1).replace_source_output(new_target.output(0))
        rewritten += 1
    if rewritten:
        model.validate_nodes_and_infer_types()
    return rewritten


def raw_model(model: ov.Model, spec: ModelSpec) -> ov.Model:
    """The model with a dynamic batch dimension and nothing else changed (for references/checks)."""
    port = find_input(model, spec)
    find_output(model, spec)
    shape = port.get_partial_shape()
    want = list(spec.input_shape)
    if shape.rank.is_static:
        got = [d.get_length() if d.is_static else -1 for d in shape]
        if len(got) != 4 or any(g not in (-1, w) for g, w in zip(got[1:], want[1:], strict=True)):
            raise ModelError(
                f"{spec.name}: model input {spec.input_name!r} has shape {got}, "
                f"descriptor says {want} ({spec.layout})"
            )
    relax_batch(model)
    try:
        model.reshape({port: ov.PartialShape([-1, *want[1:]])})
    except RuntimeError as e:
        raise ModelError(f"{spec.name}: cannot give the model a dynamic batch dimension: {e}") from e
    return model


def _postprocess(out: ov.Output, spec: ModelSpec) -> ov.Output:
    node = out
    if spec.output_dequantize is not None or not node.get_element_type().is_real():
        scale, zero = spec.output_dequantize or (1.0, 0.0)
        node = ops.convert(node, "f32").output(0)
        if zero:
            node = ops.subtract(node, ops.constant(np.float32(zero))).output(0)
        if scale != 1.0:
            node = ops.multiply(node, ops.constant(np.float32(scale))).output(0)
    elif node.get_element_type() != ov.Type.f32:
        node = ops.convert(node, "f32").output(0)
    rank = node.get_partial_shape().rank
    if rank.is_static and rank.get_length() != 2:
        node = ops.reshape(node, ops.constant(np.array([0, -1], np.int64)), special_zero=True).output(0)
    if spec.output_kind == "logits":
        node = ops.softmax(node, 1).output(0)
    elif spec.multi_label and spec.sigmoid:
        node = ops.sigmoid(node).output(0)
    if spec.background_offset:
        node = ops.slice(
            node,
            ops.constant(np.array([spec.background_offset], np.int64)),
            ops.constant(np.array([spec.classes], np.int64)),
            ops.constant(np.array([1], np.int64)),
            ops.constant(np.array([1], np.int64)),
        ).output(0)
    return node


def prepare_model(model: ov.Model, spec: ModelSpec) -> ov.Model:
    """uint8 NHWC RGB in, float32 [N, classes] scores out (see the module docstring)."""
    model = raw_model(model, spec)
    out = find_output(model, spec)
    result = out.get_node()  # model outputs are the Result nodes' ports
    probs = _postprocess(result.input_value(0), spec)
    probs.get_tensor().set_names({"probabilities"})
    result.input(0).replace_source_output(probs)
    for other in [r for r in model.get_results() if r.get_friendly_name() != result.get_friendly_name()]:
        model.remove_result(other)
    model.validate_nodes_and_infer_types()

    ppp = PrePostProcessor(model)
    h, w = spec.input_hw
    inp = ppp.input(spec.input_name)
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_shape([-1, h, w, 3])
    inp.model().set_layout(ov.Layout(spec.layout))
    in_type = find_input(model, spec).get_element_type()
    steps = inp.preprocess()
    if in_type != ov.Type.u8:
        steps.convert_element_type(ov.Type.f32)
    if spec.color == "BGR":
        steps.reverse_channels()
    if not spec.normalization_in_graph:
        if in_type == ov.Type.u8:
            raise ModelError(f"{spec.name}: uint8 input cannot take mean/scale outside the graph")
        if any(m != 0.0 for m in spec.mean):
            steps.mean(list(spec.mean))
        if any(s != 1.0 for s in spec.scale):
            steps.scale(list(spec.scale))
    if in_type not in (ov.Type.u8, ov.Type.f32):
        steps.convert_element_type(in_type)
    return ppp.build()
