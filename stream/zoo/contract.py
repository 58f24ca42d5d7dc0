"""Contract checks: does the compiled pipeline model do exactly what the descriptor promises?

The reference here is plain numpy: the descriptor's preprocessing (colour order, mean/scale,
layout) applied to a uint8 image, fed to the *raw* model (only its batch made dynamic), and its
output turned into per-class scores. The engine, which does all of that inside the
compiled graph, must agree within float tolerance, batch by batch and image by image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import openvino as ov

from stream.core.scoring import to_probabilities
from stream.zoo.descriptors import ModelSpec

__all__ = ["CheckResult", "reference_input", "reference_output", "sample_images", "run_contract_checks"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def reference_input(fitted: np.ndarray, spec: ModelSpec, dtype: np.dtype) -> np.ndarray:
    """uint8 [N, h, w, 3] RGB at the model size -> what the raw model takes, per the descriptor."""
    if dtype == np.uint8:
        x = fitted[..., ::-1] if spec.color == "BGR" else fitted
    else:
        x = fitted.astype(np.float32)
        if spec.color == "BGR":
            x = x[..., ::-1]
        if not spec.normalization_in_graph:
            x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.scale, np.float32)
    if spec.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x.astype(dtype, copy=False))


def reference_output(raw: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Raw model output -> float32 [N, classes] scores, per the descriptor."""
    x = raw.reshape(raw.shape[0], -1).astype(np.float32)
    if spec.output_dequantize is not None:
        scale, zero = spec.output_dequantize
        x = (x - np.float32(zero)) * np.float32(scale)
    return to_probabilities(x, spec.output_kind, background=spec.background_offset, sigmoid_on=spec.sigmoid)


def sample_images(spec: ModelSpec, n: int, seed: int = 0) -> np.ndarray:
    """n deterministic uint8 [h, w, 3] test images: smooth gradients plus noise, all different."""
    h, w = spec.input_hw
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        base = np.stack(
            [128 + 100 * np.sin(xx / (7 + i) + c) * np.cos(yy / (11 + 2 * i) - c) for c in (0.0, 1.0, 2.0)],
            -1,
        )
        out[i] = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return out


def _output_kind(spec: ModelSpec, raw_out: np.ndarray) -> CheckResult:
    flat = raw_out.reshape(raw_out.shape[0], -1).astype(np.float64)
    if spec.output_dequantize is not None:
        flat = (flat - spec.output_dequantize[1]) * spec.output_dequantize[0]
    sums = flat.sum(axis=1)
    in_unit = bool((flat >= 0).all() and (flat <= 1).all())
    if spec.multi_label:  # independent scores: in [0, 1] exactly when the model applied the sigmoid
        seen = "scores in [0, 1]" if in_unit else "raw scores"
        return CheckResult(
            "output kind", in_unit != spec.sigmoid, f"descriptor says multi-label, model emits {seen}"
        )
    # uint8 probabilities round most of 1001 small values down to 0, so their rows sum to less
    low = 0.5 if spec.output_dequantize is not None else 0.95
    is_prob = bool(in_unit and (sums >= low).all() and (sums <= 1.05).all())
    ok = is_prob == (spec.output_kind == "probabilities")
    if spec.output_kind == "quantized":  # dequantized scores of a model cut to some classes need not sum to 1
        ok, is_prob = in_unit, in_unit
    seen = "probabilities" if is_prob else f"raw scores (row sums {sums.min():.3g}..{sums.max():.3g})"
    return CheckResult("output kind", ok, f"descriptor says {spec.output_kind}, model emits {seen}")


def run_contract_checks(
    spec: ModelSpec, infer: Callable[[np.ndarray], np.ndarray], raw: ov.CompiledModel, images: np.ndarray
) -> list[CheckResult]:
    """Engine (`infer`) vs numpy reference, batch vs single image, and output sanity, on `images`."""
    in_dtype = raw.inputs[0].get_element_type().to_dtype()
    got = infer(images)
    raw_out = raw(reference_input(images, spec, in_dtype))[raw.outputs[0]]
    want = reference_output(raw_out, spec)
    err = float(np.max(np.abs(got - want)))
    results = [
        CheckResult("engine == numpy reference", err <= 1e-4, f"max |diff| {err:.2e} over {len(images)}")
    ]
    singles = np.concatenate([infer(images[i : i + 1]) for i in range(len(images))])
    same = bool(np.array_equal(singles, got)) or float(np.max(np.abs(singles - got))) <= 1e-5
    results.append(CheckResult("batch == one at a time", same, f"batch of {len(images)}"))
    sums = got.sum(axis=1)
    sane = bool(
        (got >= 0).all() and (got <= 1.0 + 1e-6).all() and (spec.multi_label or (sums <= 1.0 + 1e-3).all())
    )
    results.append(
        CheckResult("probabilities in [0, 1]", sane, f"row sums {sums.min():.3f}..{sums.max():.3f}")
    )
    results.append(_output_kind(spec, raw_out))
    return results
