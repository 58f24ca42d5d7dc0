"""Where model files and labels are found: a weights directory, the IR cache, or a synthetic stand-in.

Cache layout (default ``~/.cache/framestream/models``)::

    <cache>/<name>/ir/model.xml, model.bin   converted IR (what `framestream models fetch` leaves)
    <cache>/<name>/ir/labels.txt             labels fetched with the model, if its descriptor lists some
    <cache>/<name>/ir/source.json            which upstream files (sha256) the IR was made from
    <cache>/<name>/synthetic/                a synthetic stand-in (random weights), built on demand

Every write goes to a temp directory next to its target and is renamed into place, so an error
(or a kill) never leaves a half-written model where a reader would pick it up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stream.errors import ModelError
from stream.zoo.descriptors import ModelSpec

__all__ = [
    "DEFAULT_CACHE_DIR",
    "LABELS_FILE",
    "READABLE_SUFFIXES",
    "Labels",
    "ModelLocation",
    "atomic_dir",
    "cached_ir",
    "find_labels",
    "locate_model",
    "parse_labels",
]

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "framestream" / "models"
LABELS_FILE = "imagenet_labels.txt"
# What openvino.Core.read_model takes without a conversion step.
READABLE_SUFFIXES = (".xml", ".onnx", ".tflite", ".pb")


@dataclass(frozen=True)
class ModelLocation:
    """A model file ready for `Core.read_model`; `source` is weights-dir | cache | synthetic."""

    path: Path
    source: str

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"


@dataclass(frozen=True)
class Labels:
    """1000 ImageNet class names; `source` is the file they came from, None for placeholders."""

    names: tuple[str, ...]
    source: Path | None


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temp dir; on success it replaces `final`, on error it is deleted
    (with any parent folders this call created), so a failure leaves no trace."""
    created = [p for p in [final.parent, *final.parent.parents] if not p.exists()]
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    ok = False
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.parent / f".old-{final.name}-{os.getpid()}-{id(tmp)}"
            os.replace(final, old)
        os.replace(tmp, final)
        ok = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            for parent in created:  # deepest first
                with contextlib.suppress(OSError):  # not empty: someone else wrote there meanwhile
                    parent.rmdir()


def cached_ir(spec: ModelSpec, cache_dir: Path) -> Path:
    """Where `framestream models fetch` leaves the converted model."""
    return cache_dir / spec.name / "ir" / "model.xml"


def _weights_candidates(spec: ModelSpec, weights_dir: Path) -> list[Path]:
    names = [spec.model_file] if spec.model_file else []
    names += [f.name for f in spec.files]
    names += [f"{spec.name}.xml", f"{spec.name}/model.xml", f"{spec.name}.onnx", f"{spec.name}.tflite"]
    return [weights_dir / n for n in dict.fromkeys(names)]


def _from_weights_dir(spec: ModelSpec, weights_dir: Path) -> ModelLocation | None:
    for path in _weights_candidates(spec, weights_dir):
        if path.is_file() and path.suffix in READABLE_SUFFIXES:
            return ModelLocation(path, "weights-dir")
        if path.is_dir() and (path / "saved_model.pb").is_file():  # TF SavedModel folder
            return ModelLocation(path, "weights-dir")
        if path.exists():
            raise ModelError(
                f"{spec.name}: found {path}, but it needs converting first; "
                f"run `framestream models fetch {spec.name}` (or convert it to OpenVINO IR yourself)"
            )
    return None


def _synthetic(spec: ModelSpec, cache_dir: Path) -> ModelLocation:
    target = cache_dir / spec.name / "synthetic"
    for suffix in (".xml", ".onnx"):
        found = sorted(target.glob(f"*{suffix}")) if target.is_dir() else []
        if found:
            return ModelLocation(found[0], "synthetic")
    try:
        from stream.zoo.synthetic import build_synthetic
    except ImportError as e:
        raise ModelError(
            f"{spec.name}: no weights found and synthetic stand-ins are unavailable ({e})"
        ) from e
    with atomic_dir(target) as tmp:
        built = Path(build_synthetic(spec.name, tmp))
        relative = built.relative_to(tmp)
    return ModelLocation(target / relative, "synthetic")


def locate_model(
    spec: ModelSpec, *, weights_dir: Path | None, cache_dir: Path, allow_synthetic: bool
) -> ModelLocation:
    """The model file to load: weights dir first, then the IR cache, then a synthetic stand-in."""
    if spec.path is not None and spec.model_file and (spec.path.parent / spec.model_file).exists():
        return ModelLocation(spec.path.parent / spec.model_file, "repository")
    if weights_dir is not None:
        found = _from_weights_dir(spec, weights_dir)
        if found is not None:
            return found
    ir = cached_ir(spec, cache_dir)
    if ir.is_file() and ir.with_suffix(".bin").is_file():
        return ModelLocation(ir, "cache")
    if allow_synthetic and spec.has_synthetic:
        return _synthetic(spec, cache_dir)
    where = f"{weights_dir} or {cache_dir}" if weights_dir is not None else str(cache_dir)
    hint = f"run `framestream models fetch {spec.name}`"
    if spec.model_file:
        hint += (
            f", or put {spec.model_file} in a directory given by --weights-dir / "
            "FRAMESTREAM_MODELS__WEIGHTS_DIR"
        )
    raise ModelError(f"{spec.name}: no model file in {where}; {hint}")


def parse_labels(text: str, where: str = "labels") -> tuple[str, ...]:
    """1000 class names from a labels file of 1000 lines, or 1001 with `background` first."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) == 1001:
        lines = lines[1:]
    if len(lines) != 1000:
        raise ModelError(f"{where}: expected 1000 labels (or 1001 with background first), got {len(lines)}")
    return tuple(lines)


def find_labels(spec: ModelSpec, *, weights_dir: Path | None, cache_dir: Path) -> Labels:
    """Labels next to the weights, else fetched into the cache, else ``class_<i>`` placeholders."""
    candidates = []
    if spec.path is not None:  # a repository version's own labels, written with it
        candidates += [spec.path.parent / "labels.txt"]
    if weights_dir is not None:
        candidates += [weights_dir / LABELS_FILE, weights_dir / "labels.txt"]
    candidates += [cached_ir(spec, cache_dir).parent / "labels.txt", cache_dir / LABELS_FILE]
    for path in candidates:
        if path.is_file():
            return Labels(parse_labels(path.read_text(encoding="utf-8"), str(path)), path)
    return Labels(tuple(f"class_{i}" for i in range(1000)), None)
