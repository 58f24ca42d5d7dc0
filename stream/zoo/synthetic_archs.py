"""The seed architectures, written once against `GraphBuilder` (IR or ONNX emitter).

Each function adds the whole network, input to named output, to the builder it is given.
Layer structure, channel counts, kernel sizes, strides and padding follow the original
framework code: TF-slim `mobilenet_v1`, Keras `MobileNetV3Small`, tonylins `MobileNetV2`
(what the Open Model Zoo's `mobilenet-v2-pytorch` exports) and MXNet Gluon `mobilenetv2_1.0`
(what the ONNX zoo's `mobilenetv2-7.onnx` was exported from).
"""

from __future__ import annotations

from stream.zoo.synthetic_graph import LOGIT_SPREAD, GraphBuilder, Tensor

__all__ = ["mobilenet_v1_025_128", "mobilenet_v3_small_224", "mobilenet_v2"]

_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5
_V1_BLOCKS += [(1024, 2), (1024, 1)]

# Residual branches end with a small batch-norm gamma, as trained MobileNets do.
_RESIDUAL_SPREAD = 0.5


def mobilenet_v1_025_128(b: GraphBuilder) -> None:
    """TF-slim MobileNet v1, depth multiplier 0.25, 128 px: `input` NHWC in [-1, 1] -> 1001 probs."""
    x = b.input("input", [1, 128, 128, 3], "NHWC", (-1.0, 1.0))
    x = b.conv(x, 8, 3, 2, "MobilenetV1/Conv2d_0", act="relu6")
    for i, (channels, stride) in enumerate(_V1_BLOCKS, start=1):
        scope = f"MobilenetV1/Conv2d_{i}"
        x = b.conv(x, x.channels, 3, stride, f"{scope}_depthwise", act="relu6", depthwise=True)
        x = b.conv(x, channels // 4, 1, 1, f"{scope}_pointwise", act="relu6")
    x = b.avg_pool(x, 4, "MobilenetV1/Logits/AvgPool_1a")
    x = b.conv(x, 1001, 1, 1, "MobilenetV1/Logits/Conv2d_1c_1x1", act=None, norm="bias", spread=LOGIT_SPREAD)
    x = b.flatten(x, "MobilenetV1/Logits/SpatialSqueeze")
    x = b.softmax(x, "MobilenetV1/Predictions/Softmax")
    x = b.flatten(x, "MobilenetV1/Predictions/Reshape_1")
    b.output(x, "MobilenetV1/Predictions/Reshape_1")


def _depth(value: float, divisor: int = 8) -> int:
    """Keras' `_depth`: round channels to a multiple of 8, never losing more than 10%."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


# expansion, filters, kernel, stride, squeeze-excite, activation (Keras MobileNetV3Small, alpha 1)
_V3_SMALL = [
    (1, 16, 3, 2, True, "relu"),
    (72 / 16, 24, 3, 2, False, "relu"),
    (88 / 24, 24, 3, 1, False, "relu"),
    (4, 40, 5, 2, True, "hswish"),
    (6, 40, 5, 1, True, "hswish"),
    (6, 40, 5, 1, True, "hswish"),
    (3, 48, 5, 1, True, "hswish"),
    (3, 48, 5, 1, True, "hswish"),
    (6, 96, 5, 2, True, "hswish"),
    (6, 96, 5, 1, True, "hswish"),
    (6, 96, 5, 1, True, "hswish"),
]


def _squeeze_excite(b: GraphBuilder, x: Tensor, scope: str) -> Tensor:
    s = b.global_pool(x, f"{scope}/squeeze_excite/AvgPool")
    s = b.conv(
        s,
        _depth(x.channels * 0.25),
        1,
        1,
        f"{scope}/squeeze_excite/Conv",
        act="relu",
        norm="bias",
        centre=False,
    )
    s = b.conv(
        s, x.channels, 1, 1, f"{scope}/squeeze_excite/Conv_1", act="hsigmoid", norm="bias", centre=False
    )
    return b.multiply(x, s, f"{scope}/squeeze_excite/Mul")


def _v3_block(b: GraphBuilder, x: Tensor, block_id: int, spec: tuple) -> Tensor:
    expansion, filters, kernel, stride, se, act = spec
    scope = f"MobilenetV3small/expanded_conv_{block_id}" if block_id else "MobilenetV3small/expanded_conv"
    shortcut = x
    if block_id:
        x = b.conv(x, _depth(x.channels * expansion), 1, 1, f"{scope}/expand", act=act)
    x = b.conv(x, x.channels, kernel, stride, f"{scope}/depthwise", act=act, depthwise=True)
    if se:
        x = _squeeze_excite(b, x, scope)
    residual = stride == 1 and shortcut.channels == filters
    x = b.conv(x, filters, 1, 1, f"{scope}/project", act=None, spread=_RESIDUAL_SPREAD if residual else 1.0)
    return b.add(shortcut, x, f"{scope}/Add") if residual else x


def mobilenet_v3_small_224(b: GraphBuilder) -> None:
    """Keras MobileNetV3Small (alpha 1.0, 224 px): `input_1` NHWC 0..255, rescaled inside -> 1000 probs."""
    x = b.input("input_1", [1, 224, 224, 3], "NHWC", (0.0, 255.0))
    # Keras `include_preprocessing=True`: Rescaling(scale=1/127.5, offset=-1) is part of the graph.
    x = b.rescale(x, 1.0 / 127.5, -1.0, "MobilenetV3small/rescaling")
    x = b.conv(x, 16, 3, 2, "MobilenetV3small/Conv", act="hswish")
    for block_id, spec in enumerate(_V3_SMALL):
        x = _v3_block(b, x, block_id, spec)
    x = b.conv(x, _depth(x.channels * 6), 1, 1, "MobilenetV3small/Conv_1", act="hswish")
    x = b.global_pool(x, "MobilenetV3small/GlobalAveragePool")
    x = b.conv(x, 1024, 1, 1, "MobilenetV3small/Conv_2", act="hswish", norm="bias", centre=False)
    x = b.conv(x, 1000, 1, 1, "MobilenetV3small/Logits", act=None, norm="bias", spread=LOGIT_SPREAD)
    x = b.flatten(x, "MobilenetV3small/flatten")
    x = b.softmax(x, "MobilenetV3small/Predictions/Softmax")
    b.output(x, "StatefulPartitionedCall/MobilenetV3small/Predictions/Softmax")


# expansion t, channels c, repeats n, first stride s (same table in tonylins and Gluon)
_V2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2)]
_V2_SETTINGS += [(6, 320, 1, 1)]


def _v2_trunk(b: GraphBuilder, x: Tensor, scope: str) -> Tensor:
    """Stem, 17 inverted residuals and the 1280-channel 1x1 conv. Both v2 sources keep the 1x1
    expansion conv in the t=1 block (32 -> 32), unlike torchvision."""
    x = b.conv(x, 32, 3, 2, f"{scope}conv0", act="relu6")
    index = 0
    for t, c, n, s in _V2_SETTINGS:
        for i in range(n):
            stride, shortcut, name = (s if i == 0 else 1), x, f"{scope}linearbottleneck{index}"
            x = b.conv(x, x.channels * t, 1, 1, f"{name}/pw", act="relu6")
            x = b.conv(x, x.channels, 3, stride, f"{name}/dw", act="relu6", depthwise=True)
            residual = stride == 1 and shortcut.channels == c
            x = b.conv(
                x, c, 1, 1, f"{name}/pw-linear", act=None, spread=_RESIDUAL_SPREAD if residual else 1.0
            )
            x = b.add(shortcut, x, f"{name}/add") if residual else x
            index += 1
    return b.conv(x, 1280, 1, 1, f"{scope}conv1", act="relu6")


def mobilenet_v2(b: GraphBuilder, *, head: str) -> None:
    """MobileNet v2 1.0 at 224 px, NCHW `data`, 1000 raw logits (no softmax in either source).

    head="pytorch": tonylins MobileNetV2 as the Open Model Zoo exports it: AvgPool2d(7), view,
    Linear with bias; output `prob`. head="gluon": Gluon mobilenetv2_1.0 as in the ONNX zoo:
    global average pool, 1x1 conv without bias, flatten; output
    `mobilenetv20_output_flatten0_reshape0`; the batch dimension is symbolic (`N`).
    """
    if head == "pytorch":
        # Normalized input, (x/255 - mean) / std, lies roughly in [-2.1, 2.6].
        x = b.input("data", [1, 3, 224, 224], "NCHW", (-2.0, 2.5))
        x = _v2_trunk(b, x, "features/")
        x = b.avg_pool(x, 7, "features/avgpool")
        x = b.flatten(x, "view")
        b.output(b.dense(x, 1000, "classifier.1"), "prob")
    elif head == "gluon":
        x = b.input("data", [-1, 3, 224, 224], "NCHW", (-2.0, 2.5))
        x = _v2_trunk(b, x, "mobilenetv20_features_")
        x = b.global_pool(x, "mobilenetv20_features_pool0_fwd")
        x = b.conv(x, 1000, 1, 1, "mobilenetv20_output_pred", act=None, norm="none", spread=LOGIT_SPREAD)
        b.output(
            b.flatten(x, "mobilenetv20_output_flatten0_reshape0"), "mobilenetv20_output_flatten0_reshape0"
        )
    else:
        raise ValueError(f"head must be 'pytorch' or 'gluon', got {head!r}")
