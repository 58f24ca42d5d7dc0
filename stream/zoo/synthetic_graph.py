"""Framework-neutral builder for the synthetic stand-ins: layers, seeded weights, calibration.

An architecture (see `synthetic_archs`) is written once against `GraphBuilder`; a subclass
emits it as OpenVINO ops (`synthetic_ir`) or ONNX nodes (`synthetic_onnx`). Next to every
emitted tensor the builder carries its numpy value for a small fixed batch of calibration
images, and sets each convolution's batch-norm from those values, the way training leaves
them: pre-activations get unit spread and a small random offset. Without this, random weights
either fade to zero or blow up (hard-swish grows quadratically) within a few blocks, and every
input gets the same top-1 class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BatchNorm",
    "GraphBuilder",
    "Pads",
    "Tensor",
    "calibration_images",
    "same_pads",
    "symmetric_pads",
]

CALIBRATION_IMAGES = 8
# Target spread of the logits across classes and inputs: max softmax ~0.1-0.5 over 1000 classes.
LOGIT_SPREAD = 2.0
_BN_EPS = 1e-3

Pads = Callable[[int, int, int], tuple[int, int]]


def same_pads(kernel: int, stride: int, size: int) -> tuple[int, int]:
    """TensorFlow/Keras "SAME" padding (the extra pixel goes at the end), for one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def symmetric_pads(kernel: int, stride: int, size: int) -> tuple[int, int]:
    """PyTorch/MXNet `padding=kernel // 2` on both sides, for one axis."""
    del stride, size
    return kernel // 2, kernel // 2


def calibration_images(seed: int, size: int, low: float, high: float) -> np.ndarray:
    """A fixed NCHW batch in the model's input range: half blotchy colour fields, half pixel noise."""
    rng = np.random.default_rng(seed)
    half = CALIBRATION_IMAGES // 2
    coarse = rng.uniform(0.0, 1.0, size=(half, 3, 8, 8))
    blotchy = np.repeat(np.repeat(coarse, -(-size // 8), axis=2), -(-size // 8), axis=3)[:, :, :size, :size]
    blotchy = blotchy + rng.normal(0.0, 0.1, size=blotchy.shape)
    noise = rng.uniform(0.0, 1.0, size=(half, 3, size, size))
    images = np.clip(np.concatenate([blotchy, noise]), 0.0, 1.0)
    return (low + (high - low) * images).astype(np.float32)


@dataclass(frozen=True)
class Tensor:
    """An emitted tensor (`handle`: an openvino Output or an ONNX value name), its spatial
    `size` in the model, and its NCHW value on the (smaller) calibration images."""

    handle: Any
    value: np.ndarray
    size: int

    @property
    def channels(self) -> int:
        return int(self.value.shape[1])


@dataclass(frozen=True)
class BatchNorm:
    """Inference batch-norm of one convolution: y = gamma * (x - mean) / sqrt(var + eps) + beta."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float = _BN_EPS

    def folded(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights and bias of the equivalent convolution (what the IR converter produces)."""
        scale = self.gamma / np.sqrt(self.var + self.eps)
        w = weights * scale.reshape(-1, *([1] * (weights.ndim - 1)))
        return w.astype(np.float32), (self.beta - self.mean * scale).astype(np.float32)


class GraphBuilder:
    """Layers shared by all stand-ins; subclasses implement the `_emit_*` hooks."""

    def __init__(self, seed: int, pads: Pads) -> None:
        self.rng = np.random.default_rng(seed)
        self._pads = pads

    # -- graph ends (format-specific) ------------------------------------------------------
    def input(self, name: str, shape: list[int], layout: str, value_range: tuple[float, float]) -> Tensor:
        """The model input with the seed's name/shape/layout; calibration images in `value_range`."""
        raise NotImplementedError

    def rescale(self, x: Tensor, scale: float, offset: float, name: str) -> Tensor:
        """x * scale + offset inside the graph."""
        raise NotImplementedError

    def output(self, x: Tensor, name: str) -> None:
        """Expose `x` as a model output named `name`."""
        raise NotImplementedError

    # -- layers ----------------------------------------------------------------------------
    def conv(
        self,
        x: Tensor,
        cout: int,
        kernel: int,
        stride: int,
        name: str,
        *,
        act: str | None,
        depthwise: bool = False,
        spread: float = 1.0,
        norm: str = "bn",
        centre: bool = True,
    ) -> Tensor:
        """Convolution + normalization + activation.

        norm="bn": batch-norm after the convolution (the IR emitter folds it into a bias);
        "bias": a plain bias and no batch-norm (squeeze-excite, classifier heads); "none": no
        bias at all (Gluon's classifier). In every case the calibration batch sets the scale so
        the pre-activation has per-channel spread ~`spread` (1 by default, smaller on residual
        branches) around a small random offset; with "none", the weights are instead made
        orthogonal to the mean input so the output is centred without a bias. centre=False
        scales by the root-mean-square instead of the spread around the mean: for layers on
        pooled vectors (squeeze-excite, heads), where 8 calibration images are too few to
        estimate a spread worth amplifying.
        """
        if norm not in ("bn", "bias", "none"):
            raise ValueError(f"{name}: norm must be 'bn', 'bias' or 'none', got {norm!r}")
        groups = x.channels if depthwise else 1
        if depthwise and cout != x.channels:
            raise ValueError(f"{name}: a depthwise conv keeps {x.channels} channels, asked for {cout}")
        fan_in = (x.channels // groups) * kernel * kernel
        raw = self.rng.normal(0.0, np.sqrt(1.0 / fan_in), size=(cout, x.channels // groups, kernel, kernel))
        if norm == "none":
            if kernel != 1 or groups != 1:
                raise ValueError(f"{name}: norm='none' is only for 1x1 convolutions")
            mu = x.value.mean(axis=(0, 2, 3), dtype=np.float64)
            flat = raw.reshape(cout, -1)
            raw = (flat - np.outer(flat @ mu, mu) / max(float(mu @ mu), 1e-12)).reshape(raw.shape)
        raw = raw.astype(np.float32)
        pads = self._pads(kernel, stride, x.size)
        y = _conv_np(x.value, raw, stride, pads, groups)
        bn = self._calibrated_bn(y, spread, centre=centre and norm != "none")
        if norm == "bn":
            handle = self._emit_conv(x.handle, raw, None, stride, pads, groups, name, bn)
        else:
            weights, bias = bn.folded(raw)
            conv_bias = bias if norm == "bias" else None
            handle = self._emit_conv(x.handle, weights, conv_bias, stride, pads, groups, name, None)
        scale = bn.gamma / np.sqrt(bn.var + bn.eps)
        value = y * scale.reshape(1, -1, 1, 1) + (bn.beta - bn.mean * scale).reshape(1, -1, 1, 1)
        out = (x.size + pads[0] + pads[1] - kernel) // stride + 1
        return self.activation(Tensor(handle, value.astype(np.float32), out), act, f"{name}/act")

    def activation(self, x: Tensor, kind: str | None, name: str) -> Tensor:
        if kind is None:
            return x
        fn = _ACTIVATIONS[kind]
        return Tensor(self._emit_activation(x.handle, kind, name), fn(x.value), x.size)

    def add(self, a: Tensor, b: Tensor, name: str) -> Tensor:
        return Tensor(self._emit_binary("add", a.handle, b.handle, name), a.value + b.value, a.size)

    def multiply(self, a: Tensor, b: Tensor, name: str) -> Tensor:
        return Tensor(self._emit_binary("mul", a.handle, b.handle, name), a.value * b.value, a.size)

    def global_pool(self, x: Tensor, name: str) -> Tensor:
        """Mean over H and W, keeping [N, C, 1, 1]."""
        return Tensor(self._emit_global_pool(x.handle, name), x.value.mean(axis=(2, 3), keepdims=True), 1)

    def avg_pool(self, x: Tensor, kernel: int, name: str) -> Tensor:
        """A square valid average pool that covers the whole map (TF-slim/PyTorch global pool)."""
        if kernel != x.size:
            raise ValueError(f"{name}: pool {kernel} must cover the {x.size}px map")
        value = x.value.mean(axis=(2, 3), keepdims=True)
        return Tensor(self._emit_avg_pool(x.handle, kernel, name), value, 1)

    def flatten(self, x: Tensor, name: str) -> Tensor:
        """[N, C, 1, 1] -> [N, C], batch-agnostic."""
        value = x.value.reshape(x.value.shape[0], -1)
        return Tensor(self._emit_flatten(x.handle, value.shape[1], name), value, 1)

    def dense(self, x: Tensor, classes: int, name: str) -> Tensor:
        """Fully connected layer with bias on [N, C], normalized like a `bias_only` conv."""
        raw = self.rng.normal(0.0, np.sqrt(1.0 / x.value.shape[1]), size=(classes, x.value.shape[1]))
        y = (x.value @ raw.T.astype(np.float32))[:, :, None, None]
        weights, bias = self._calibrated_bn(y, LOGIT_SPREAD).folded(raw.astype(np.float32))
        value = x.value @ weights.T + bias
        return Tensor(self._emit_dense(x.handle, weights, bias, name), value.astype(np.float32), 1)

    def softmax(self, x: Tensor, name: str) -> Tensor:
        z = np.exp(x.value - x.value.max(axis=1, keepdims=True))
        return Tensor(self._emit_softmax(x.handle, name), z / z.sum(axis=1, keepdims=True), x.size)

    # -- calibration -----------------------------------------------------------------------
    def _calibrated_bn(self, y: np.ndarray, spread: float, *, centre: bool = True) -> BatchNorm:
        """Batch-norm that maps `y` to spread ~`spread`; with centre=False, mean 0 and beta 0."""
        mean = np.asarray(y.mean(axis=(0, 2, 3), dtype=np.float64) if centre else np.zeros(y.shape[1]))
        std = np.sqrt(np.mean((y - mean.reshape(1, -1, 1, 1)) ** 2, axis=(0, 2, 3), dtype=np.float64))
        # A channel that barely moves on the calibration batch must not be blown up 1000x.
        std = np.maximum(std, 0.1 * float(np.median(std)) + 1e-6)
        channels = y.shape[1]
        gamma = spread * self.rng.uniform(0.8, 1.2, size=channels)
        beta = self.rng.normal(0.0, 0.1 * spread, size=channels) if centre else np.zeros(channels)
        var = np.maximum(std**2 - _BN_EPS, 0.0)
        f32 = [np.asarray(v, dtype=np.float32) for v in (gamma, beta, mean, var)]
        return BatchNorm(f32[0], f32[1], f32[2], f32[3])

    # -- emit hooks ------------------------------------------------------------------------
    def _emit_conv(self, x, weights, bias, stride, pads, groups, name, bn):  # pragma: no cover
        raise NotImplementedError

    def _emit_activation(self, x, kind, name):  # pragma: no cover
        raise NotImplementedError

    def _emit_binary(self, op, a, b, name):  # pragma: no cover
        raise NotImplementedError

    def _emit_global_pool(self, x, name):  # pragma: no cover
        raise NotImplementedError

    def _emit_avg_pool(self, x, kernel, name):  # pragma: no cover
        raise NotImplementedError

    def _emit_flatten(self, x, channels, name):  # pragma: no cover
        raise NotImplementedError

    def _emit_dense(self, x, weights, bias, name):  # pragma: no cover
        raise NotImplementedError

    def _emit_softmax(self, x, name):  # pragma: no cover
        raise NotImplementedError


def _hswish(x: np.ndarray) -> np.ndarray:
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _hsigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "hswish": _hswish,
    "hsigmoid": _hsigmoid,
}


def _conv_np(x: np.ndarray, w: np.ndarray, stride: int, pads: tuple[int, int], groups: int) -> np.ndarray:
    """Reference NCHW convolution (no bias) for groups == 1 or depthwise, float32."""
    n, cin, size, _ = x.shape
    cout, _, k, _ = w.shape
    out = max((size + pads[0] + pads[1] - k) // stride + 1, 1)
    if k == 1 and stride == 1 and groups == 1:
        flat = x.transpose(1, 0, 2, 3).reshape(cin, -1)
        return (w.reshape(cout, cin) @ flat).reshape(cout, n, out, out).transpose(1, 0, 2, 3)
    xp = np.pad(x, ((0, 0), (0, 0), pads, pads))
    span = stride * (out - 1) + 1
    result = np.zeros((n, cout, out, out), dtype=np.float32)
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i : i + span : stride, j : j + span : stride]
            if groups == 1:
                result += np.einsum("oc,nchw->nohw", w[:, :, i, j], patch, optimize=True)
            else:
                result += patch * w[:, 0, i, j].reshape(1, -1, 1, 1)
    return result
