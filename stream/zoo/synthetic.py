"""Synthetic stand-ins for the four seed models: real architecture and contract, random weights.

`build_synthetic(name, out_dir)` writes a model that has the seed's original-framework
contract (input name, shape, layout and value range; output name, class count, and whether it
emits probabilities or logits) and the seed's architecture, with deterministic random weights.
Tests and the offline demo use them where the real weights are absent. Their labels mean
nothing: every caller that shows labels from one must say so loudly (`is_synthetic` tells).

- mobilenet-v1-0.25-128 (IR): `input` [1,128,128,3] NHWC RGB, (x - 127.5) / 127.5 done outside
  -> `MobilenetV1/Predictions/Reshape_1` [1,1001] softmax, index 0 = background.
- mobilenet-v3-small-1.0-224-tf (IR): `input_1` [1,224,224,3] NHWC RGB 0..255, rescaled inside
  -> `StatefulPartitionedCall/MobilenetV3small/Predictions/Softmax` [1,1000] softmax.
- mobilenet-v2-pytorch (IR): `data` [1,3,224,224] NCHW RGB, mean [123.675,116.28,103.53] and
  scale [58.624,57.12,57.375] outside -> `prob` [1,1000] raw logits.
- mobilenetv2-7 (ONNX opset 7): `data` [N,3,224,224] NCHW RGB in [0,1], mean [0.485,0.456,0.406]
  and std [0.229,0.224,0.225] outside -> `mobilenetv20_output_flatten0_reshape0` [N,1000] logits.

`prob` of mobilenet-v2-pytorch is the output of tonylins' `MobileNetV2.forward`, which ends in
`nn.Linear`: logits, despite the name (the current Open Model Zoo card says "in logits format").
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import onnx
import openvino as ov

from stream.errors import ModelError
from stream.zoo import synthetic_archs as archs
from stream.zoo.synthetic_graph import GraphBuilder, same_pads, symmetric_pads
from stream.zoo.synthetic_ir import IrBuilder
from stream.zoo.synthetic_onnx import OnnxBuilder

__all__ = ["SYNTHETIC_NAMES", "SYNTHETIC_MARK", "build_synthetic", "is_synthetic"]

SYNTHETIC_NAMES: tuple[str, ...] = (
    "mobilenet-v1-0.25-128",
    "mobilenet-v3-small-1.0-224-tf",
    "mobilenet-v2-pytorch",
    "mobilenetv2-7",
)
# Written into the model (IR rt_info / ONNX metadata_props) so any loader can tell.
SYNTHETIC_MARK = "framestream_synthetic"

_Spec = tuple[str, Callable[[GraphBuilder], None], Callable]
_SPECS: dict[str, _Spec] = {
    "mobilenet-v1-0.25-128": ("ir", archs.mobilenet_v1_025_128, same_pads),
    "mobilenet-v3-small-1.0-224-tf": ("ir", archs.mobilenet_v3_small_224, same_pads),
    "mobilenet-v2-pytorch": ("ir", lambda b: archs.mobilenet_v2(b, head="pytorch"), symmetric_pads),
    "mobilenetv2-7": ("onnx", lambda b: archs.mobilenet_v2(b, head="gluon"), symmetric_pads),
}


def _seed(name: str) -> int:
    """A fixed per-model seed, so the four models do not share weights."""
    return zlib.crc32(name.encode())


def build_synthetic(name: str, out_dir: Path, *, seed: int | None = None) -> Path:
    """Write the stand-in for seed model `name` into `out_dir`; return the .xml or .onnx path.

    IR (`model.xml` + `model.bin`, float32) for the first three names, ONNX opset 7
    (`model.onnx`) for "mobilenetv2-7". Same name, same bytes. The files are written to a temp
    directory next to `out_dir` and moved into place only when complete, so a crash never leaves
    a half-written model. Takes about 0.5-3 s (weights are calibrated with a numpy forward pass).

    `seed` (default: one fixed per name) picks other random weights with the same architecture
    (two versions of one model that answer differently, in tests of version swaps).

    Raises `ModelError` for a name not in `SYNTHETIC_NAMES`.
    """
    if name not in _SPECS:
        raise ModelError(f"no synthetic stand-in for model {name!r}; known: {', '.join(SYNTHETIC_NAMES)}")
    kind, arch, pads = _SPECS[name]
    out_dir = Path(out_dir)
    weights_seed = _seed(name) if seed is None else seed
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        if kind == "ir":
            ir = IrBuilder(weights_seed, pads)
            arch(ir)
            model = ir.model(name)
            model.set_rt_info("true", [SYNTHETIC_MARK])
            ov.save_model(model, tmp / "model.xml", compress_to_fp16=False)
            files = ["model.bin", "model.xml"]  # the .xml last: it is what readers look for
        else:
            builder = OnnxBuilder(weights_seed, pads)
            arch(builder)
            proto = builder.model(name)
            onnx.helper.set_model_props(proto, {SYNTHETIC_MARK: "true"})
            (tmp / "model.onnx").write_bytes(proto.SerializeToString())
            files = ["model.onnx"]
        _move_into_place(tmp, out_dir, files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / files[-1]


def _move_into_place(tmp: Path, out_dir: Path, files: list[str]) -> None:
    try:
        os.rename(tmp, out_dir)  # atomic when out_dir does not exist yet
        return
    except OSError:
        pass
    out_dir.mkdir(parents=True, exist_ok=True)
    for file in files:
        os.replace(tmp / file, out_dir / file)


def is_synthetic(model: ov.Model | str | Path) -> bool:
    """True if `model` (an `openvino.Model`, or a path to .xml/.onnx) was made by `build_synthetic`."""
    if isinstance(model, ov.Model):
        return model.has_rt_info([SYNTHETIC_MARK])
    path = Path(model)
    if path.suffix == ".onnx":
        proto = onnx.load(str(path), load_external_data=False)
        return any(p.key == SYNTHETIC_MARK for p in proto.metadata_props)
    return ov.Core().read_model(path).has_rt_info([SYNTHETIC_MARK])
