"""Upstream model files -> OpenVINO IR, with `openvino.convert_model` (no Model Optimizer).

TF frozen graphs, SavedModels, ONNX and TFLite go through OpenVINO's own frontends. PyTorch
(`framework: pytorch`) needs torch (the optional ``torch`` extra). Keras ``.h5`` weights need
TensorFlow to be rebuilt into a SavedModel first, which this package does not depend on: fetch
says so and points at --weights-dir, which takes the SavedModel folder.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import openvino as ov

from stream.errors import ModelError
from stream.zoo.descriptors import ModelSpec
from stream.zoo.graph import find_input, find_output

__all__ = ["check_convertible", "convert_to_ir", "find_model_file"]


def check_convertible(spec: ModelSpec) -> None:
    """Fail before any download when this machine cannot convert the model's framework."""
    if spec.framework == "pytorch" and importlib.util.find_spec("torch") is None:
        raise ModelError(
            f"{spec.name}: converting a PyTorch model needs torch; install the extra "
            "(pip install 'framestream[torch]') and retry"
        )
    if spec.framework == "tf_savedmodel" and any(f.name.endswith(".h5") for f in spec.files):
        raise ModelError(
            f"{spec.name}: upstream ships Keras .h5 weights; building the SavedModel needs TensorFlow "
            "(tf.keras.applications.MobileNetV3Small(weights=<h5>).save(<dir>)), which framestream does "
            f"not depend on. Do that once, then pass the folder holding {spec.model_file} as --weights-dir"
        )


def find_model_file(spec: ModelSpec, root: Path) -> Path:
    """The file (or SavedModel dir) named by `spec.model_file` anywhere under `root`."""
    wanted = spec.model_file or (spec.files[0].name if spec.files else None)
    if not wanted:
        raise ModelError(f"{spec.name}: descriptor names no model_file to convert")
    hits = sorted(p for p in root.rglob(Path(wanted).name) if not p.name.startswith("."))
    if not hits:
        raise ModelError(f"{spec.name}: {wanted} is not among the downloaded/unpacked files")
    return hits[0]


def _from_pytorch(spec: ModelSpec, weights: Path) -> ov.Model:
    import torch

    code = next(weights.parent.rglob("*.py"), None)
    if code is None:
        raise ModelError(f"{spec.name}: no model code (*.py) next to {weights.name}")
    module_spec = importlib.util.spec_from_file_location(code.stem, code)
    if module_spec is None or module_spec.loader is None:
        raise ModelError(f"{spec.name}: cannot import {code}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[code.stem] = module
    module_spec.loader.exec_module(module)
    net = getattr(module, code.stem)()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    net.eval()
    model = ov.convert_model(net, example_input=torch.zeros(*spec.input_shape))
    model.inputs[0].get_tensor().set_names({spec.input_name})
    model.outputs[0].get_tensor().set_names({spec.output_name})
    return model


def convert_to_ir(spec: ModelSpec, source: Path, out_xml: Path) -> Path:
    """Convert `source` to IR at `out_xml` (+ .bin, float32 weights kept exact); check its I/O names."""
    try:
        if spec.framework == "pytorch":
            model = _from_pytorch(spec, source)
        elif spec.framework == "openvino":
            model = ov.Core().read_model(str(source))
        elif spec.framework == "tf":  # frozen graph: cut at the descriptor's output, as OMZ does
            model = ov.convert_model(str(source), output=spec.output_name)
        else:
            model = ov.convert_model(str(source))
    except ModelError:
        raise
    except Exception as e:  # frontends raise several types (RuntimeError, OpConversionFailure, ...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(
            f"{spec.name}: cannot convert {source.name}: corrupt or not a model ({first})"
        ) from e
    find_input(model, spec)
    find_output(model, spec)
    ov.save_model(model, str(out_xml), compress_to_fp16=False)
    return out_xml
