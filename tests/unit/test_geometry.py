"""Resize/crop planning: what a model sees of an image."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.core.geometry import plan_resize

sizes = st.tuples(st.integers(1, 5000), st.integers(1, 5000))


@given(src=sizes, dst=st.tuples(st.integers(1, 512), st.integers(1, 512)))
def test_full_resize_fills_the_model_input(src, dst):
    plan = plan_resize(src, dst, "stretch")
    assert plan.resize_hw == dst
    assert plan.crop_box == (0, 0, *dst)


@given(src=sizes, crop=st.integers(1, 300), extra=st.integers(0, 100))
def test_shorter_crop_keeps_aspect_and_crops_inside_the_centre(src, crop, extra):
    shorter = crop + extra
    plan = plan_resize(src, (crop, crop), "center-crop", shorter)
    res_h, res_w = plan.resize_hw
    assert min(res_h, res_w) == shorter
    # aspect ratio kept to within the one pixel int() truncation costs
    if src[0] <= src[1]:
        assert abs(res_w - shorter * src[1] / src[0]) < 1.0 or res_w == shorter
    else:
        assert abs(res_h - shorter * src[0] / src[1]) < 1.0 or res_h == shorter
    top, left, h, w = plan.crop_box
    assert (h, w) == (crop, crop) == plan.out_hw
    assert top >= 0 and top + h <= res_h
    assert left >= 0 and left + w <= res_w
    # centred: the margins differ by at most one pixel
    assert abs(top - (res_h - top - h)) <= 1 and abs(left - (res_w - left - w)) <= 1


@given(src=sizes, dst=st.tuples(st.integers(1, 512), st.integers(1, 512)))
def test_letterbox_keeps_aspect_fits_inside_and_centres_the_picture(src, dst):
    plan = plan_resize(src, dst, "letterbox")
    res_h, res_w = plan.resize_hw
    assert plan.out_hw == dst and plan.crop_box == (0, 0, res_h, res_w)
    assert 1 <= res_h <= dst[0] and 1 <= res_w <= dst[1]
    assert res_h == dst[0] or res_w == dst[1]  # one side fills the input
    # aspect kept to within the rounding of one side
    scale = min(dst[0] / src[0], dst[1] / src[1])
    assert abs(res_h - src[0] * scale) <= 1 and abs(res_w - src[1] * scale) <= 1
    bottom, right = dst[0] - res_h - plan.pad_top, dst[1] - res_w - plan.pad_left
    assert plan.pad_top >= 0 and abs(plan.pad_top - bottom) <= 1 and abs(plan.pad_left - right) <= 1


def test_letterbox_of_a_wide_frame_gets_bars_top_and_bottom():
    plan = plan_resize((480, 640), (224, 224), "letterbox")
    assert (plan.resize_hw, plan.pad_top, plan.pad_left, plan.padded) == ((168, 224), 28, 0, True)


def test_torchvision_resize_256_center_crop_224_numbers():
    # torchvision Resize(256) on 480x640 gives 256x341; CenterCrop(224) starts at (16, 58)
    plan = plan_resize((480, 640), (224, 224), "center-crop", 256)
    assert plan.resize_hw == (256, 341)
    assert plan.crop_box == (16, 58, 224, 224)
    portrait = plan_resize((1080, 720), (224, 224), "center-crop", 256)
    assert portrait.resize_hw == (384, 256)
    assert portrait.crop_box == (80, 16, 224, 224)


def test_shorter_defaults_to_the_crop_size():
    assert plan_resize((100, 200), (64, 64), "center-crop").resize_hw == (64, 128)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (((0, 10), (5, 5), "stretch"), "src_hw"),
        (((10, 10), (5, 0), "stretch"), "dst_hw"),
        (((10, 10), (5, 5), "squash"), "policy"),
        (((10, 10), (224, 224), "center-crop", 200), "shorter"),
    ],
)
def test_bad_arguments_name_the_bad_value(args, match):
    with pytest.raises(ValueError, match=match):
        plan_resize(*args)
