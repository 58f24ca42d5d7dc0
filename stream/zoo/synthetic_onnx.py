"""Emit a `GraphBuilder` architecture as an ONNX opset-7 model, the way the ONNX zoo ships it.

Like `mobilenetv2-7.onnx` (exported from MXNet Gluon): IR version 3, every weight an
initializer that is also listed as a graph input, explicit `BatchNormalization` nodes with
running statistics, ReLU6 as opset-6 `Clip` with min/max attributes, a symbolic batch `N`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stream.zoo.synthetic_graph import BatchNorm, GraphBuilder, Pads, Tensor, calibration_images

__all__ = ["OnnxBuilder", "ONNX_OPSET", "ONNX_IR_VERSION"]

ONNX_OPSET = 7
ONNX_IR_VERSION = 3


class OnnxBuilder(GraphBuilder):
    """Builds an `onnx.ModelProto`; call `input`, layers, `output`, then `model`."""

    def __init__(self, seed: int, pads: Pads) -> None:
        super().__init__(seed, pads)
        self._seed = seed
        self._nodes: list[onnx.NodeProto] = []
        self._inits: list[onnx.TensorProto] = []
        self._inputs: list[onnx.ValueInfoProto] = []
        self._outputs: list[onnx.ValueInfoProto] = []
        self._batch: str | int = 1

    # -- graph ends ------------------------------------------------------------------------
    def input(self, name: str, shape: list[int], layout: str, value_range: tuple[float, float]) -> Tensor:
        if layout != "NCHW":
            raise ValueError(f"ONNX stand-ins are NCHW, got {layout}")
        self._batch = "N" if shape[0] == -1 else shape[0]
        dims = [self._batch, *shape[1:]]
        self._inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        return Tensor(name, calibration_images(self._seed + 1, shape[2], *value_range), shape[2])

    def rescale(self, x: Tensor, scale: float, offset: float, name: str) -> Tensor:
        s = self._init(np.array([scale], dtype=np.float32), f"{name}_scale")
        o = self._init(np.array([offset], dtype=np.float32), f"{name}_offset")
        y = self._node("Add", [self._node("Mul", [x.handle, s], f"{name}_mul"), o], f"{name}_add")
        return Tensor(y, (x.value * scale + offset).astype(np.float32), x.size)

    def output(self, x: Tensor, name: str) -> None:
        if x.handle != name:
            raise ValueError(f"the last node must be named {name!r}, got {x.handle!r}")
        dims = [self._batch, *x.value.shape[1:]]
        self._outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))

    def model(self, name: str) -> onnx.ModelProto:
        # IR version 3 requires every initializer to be a graph input too (the zoo file does so).
        weight_inputs = [
            helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self._inits
        ]
        graph = helper.make_graph(
            self._nodes, name, self._inputs + weight_inputs, self._outputs, initializer=self._inits
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
            producer_name="framestream-synthetic",
            ir_version=ONNX_IR_VERSION,
        )
        onnx.checker.check_model(model)
        return model

    # -- hooks -----------------------------------------------------------------------------
    def _init(self, value: np.ndarray, name: str) -> str:
        self._inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def _node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self._nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def _emit_conv(self, x, weights, bias, stride, pads, groups, name, bn: BatchNorm | None):
        inputs = [x, self._init(weights, f"{name}_weight")]
        if bias is not None:
            inputs.append(self._init(bias, f"{name}_bias"))
        k = int(weights.shape[-1])
        y = self._node(
            "Conv",
            inputs,
            f"{name}_fwd",
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pads[0], pads[0], pads[1], pads[1]],
            group=groups,
            dilations=[1, 1],
        )
        if bn is None:
            return y
        stats = [(bn.gamma, "gamma"), (bn.beta, "beta"), (bn.mean, "running_mean"), (bn.var, "running_var")]
        names = [self._init(v.astype(np.float32), f"{name}_bn_{label}") for v, label in stats]
        return self._node("BatchNormalization", [y, *names], f"{name}_bn_fwd", epsilon=bn.eps)

    def _emit_activation(self, x, kind, name):
        if kind == "relu":
            return self._node("Relu", [x], name)
        if kind == "relu6":
            return self._node("Clip", [x], name, min=0.0, max=6.0)
        if kind == "hsigmoid":
            return self._node("HardSigmoid", [x], name, alpha=1.0 / 6.0, beta=0.5)
        raise ValueError(f"activation {kind!r} has no opset-{ONNX_OPSET} form here")

    def _emit_binary(self, op, a, b, name):
        return self._node("Add" if op == "add" else "Mul", [a, b], name)

    def _emit_global_pool(self, x, name):
        return self._node("GlobalAveragePool", [x], name)

    def _emit_avg_pool(self, x, kernel, name):
        return self._node("AveragePool", [x], name, kernel_shape=[kernel, kernel], strides=[1, 1])

    def _emit_flatten(self, x, channels, name):
        # Gluon's Flatten exports as Reshape(0, -1): keeps the batch dimension symbolic.
        shape = self._init(np.array([0, -1], dtype=np.int64), f"{name}_shape")
        return self._node("Reshape", [x, shape], name)

    def _emit_dense(self, x, weights, bias, name):
        w = self._init(weights, f"{name}_weight")
        b = self._init(bias, f"{name}_bias")
        return self._node("Gemm", [x, w, b], name, transB=1)

    def _emit_softmax(self, x, name):
        return self._node("Softmax", [x], name, axis=1)
