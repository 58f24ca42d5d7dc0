"""Model descriptors: `models/<name>/model.yml` parsed into frozen `ModelSpec` values.

The descriptor states a model's whole contract (input name/shape/layout/colour order, mean/scale and
whether they are inside the graph, output name, class count, output kind, resize policy), where its
files come from (URL, size, sha256) and its published accuracy. Everything that feeds or reads a
model goes through these values, so a wrong contract shows up in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.errors import ModelError

__all__ = [
    "FRAMEWORKS",
    "KINDS",
    "RESIZES",
    "ModelFile",
    "ModelSpec",
    "parse_spec",
]

FRAMEWORKS = ("tf", "tf_savedmodel", "tflite", "onnx", "pytorch", "openvino", "paddle")
_LAYOUTS = ("NHWC", "NCHW")
_COLORS = ("RGB", "BGR")
KINDS = ("probabilities", "logits", "quantized", "multi-label")
RESIZES = ("stretch", "center-crop", "letterbox")
# The seeds' former names of two resize kinds, still read.
_RESIZE_ALIASES = {"full": "stretch", "shorter_crop": "center-crop"}
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class ModelFile:
    """One upstream file: where it lives and what it must hash to (`size` in bytes)."""

    name: str
    url: str | None = None
    size: int | None = None
    sha256: str | None = None

    @property
    def is_archive(self) -> bool:
        return self.name.endswith((".tgz", ".tar.gz", ".tar", ".zip"))


@dataclass(frozen=True)
class ModelSpec:
    """A model's contract. `top1`/`top5` are published accuracies in percent; `version` is the
    repository version the descriptor came from (a seed is version 1)."""

    name: str
    framework: str
    files: tuple[ModelFile, ...]
    input_name: str
    input_shape: tuple[int, ...]
    layout: str
    color: str
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    normalization_in_graph: bool
    output_name: str
    classes: int
    output_kind: str
    resize: str
    resize_shorter: int | None
    top1: float | None
    top5: float | None
    description: str = ""
    model_file: str | None = None
    labels: ModelFile | None = None
    output_dequantize: tuple[float, float] | None = None
    background: bool = False
    threshold: float = DEFAULT_THRESHOLD
    sigmoid: bool = True
    pad: int = 0
    params_m: float | None = None
    gflops: float | None = None
    has_synthetic: bool = False
    license: str = ""
    version: int = 1
    path: Path | None = field(default=None, compare=False)

    @property
    def input_hw(self) -> tuple[int, int]:
        """(height, width) in pixels the model takes."""
        if self.layout == "NHWC":
            return (self.input_shape[1], self.input_shape[2])
        return (self.input_shape[2], self.input_shape[3])

    @property
    def background_offset(self) -> int:
        """1 when the output's column 0 is a background class (dropped before anything sees it)."""
        return 1 if self.background else 0

    @property
    def labels_count(self) -> int:
        """How many classes results name: the output's columns without the background one."""
        return self.classes - self.background_offset

    @property
    def multi_label(self) -> bool:
        """Independent per-class scores (sigmoid): a result lists every label above `threshold`."""
        return self.output_kind == "multi-label"


def _file(raw: Any, where: str) -> ModelFile:
    if not isinstance(raw, dict) or not raw.get("name"):
        raise ModelError(f"{where}: a file entry needs at least a name, got {raw!r}")
    sha = raw.get("sha256")
    if sha is not None and (len(str(sha)) != 64 or any(c not in "0123456789abcdef" for c in str(sha))):
        raise ModelError(f"{where}: sha256 of {raw['name']} must be 64 lowercase hex digits, got {sha!r}")
    size = raw.get("size")
    return ModelFile(
        name=str(raw["name"]),
        url=raw.get("url"),
        size=int(size) if size is not None else None,
        sha256=str(sha) if sha is not None else None,
    )


def _choice(value: Any, allowed: tuple[str, ...], what: str, where: str) -> str:
    if value not in allowed:
        raise ModelError(f"{where}: {what} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def parse_spec(name: str, raw: Any, path: Path | None = None) -> ModelSpec:
    """Validate one descriptor mapping (as read from YAML) into a `ModelSpec`."""
    where = str(path or name)
    if not isinstance(raw, dict):
        raise ModelError(f"{where}: descriptor must be a mapping, got {type(raw).__name__}")
    try:
        inp, out = raw["input"], raw["output"]
        pre = raw.get("preprocess") or {}
        acc = raw.get("accuracy") or {}
        cplx = raw.get("complexity") or {}
        shape = tuple(int(d) for d in inp["shape"])
        layout = _choice(inp["layout"], _LAYOUTS, "input.layout", where)
        channels = shape[3] if layout == "NHWC" else shape[1]
        if len(shape) != 4 or channels != 3:
            raise ModelError(f"{where}: input.shape must be 4-D with 3 channels ({layout}), got {shape}")
        mean = tuple(float(v) for v in inp.get("mean", (0.0, 0.0, 0.0)))
        scale = tuple(float(v) for v in inp.get("scale", (1.0, 1.0, 1.0)))
        if len(mean) != 3 or len(scale) != 3 or any(s == 0 for s in scale):
            raise ModelError(f"{where}: mean/scale need 3 values and scale no zero, got {mean}, {scale}")
        classes = int(out["classes"])
        # the seeds' rule: 1001 outputs have a background class first, unless the descriptor says
        background = bool(out.get("background", classes == 1001))
        if classes - int(background) < 2:
            raise ModelError(
                f"{where}: output.classes must be at least 2 (besides background), got {classes}"
            )
        kind = _choice(out.get("kind", "probabilities"), KINDS, "output.kind", where)
        deq = out.get("dequantize")
        if kind == "quantized" and not deq:
            raise ModelError(f"{where}: output.kind quantized needs output.dequantize [scale, zero_point]")
        threshold = float(out.get("threshold", DEFAULT_THRESHOLD))
        if not 0 < threshold < 1:
            raise ModelError(f"{where}: output.threshold must be between 0 and 1, got {threshold}")
        raw_resize = pre.get("resize", "stretch")
        resize = _choice(_RESIZE_ALIASES.get(raw_resize, raw_resize), RESIZES, "preprocess.resize", where)
        hw = shape[1:3] if layout == "NHWC" else shape[2:4]
        shorter = pre.get("resize_shorter")
        if resize == "center-crop" and shorter is None:
            fraction = float(pre.get("crop_fraction", 1.0))
            if not 0 < fraction <= 1:
                raise ModelError(f"{where}: preprocess.crop_fraction must be in (0, 1], got {fraction}")
            shorter = round(max(hw) / fraction)
        pad = int(pre.get("pad", 0))
        if not 0 <= pad <= 255:
            raise ModelError(f"{where}: preprocess.pad must be a pixel value 0..255, got {pad}")
        return ModelSpec(
            name=name,
            framework=_choice(raw["framework"], FRAMEWORKS, "framework", where),
            files=tuple(_file(f, where) for f in raw.get("files") or ()),
            input_name=str(inp["name"]),
            input_shape=shape,
            layout=layout,
            color=_choice(inp.get("color", "RGB"), _COLORS, "input.color", where),
            mean=mean,
            scale=scale,
            normalization_in_graph=bool(inp.get("normalization_in_graph", False)),
            output_name=str(out["name"]),
            classes=classes,
            output_kind=kind,
            resize=resize,
            resize_shorter=int(shorter) if shorter is not None else None,
            top1=float(acc["top1"]) if acc.get("top1") is not None else None,
            top5=float(acc["top5"]) if acc.get("top5") is not None else None,
            description=" ".join(str(raw.get("description", "")).split()),
            model_file=raw.get("model_file"),
            labels=_file(raw["labels"], where) if raw.get("labels") else None,
            output_dequantize=(float(deq[0]), float(deq[1])) if deq else None,
            background=background,
            threshold=threshold,
            sigmoid=bool(out.get("sigmoid", True)),
            pad=pad,
            params_m=float(cplx["params_m"]) if cplx.get("params_m") is not None else None,
            gflops=float(cplx["gflops"]) if cplx.get("gflops") is not None else None,
            has_synthetic=bool(raw.get("synthetic", False)),
            license=str(raw.get("license", "")),
            path=path,
        )
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ModelError(f"{where}: malformed descriptor ({type(e).__name__}: {e})") from e
