"""`framestream models add`: read a classifier with OpenVINO, decide its descriptor
(`stream.zoo.inspect`), and write it as the next version of a name in the model repository.

The files are copied into the new version's temp folder with model.yml and labels.txt, then the
model is compiled from there exactly as the pipeline will, and one image is run through it; only
then is the folder renamed into place. Any failure leaves the repository as it was.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import yaml

from stream.adapters.openvino.engine import compile_model, read_model_file
from stream.errors import ModelError
from stream.zoo.descriptors import ModelSpec, parse_spec
from stream.zoo.inspect import Decision, Hints, Options, Port, decide, labels_from_text
from stream.zoo.repository import DESCRIPTOR, ModelRepository
from stream.zoo.store import REPOSITORY_LABELS

__all__ = ["Added", "add_model", "model_files", "read_hints", "ports"]

# Operations that only move or convert values: the output's producer is looked for behind them.
_PASS_THROUGH = ("Convert", "Reshape", "Squeeze", "Unsqueeze", "Gather", "Identity", "Flatten")


@dataclass(frozen=True)
class Added:
    """A version `models add` wrote: its descriptor as the pipeline reads it, and the decisions."""

    spec: ModelSpec
    decision: Decision


def model_files(path: Path) -> tuple[str, list[Path]]:
    """(framework, the files and folders to copy) for a model OpenVINO reads; ModelError if a part
    is missing (an IR's .bin, a PaddlePaddle model's .pdiparams)."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "tf_savedmodel", [path]
        raise ModelError(f"{path} is a folder but not a TensorFlow SavedModel (no saved_model.pb in it)")
    if not path.is_file():
        raise ModelError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".xml":
        weights = path.with_suffix(".bin")
        if not weights.is_file():
            raise ModelError(
                f"{path} is an OpenVINO IR without its weights: {weights.name} is not next to it"
            )
        return "openvino", [path, weights]
    if suffix == ".pdmodel":
        params = path.with_suffix(".pdiparams")
        return "paddle", [path, params] if params.is_file() else [path]
    frameworks = {".onnx": "onnx", ".tflite": "tflite", ".pb": "tf"}
    if suffix not in frameworks:
        raise ModelError(
            f"{path.name}: not a model file OpenVINO reads (.xml + .bin, .onnx, .tflite, .pdmodel, .pb, "
            "or a SavedModel folder)"
        )
    return frameworks[suffix], [path]


def _dims(shape: ov.PartialShape) -> tuple[int, ...]:
    if shape.rank.is_dynamic:
        return ()
    return tuple(d.get_length() if d.is_static else -1 for d in shape)


def _producer(port: ov.Output) -> tuple[str, tuple[float, float, float, float, int] | None]:
    """The operation behind `port` past conversions/reshapes, and a FakeQuantize met on the way."""
    node = port.get_node()
    if node.get_type_name() == "Result":
        node = node.input_value(0).get_node()
    quantize: tuple[float, float, float, float, int] | None = None
    for _ in range(16):
        kind = node.get_type_name()
        if kind == "FakeQuantize" and quantize is None:
            try:
                low_high = [
                    float(np.ravel(node.input_value(i).get_node().get_data())[0]) for i in range(1, 5)
                ]
            except (AttributeError, RuntimeError, IndexError):
                low_high = None
            if low_high is not None:
                in_low, in_high, out_low, out_high = low_high
                levels = int(node.get_attributes().get("levels", 256))
                quantize = (in_low, in_high, out_low, out_high, levels)
        elif kind not in _PASS_THROUGH:
            return kind, quantize
        node = node.input_value(0).get_node()
    return node.get_type_name(), quantize


def _name(port: ov.Output) -> str:
    names = sorted(port.get_names())
    if not names:
        raise ModelError(f"a model port ({port.get_node().get_friendly_name()}) has no tensor name")
    return names[0]


def ports(model: ov.Model) -> tuple[list[Port], list[Port]]:
    """The model's inputs and outputs as `stream.zoo.inspect.Port` values."""
    inputs = [
        Port(_name(p), _dims(p.get_partial_shape()), p.get_element_type().get_type_name())
        for p in model.inputs
    ]
    outputs = []
    for p in model.outputs:
        producer, quantize = _producer(p)
        outputs.append(
            Port(
                _name(p),
                _dims(p.get_partial_shape()),
                p.get_element_type().get_type_name(),
                producer,
                quantize,
            )
        )
    return inputs, outputs


def _rt(model: ov.Model, key: str) -> str | None:
    if not model.has_rt_info(["model_info", key]):
        return None
    return str(model.get_rt_info(["model_info", key]).astype(str)).strip() or None


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError as e:
        raise ModelError(f"the model's rt_info has a malformed number list {text!r}") from e


def _tflite_labels(path: Path) -> tuple[tuple[str, ...], str] | tuple[None, str]:
    """Labels from a TFLite file's metadata: its associated files are a zip appended to it."""
    if path.suffix.lower() != ".tflite" or not zipfile.is_zipfile(path):
        return None, ""
    try:
        with zipfile.ZipFile(path) as z:
            texts = [n for n in z.namelist() if n.lower().endswith(".txt")]
            if not texts:
                return None, ""
            return labels_from_text(z.read(texts[0]).decode("utf-8")), f"{path.name}'s metadata ({texts[0]})"
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{path.name}: its TFLite metadata is unreadable ({e})") from e


def read_hints(model: ov.Model, path: Path) -> Hints:
    """What the model says about itself: an IR's rt_info ``model_info`` (as DL Streamer and the
    OpenVINO Model API write it), labels in a TFLite file's metadata."""
    labels_text = _rt(model, "labels")
    labels: tuple[str, ...] | None = tuple(labels_text.split()) if labels_text else None
    labels_from = f"{path.name}'s rt_info model_info/labels" if labels else ""
    if labels is None:
        labels, labels_from = _tflite_labels(path)
    reverse = _rt(model, "reverse_input_channels")
    multi = _rt(model, "multilabel")
    threshold = _rt(model, "confidence_threshold")
    pad = _rt(model, "pad_value")
    return Hints(
        mean=_floats(_rt(model, "mean_values")),
        scale=_floats(_rt(model, "scale_values")),
        bgr=None if reverse is None else reverse.lower() in ("true", "yes", "1"),
        resize=_rt(model, "resize_type"),
        pad=int(float(pad)) if pad is not None else None,
        multi_label=None if multi is None else multi.lower() in ("true", "yes", "1"),
        threshold=float(threshold) if threshold is not None else None,
        labels=labels,
        labels_from=labels_from,
    )


def _prove(spec: ModelSpec, model_path: Path) -> None:
    """Compile the version from its folder as the pipeline will and classify one image."""
    from stream.zoo.graph import prepare_model

    compiled = compile_model(prepare_model(read_model_file(model_path), spec), "LATENCY")
    h, w = spec.input_hw
    try:
        out = compiled(np.full((1, h, w, 3), 128, np.uint8))[compiled.outputs[0]]
    except RuntimeError as e:
        raise ModelError(f"{spec.name}: the model compiled but inference failed: {e}") from e
    if out.shape != (1, spec.labels_count) or not np.isfinite(out).all():
        raise ModelError(
            f"{spec.name}: one inference gave {out.shape} scores, expected (1, {spec.labels_count})"
        )


def add_model(repository: ModelRepository, name: str, path: Path, opts: Options) -> Added:
    """Write `path` as the next version of `name` (see the module docstring)."""
    path = Path(path)
    framework, files = model_files(path)
    model = read_model_file(path)
    inputs, outputs = ports(model)
    decision = decide(framework, path.name, inputs, outputs, read_hints(model, path), opts)
    with repository.new_version(name) as new:
        for f in files:
            if f.is_dir():
                shutil.copytree(f, new.folder / f.name)
            else:
                shutil.copy2(f, new.folder / f.name)
        descriptor: dict[str, Any] = decision.descriptor
        (new.folder / DESCRIPTOR).write_text(yaml.safe_dump(descriptor, sort_keys=False), encoding="utf-8")
        (new.folder / REPOSITORY_LABELS).write_text("\n".join(decision.labels) + "\n", encoding="utf-8")
        spec = parse_spec(name, descriptor, new.folder / DESCRIPTOR)
        _prove(spec, new.folder / path.name)
        version = new.version
    final = repository.spec(name, version)
    return Added(final, decision)
