"""What `framestream models add` decides about a classifier it is given (pure: no OpenVINO, no files).

The caller reads the model (`stream.commands.model_add`) into `Port` values and the hints the model carries
(an IR's ``rt_info`` ``model_info``, labels from TFLite metadata), then asks here:
- which input is the image (4-D, 3 channels; NCHW or NHWC from where the 3 is) and which output
  holds the classes (``[N, C]`` or ``[N, C, 1, 1]``, C >= 2);
- the preprocessing: uint8 inputs take raw 0..255 pixels; a float input takes the user's
  ``--mean/--scale``, else the model's own ``mean_values/scale_values``, else it is refused
  (guessing a normalization gives confident nonsense);
- the output kind: ``--multi-label`` or a model ending in a sigmoid -> multi-label; an integer
  output after a quantize step -> quantized with that step's scale and zero point; a softmax ->
  probabilities; anything else -> logits (softmax applied);
- the labels: their count must equal the classes (a first line ``background`` for a model with
  one more output column than names marks that column as background).
Every refusal is a `ModelError` of one line that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream.errors import ModelError

__all__ = [
    "Decision",
    "Hints",
    "Options",
    "Port",
    "class_output",
    "decide",
    "dequantize_params",
    "image_input",
    "labels_from_text",
]

_RESIZE_TYPES = {  # OpenVINO Model API's model_info/resize_type -> descriptor resize
    "standard": "stretch",
    "crop": "center-crop",
    "fit_to_window": "letterbox",
    "fit_to_window_letterbox": "letterbox",
}
_INTEGER_TYPES = ("u8", "i8", "u16", "i16", "i32", "u32")


@dataclass(frozen=True)
class Port:
    """One model input or output: a name, its shape (-1 for a dynamic dimension), element type
    (OpenVINO's short name: f32, u8, ...), and for an output the operation that produces it
    (`producer`, skipping conversions and reshapes) and any quantize step before it."""

    name: str
    shape: tuple[int, ...]
    element_type: str
    producer: str = ""
    quantize: tuple[float, float, float, float, int] | None = None
    """FakeQuantize's (input_low, input_high, output_low, output_high, levels) on the way out."""


@dataclass(frozen=True)
class Hints:
    """What the model file says about itself (all optional)."""

    mean: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None
    bgr: bool | None = None
    resize: str | None = None
    pad: int | None = None
    multi_label: bool | None = None
    threshold: float | None = None
    labels: tuple[str, ...] | None = None
    labels_from: str = ""


@dataclass(frozen=True)
class Options:
    """The user's overrides on the command line (None: decide from the model)."""

    labels: tuple[str, ...] | None = None
    labels_from: str = ""
    mean: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None
    layout: str | None = None
    color: str | None = None
    resize: str | None = None
    crop_fraction: float | None = None
    pad: int | None = None
    multi_label: bool = False
    threshold: float | None = None


@dataclass(frozen=True)
class Decision:
    """The descriptor `models add` writes, plus where each choice came from (`why`)."""

    descriptor: dict[str, Any]
    labels: tuple[str, ...]
    why: dict[str, str] = field(default_factory=dict)


def _layout_of(shape: tuple[int, ...]) -> str | None:
    if len(shape) != 4:
        return None
    if shape[1] == 3 and shape[3] != 3:
        return "NCHW"
    if shape[3] == 3 and shape[1] != 3:
        return "NHWC"
    return None  # 3 in both places (a 3x3 image?) or nowhere


def image_input(inputs: list[Port], layout: str | None = None) -> tuple[Port, str]:
    """The one image input and its layout; ModelError when there is none, or more than one input."""
    images = [(p, layout or _layout_of(p.shape)) for p in inputs if len(p.shape) == 4]
    images = [(p, lay) for p, lay in images if lay is not None]
    if len(inputs) != 1 or len(images) != 1:
        listed = ", ".join(f"{p.name} {list(p.shape)}" for p in inputs) or "none"
        if len(images) > 1 or len(inputs) > 1:
            raise ModelError(
                f"the model has {len(inputs)} inputs ({listed}); framestream feeds exactly one image input"
            )
        raise ModelError(
            f"the model has no image input (4-D with 3 channels, NCHW or NHWC): inputs {listed}; "
            "give --layout if its channels are not where the 3 is"
        )
    port, found = images[0]
    lay = str(found)
    channels = port.shape[1] if lay == "NCHW" else port.shape[3]
    if channels != 3:
        raise ModelError(
            f"input {port.name} {list(port.shape)} has {channels} channels in {lay}; it must have 3"
        )
    h, w = (port.shape[2], port.shape[3]) if lay == "NCHW" else (port.shape[1], port.shape[2])
    if h < 1 or w < 1:
        raise ModelError(
            f"input {port.name} {list(port.shape)} has a dynamic height or width; give it a fixed size"
        )
    return port, lay


def class_output(outputs: list[Port]) -> tuple[Port, int]:
    """The one output shaped like class scores, and its class count."""
    found = []
    for p in outputs:
        s = p.shape
        if len(s) == 2 or (len(s) == 4 and s[2:] == (1, 1)):
            found.append((p, s[1]))
    shapes = ", ".join(f"{p.name} {list(p.shape)}" for p in outputs)
    if not found:
        raise ModelError(
            f"no output looks like class scores ([N, C] or [N, C, 1, 1]); outputs {shapes}: "
            "this looks like a detector or segmenter, not a classifier"
        )
    if len(found) > 1:
        raise ModelError(f"several outputs look like class scores ({shapes}); framestream reads exactly one")
    port, classes = found[0]
    if classes < 2:
        raise ModelError(
            f"output {port.name} {list(port.shape)} has {classes} classes; a classifier needs at least 2"
        )
    return port, classes


def dequantize_params(quantize: tuple[float, float, float, float, int]) -> tuple[float, float]:
    """(scale, zero_point) that turn the integer output of a FakeQuantize + Convert back into the
    values it quantized: value = scale * (q - zero_point)."""
    in_low, in_high, out_low, out_high, _levels = quantize
    if out_high == out_low or in_high == in_low:
        raise ModelError(f"the output's quantization range is empty ({quantize}); cannot dequantize")
    scale = (in_high - in_low) / (out_high - out_low)
    return float(scale), float(out_low - in_low / scale)


def labels_from_text(text: str) -> tuple[str, ...]:
    """One label per line, blank lines skipped (a label may contain spaces and commas)."""
    return tuple(ln.strip() for ln in text.splitlines() if ln.strip())


def _three(values: tuple[float, ...] | None, what: str) -> list[float] | None:
    if values is None:
        return None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ModelError(f"--{what} takes 1 or 3 values (one per channel), got {len(values)}")
    if what == "scale" and any(v == 0 for v in values):
        raise ModelError("--scale values must not be 0")
    return [float(v) for v in values]


def _normalization(inp: Port, opts: Options, hints: Hints, why: dict[str, str]) -> dict[str, Any]:
    mean, scale = _three(opts.mean, "mean"), _three(opts.scale, "scale")
    if inp.element_type in _INTEGER_TYPES:
        if inp.element_type != "u8":
            raise ModelError(
                f"input {inp.name} is {inp.element_type}; framestream feeds uint8 or float inputs"
            )
        if mean is not None or scale is not None:
            raise ModelError(
                f"input {inp.name} is uint8: it takes raw 0..255 pixels and any normalization is inside "
                "the model, so --mean/--scale cannot apply"
            )
        why["normalization"] = "none: uint8 input takes raw 0..255 pixels"
        return {"mean": [0.0] * 3, "scale": [1.0] * 3, "normalization_in_graph": True}
    if mean is None and scale is None and hints.mean is not None and hints.scale is not None:
        mean, scale = _three(hints.mean, "mean"), _three(hints.scale, "scale")
        why["normalization"] = f"mean {mean} scale {scale} from the model's own metadata"
    elif mean is not None or scale is not None:
        mean, scale = mean or [0.0] * 3, scale or [1.0] * 3
        why["normalization"] = f"(pixel - {mean}) / {scale}, as given"
    else:
        raise ModelError(
            f"input {inp.name} is {inp.element_type} and the model does not say how to normalize pixels: "
            "give --mean and --scale (pixels 0..255; e.g. --mean 127.5 --scale 127.5 for [-1, 1], "
            "--mean 0 --scale 255 for [0, 1], --mean 0 --scale 1 when the model normalizes itself)"
        )
    return {"mean": mean, "scale": scale, "normalization_in_graph": False}


def _output_kind(out: Port, opts: Options, hints: Hints, why: dict[str, str]) -> dict[str, Any]:
    multi = opts.multi_label or bool(hints.multi_label) or out.producer == "Sigmoid"
    if multi:
        threshold = opts.threshold if opts.threshold is not None else hints.threshold
        threshold = 0.5 if threshold is None else float(threshold)
        if not 0 < threshold < 1:
            raise ModelError(f"--threshold must be between 0 and 1, got {threshold}")
        sigmoid = out.producer != "Sigmoid"
        source = (
            "--multi-label" if opts.multi_label else "the model" if hints.multi_label else "a final sigmoid"
        )
        applied = "sigmoid applied" if sigmoid else "sigmoid in the model"
        why["output"] = f"multi-label ({source}), {applied}, threshold {threshold:g}"
        return {"kind": "multi-label", "sigmoid": sigmoid, "threshold": threshold}
    if opts.threshold is not None:
        raise ModelError("--threshold is for multi-label models; add --multi-label")
    if out.element_type in _INTEGER_TYPES:
        if out.quantize is None:
            raise ModelError(
                f"output {out.name} is {out.element_type} with no quantization parameters in the model; "
                "framestream cannot turn it into scores"
            )
        scale, zero = dequantize_params(out.quantize)
        why["output"] = f"quantized {out.element_type}, dequantized as {scale:g} * (q - {zero:g})"
        return {"kind": "quantized", "dequantize": [scale, zero]}
    if out.producer == "Softmax":
        why["output"] = "probabilities (the model ends in a softmax)"
        return {"kind": "probabilities"}
    why["output"] = "logits (no softmax in the model: framestream applies one)"
    return {"kind": "logits"}


def _labels(classes: int, opts: Options, hints: Hints, why: dict[str, str]) -> tuple[tuple[str, ...], bool]:
    """(labels, background?) for `classes` output columns."""
    labels, source = (
        (opts.labels, opts.labels_from) if opts.labels is not None else (hints.labels, hints.labels_from)
    )
    if labels is None:
        why["labels"] = f"none in the model: class_0..class_{classes - 1} (give --labels FILE)"
        return tuple(f"class_{i}" for i in range(classes)), False
    if len(labels) == classes and labels[0].lower() == "background":
        why["labels"] = f"{len(labels) - 1} from {source}; column 0 is background"
        return labels[1:], True
    if len(labels) != classes:
        raise ModelError(f"the model has {classes} classes but {source} has {len(labels)} labels")
    why["labels"] = f"{len(labels)} from {source}"
    return labels, False


def _resize(opts: Options, hints: Hints, hw: tuple[int, int], why: dict[str, str]) -> dict[str, Any]:
    resize = opts.resize or _RESIZE_TYPES.get(hints.resize or "") or "stretch"
    origin = "as given" if opts.resize else "from the model" if hints.resize in _RESIZE_TYPES else "default"
    out: dict[str, Any] = {"resize": resize}
    if resize == "center-crop":
        fraction = 0.875 if opts.crop_fraction is None else opts.crop_fraction
        if not 0 < fraction <= 1:
            raise ModelError(f"--crop-fraction must be in (0, 1], got {fraction}")
        out["crop_fraction"] = fraction
        why["resize"] = f"center-crop of {fraction:g} (shorter side {round(max(hw) / fraction)}), {origin}"
    elif resize == "letterbox":
        pad = opts.pad if opts.pad is not None else hints.pad if hints.pad is not None else 0
        if not 0 <= pad <= 255:
            raise ModelError(f"--pad must be a pixel value 0..255, got {pad}")
        out["pad"] = pad
        why["resize"] = f"letterbox, pad {pad}, {origin}"
    elif resize == "stretch":
        why["resize"] = f"stretch the whole frame, {origin}"
    else:
        raise ModelError(f"--resize must be stretch, center-crop or letterbox, got {resize!r}")
    return out


def decide(
    framework: str, model_file: str, inputs: list[Port], outputs: list[Port], hints: Hints, opts: Options
) -> Decision:
    """The descriptor of a classifier with these ports, per the model's hints and the user's options."""
    why: dict[str, str] = {}
    inp, layout = image_input(inputs, opts.layout)
    out, classes = class_output(outputs)
    shape = [1, *inp.shape[1:]]
    hw = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    why["input"] = f"{inp.name} {inp.element_type} {'x'.join(map(str, shape[1:]))} {layout}"
    color = opts.color or ("BGR" if hints.bgr else "RGB")
    if color not in ("RGB", "BGR"):
        raise ModelError(f"--color must be RGB or BGR, got {color!r}")
    why["colour"] = (
        f"{color}, {'as given' if opts.color else 'from the model' if hints.bgr is not None else 'default'}"
    )
    norm = _normalization(inp, opts, hints, why)
    kind = _output_kind(out, opts, hints, why)
    labels, background = _labels(classes, opts, hints, why)
    descriptor = {
        "description": f"added with `framestream models add` from {model_file}",
        "framework": framework,
        "model_file": model_file,
        "input": {"name": inp.name, "shape": shape, "layout": layout, "color": color, **norm},
        "output": {"name": out.name, "classes": classes, "background": background, **kind},
        "preprocess": _resize(opts, hints, hw, why),
        "synthetic": False,
    }
    return Decision(descriptor, labels, why)
