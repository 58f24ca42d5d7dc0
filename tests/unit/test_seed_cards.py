"""Every seed descriptor's numbers equal its upstream card.

CARDS is transcribed by hand from the cards themselves, not from our descriptors:
- Open Model Zoo, github.com/openvinotoolkit/open_model_zoo, `models/public/<name>/README.md` and
  `model.yml`. The current cards give sha384 checksums, so file sha256s come from the last
  `model.yml` that gave sha256 (commit named per model). mobilenet-v2-pytorch's descriptor uses the
  tonylins/pytorch-mobilenet-v2 files, so its card is the one for those files, at aef60935fc79
  (the next commit, a17f931d1ebb, moved the card to torchvision's weights and 71.9 / 90.3).
- ONNX model zoo, github.com/onnx/models at b1eeaa1ac722,
  `validated/vision/classification/mobilenet/README.md` (MobileNet v2-7 row, preprocessing), and
  the Git LFS pointer of `model/mobilenetv2-7.onnx` for the file's size and sha256.
A value a card does not give is left out (None), not guessed: mobilenetv2-7's card gives neither
parameters nor FLOPs nor the tensor names.
"""

from __future__ import annotations

from typing import Any

import pytest

from stream.zoo import list_specs, load_spec

CARDS: dict[str, dict[str, Any]] = {
    # open_model_zoo models/public/mobilenet-v1-0.25-128: README.md at 7ef5b91f7511,
    # sha256 from model.yml at 7c958bfb329f
    "mobilenet-v1-0.25-128": {
        "top1": 40.54, "top5": 65.0, "params_m": 0.468, "gflops": 0.028,
        "files": {"mobilenet_v1_0.25_128.tgz": (
            10800019, "879ddc3e0857f3611b5cf248e36de2288c7a11ea8c2ed8a8bdded635e6010dfe")},
        "input_name": "input", "input_shape": (1, 128, 128, 3), "layout": "NHWC", "color": "RGB",
        "mean": (127.5, 127.5, 127.5), "scale": (127.5, 127.5, 127.5),
        "output_name": "MobilenetV1/Predictions/Reshape_1", "classes": 1001,  # "0 class is background"
    },
    # open_model_zoo models/public/mobilenet-v3-small-1.0-224-tf: README.md at 7ef5b91f7511,
    # sha256 from model.yml at 337ff7dc5270; no mean/scale outside the Keras graph
    "mobilenet-v3-small-1.0-224-tf": {
        "top1": 67.36, "top5": 87.44, "params_m": 2.537, "gflops": 0.11682,
        "files": {"weights_mobilenet_v3_small_224_1.0_float.h5": (
            10734624, "bb828f93ae32afb89c2df190a39c06deaa63ea1d95fec93bceb52264f5bf61e8")},
        "input_name": "input_1", "input_shape": (1, 224, 224, 3), "layout": "NHWC", "color": "RGB",
        "mean": (0.0, 0.0, 0.0), "scale": (1.0, 1.0, 1.0),
        "output_name": "StatefulPartitionedCall/MobilenetV3small/Predictions/Softmax", "classes": 1000,
    },
    # open_model_zoo models/public/mobilenet-v2-pytorch at aef60935fc79 (mobilenet-v2-pytorch.md, model.yml)
    "mobilenet-v2-pytorch": {
        "top1": 71.8, "top5": 90.396, "params_m": 3.489, "gflops": 0.615,
        "files": {
            "MobileNetV2.py": (4213, "7071e01e07e5f1b6127a2628d1be9c65cc20edfa745f4f4eb6354e7b27f5b444"),
            "mobilenet-v2.pth": (
                14205652, "ecbe2b568c8602549fa9e1d5833c63848f490a48d92e5d224d1eb2063e152cf8"),
        },
        "input_name": "data", "input_shape": (1, 3, 224, 224), "layout": "NCHW", "color": "RGB",
        "mean": (123.675, 116.28, 103.53), "scale": (58.624, 57.12, 57.375),
        "output_name": "prob", "classes": 1000,
    },
    # onnx/models validated/vision/classification/mobilenet at b1eeaa1ac722: mean/std on 0..1 pixels
    "mobilenetv2-7": {
        "top1": 70.94, "top5": 89.99, "params_m": None, "gflops": None,
        "files": {"mobilenetv2-7.onnx": (
            14246826, "c1c513582d56afceff8516c73804e484c81c6a830712ab6d682253f4a3cd042f")},
        "input_name": None, "input_shape": (1, 3, 224, 224), "layout": "NCHW", "color": "RGB",
        "mean": tuple(v * 255 for v in (0.485, 0.456, 0.406)),
        "scale": tuple(v * 255 for v in (0.229, 0.224, 0.225)),
        "output_name": None, "classes": 1000,
    },
}  # fmt: skip

_EXACT = ("top1", "top5", "params_m", "gflops", "input_name", "input_shape", "layout", "color",
          "output_name", "classes")  # fmt: skip


def test_every_seed_has_a_card():
    seeds = {s.name for s in list_specs() if s.has_synthetic}
    assert seeds == set(CARDS)


@pytest.mark.parametrize("name", sorted(CARDS))
def test_descriptor_numbers_equal_the_card(name):
    card, spec = CARDS[name], load_spec(name)
    for field in _EXACT:
        if card[field] is not None:
            assert getattr(spec, field) == card[field], f"{name}: {field}"
    # mean/scale: the card's 0..1 values times 255 differ from the decimal in the YAML in the last bit
    assert spec.mean == pytest.approx(card["mean"], rel=1e-12, abs=0)
    assert spec.scale == pytest.approx(card["scale"], rel=1e-12, abs=0)
    assert {f.name: (f.size, f.sha256) for f in spec.files} == card["files"]
