"""Model descriptors: `models/<name>/model.yml` parsed into frozen `ModelSpec` values.

The descriptor states a model's whole contract (input name/shape/layout/colour order, mean/scale and
whether they are inside the graph, output name, class count, output kind, resize policy), where its
files come from (URL, size, sha256) and its published accuracy. Everything that feeds or reads a
model goes through these values, so a wrong contract shows up in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stream.errors import ModelError

__all__ = [
    "FRAMEWORKS",
    "ModelFile",
    "ModelSpec",
    "list_specs",
    "load_spec",
    "models_dir",
    "parse_spec",
]

FRAMEWORKS = ("tf", "tf_savedmodel", "tflite", "onnx", "pytorch", "openvino")
_LAYOUTS = ("NHWC", "NCHW")
_COLORS = ("RGB", "BGR")
_KINDS = ("probabilities", "logits")
_RESIZES = ("full", "shorter_crop")


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
        """1 for 1001-class models (index 0 = background), else 0."""
        return self.classes - 1000


def models_dir() -> Path:
    """The descriptor folder: `$FRAMESTREAM_MODELS_DIR`, else the descriptors installed with the package.

    `stream/zoo/models` is package data (a symlink to the repository's top-level `models/` in a
    checkout, a copy of it in an installed wheel), so an install that is not editable has them too.
    """
    override = os.environ.get("FRAMESTREAM_MODELS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "models"


def _names(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/model.yml"))


def load_spec(name: str) -> ModelSpec:
    """The descriptor of model `name`; ModelError naming the known models if there is none."""
    root = models_dir()
    path = root / name / "model.yml"
    if not name or "/" in name or not path.is_file():
        known = ", ".join(_names(root)) or f"none (no descriptors under {root})"
        raise ModelError(f"unknown model {name!r}; known models: {known}")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ModelError(f"descriptor {path} is unreadable: {e}") from e
    return parse_spec(name, raw, path)


def list_specs() -> list[ModelSpec]:
    """Every descriptor under `models_dir()`, sorted by name."""
    return [load_spec(n) for n in _names(models_dir())]


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
        if classes not in (1000, 1001):
            raise ModelError(f"{where}: output.classes must be 1000 or 1001, got {classes}")
        resize = _choice(pre.get("resize", "full"), _RESIZES, "preprocess.resize", where)
        shorter = pre.get("resize_shorter")
        if resize == "shorter_crop" and shorter is None:
            shorter = max(shape[1:3] if layout == "NHWC" else shape[2:4])
        deq = out.get("dequantize")
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
            output_kind=_choice(out.get("kind", "probabilities"), _KINDS, "output.kind", where),
            resize=resize,
            resize_shorter=int(shorter) if shorter is not None else None,
            top1=float(acc["top1"]) if acc.get("top1") is not None else None,
            top5=float(acc["top5"]) if acc.get("top5") is not None else None,
            description=" ".join(str(raw.get("description", "")).split()),
            model_file=raw.get("model_file"),
            labels=_file(raw["labels"], where) if raw.get("labels") else None,
            output_dequantize=(float(deq[0]), float(deq[1])) if deq else None,
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
