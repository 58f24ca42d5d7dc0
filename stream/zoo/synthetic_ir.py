"""Emit a `GraphBuilder` architecture as an `openvino.Model` (opset13), batch-norm folded.

The result looks like what the Open Model Zoo converter makes of the original model: every
convolution carries its folded batch-norm as a per-channel bias `Add`. Every node gets an
explicit friendly name, so two builds serialize to identical bytes (OpenVINO's automatic
names carry a process-wide counter).
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from stream.zoo.synthetic_graph import BatchNorm, GraphBuilder, Pads, Tensor, calibration_images

__all__ = ["IrBuilder"]


class IrBuilder(GraphBuilder):
    """Builds an `openvino.Model`; call `input`, layers, `output`, then `model`."""

    def __init__(self, seed: int, pads: Pads) -> None:
        super().__init__(seed, pads)
        self._seed = seed
        self._params: list[ov.Node] = []
        self._results: list[ov.Node] = []

    # -- graph ends ------------------------------------------------------------------------
    def input(self, name: str, shape: list[int], layout: str, value_range: tuple[float, float]) -> Tensor:
        """A float32 Parameter with the seed's name, shape and layout; NCHW inside."""
        param = ops.parameter(shape, np.float32, name=name)
        param.output(0).get_tensor().set_names({name})
        param.set_layout(ov.Layout(layout))
        self._params.append(param)
        size = shape[1] if layout == "NHWC" else shape[2]
        value = calibration_images(self._seed + 1, size, *value_range)
        handle = param.output(0)
        if layout == "NHWC":
            order = self._const(np.array([0, 3, 1, 2], dtype=np.int64), f"{name}/to_nchw/order")
            handle = ops.transpose(handle, order, name=f"{name}/to_nchw").output(0)
        return Tensor(handle, value, size)

    def rescale(self, x: Tensor, scale: float, offset: float, name: str) -> Tensor:
        """x * scale + offset inside the graph (Keras `Rescaling`)."""
        s = self._const(np.array(scale, dtype=np.float32), f"{name}/scale")
        o = self._const(np.array(offset, dtype=np.float32), f"{name}/offset")
        y = ops.add(ops.multiply(x.handle, s, name=f"{name}/mul"), o, name=f"{name}/add")
        return Tensor(y.output(0), (x.value * scale + offset).astype(np.float32), x.size)

    def output(self, x: Tensor, name: str) -> None:
        """Give the producing node and its tensor the seed's output name."""
        x.handle.get_node().set_friendly_name(name)
        x.handle.get_tensor().set_names({name})
        self._results.append(ops.result(x.handle, name=f"{name}/sink_port_0"))

    def model(self, name: str) -> ov.Model:
        return ov.Model(self._results, self._params, name)

    # -- hooks -----------------------------------------------------------------------------
    def _const(self, value: np.ndarray, name: str) -> ov.Node:
        return ops.constant(np.ascontiguousarray(value), name=name)

    def _emit_conv(self, x, weights, bias, stride, pads, groups, name, bn: BatchNorm | None):
        if bn is not None:
            weights, bias = bn.folded(weights)
        begin, end = [pads[0]] * 2, [pads[1]] * 2
        if groups == 1:
            w = self._const(weights, f"{name}/weights")
            y = ops.convolution(x, w, [stride] * 2, begin, end, [1, 1], name=f"{name}/conv")
        else:
            cout, _, k, _ = weights.shape
            w = self._const(weights.reshape(groups, cout // groups, -1, k, k), f"{name}/weights")
            y = ops.group_convolution(x, w, [stride] * 2, begin, end, [1, 1], name=f"{name}/conv")
        b = self._const(bias.reshape(1, -1, 1, 1), f"{name}/bias")
        return ops.add(y, b, name=f"{name}/add_bias").output(0)

    def _emit_activation(self, x, kind, name):
        if kind == "relu":
            return ops.relu(x, name=name).output(0)
        if kind == "relu6":
            return ops.clamp(x, 0.0, 6.0, name=name).output(0)
        if kind == "hswish":
            return ops.hswish(x, name=name).output(0)
        if kind == "hsigmoid":
            node = ops.hsigmoid(x)  # this opset helper ignores `name=`
            node.set_friendly_name(name)
            return node.output(0)
        raise ValueError(f"unknown activation {kind!r}")

    def _emit_binary(self, op, a, b, name):
        fn = ops.add if op == "add" else ops.multiply
        return fn(a, b, name=name).output(0)

    def _emit_global_pool(self, x, name):
        axes = self._const(np.array([2, 3], dtype=np.int64), f"{name}/axes")
        return ops.reduce_mean(x, axes, keep_dims=True, name=name).output(0)

    def _emit_avg_pool(self, x, kernel, name):
        return ops.avg_pool(x, [1, 1], [0, 0], [0, 0], [kernel, kernel], True, name=name).output(0)

    def _emit_flatten(self, x, channels, name):
        shape = self._const(np.array([-1, channels], dtype=np.int64), f"{name}/shape")
        return ops.reshape(x, shape, special_zero=False, name=name).output(0)

    def _emit_dense(self, x, weights, bias, name):
        y = ops.matmul(x, self._const(weights, f"{name}/weights"), False, True, name=f"{name}/matmul")
        return ops.add(y, self._const(bias.reshape(1, -1), f"{name}/bias"), name=f"{name}/add_bias").output(0)

    def _emit_softmax(self, x, name):
        return ops.softmax(x, 1, name=name).output(0)
