"""Decoded video travels as I420 planes into the JPEG: the pixels a model sees must not change.

The reference is what FFmpeg itself gives as RGB for the same frame (PyAV ``to_ndarray("rgb24")``).
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream.adapters.media.image import fit_image, model_input
from stream.adapters.media.jpeg import decode_jpeg, encode_jpeg_i420
from stream.adapters.media.video import VideoFileSource, write_demo_clip
from stream.adapters.media.yuv import (
    i420_planes,
    i420_shape,
    i420_to_rgb,
    resize_i420,
    shrink_i420,
    shrink_planes,
)
from stream.core.codec import Message, decode_message
from stream.core.geometry import ModelInput
from stream.errors import CodecError
from stream.settings import IngestSettings
from stream.stages.ingest.frames import prepare_frame
from stream.stages.preprocess import prepare_tensor
from stream.zoo.repository import load_spec


def _ffmpeg_rgb(clip: Path, n: int) -> list[np.ndarray]:
    with av.open(str(clip)) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(n), c.decode(video=0), strict=False)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_clip(tmp_path_factory.mktemp("yuv") / "c.mp4", frames=6, size=(320, 240))


def test_video_frames_come_as_i420_that_matches_ffmpegs_rgb(clip: Path) -> None:
    src = VideoFileSource(str(clip))
    frames = [src.read() for _ in range(6)]
    src.close()
    reference = _ffmpeg_rgb(clip, 6)
    for frame, ref in zip(frames, reference, strict=True):
        assert frame.i420 is not None and frame.rgb is None
        assert frame.i420_limited  # H.264 from libx264: video range, converted on the way to JPEG
        assert i420_shape(frame.i420) == (240, 320)
        rgb = frame.to_rgb()
        assert rgb.shape == ref.shape
        # a limited-range plane read as full range would be off by ~10% in contrast
        diff = np.abs(rgb.astype(int) - ref.astype(int))
        assert diff.mean() < 3.0, diff.mean()


@pytest.mark.parametrize("short_side", [None, 60])
def test_frames_read_from_padded_decoder_rows_are_not_skewed(tmp_path: Path, short_side: int | None) -> None:
    # 202 pixels wide: FFmpeg pads each row to 256 bytes; reading the padding as pixels would
    # shear the picture. The source must give what FFmpeg's own packed yuv420p copy gives.
    padded = write_demo_clip(tmp_path / "odd.mp4", frames=3, size=(202, 130))
    with av.open(str(padded)) as c:
        decoded = [f for _, f in zip(range(3), c.decode(video=0), strict=False)]
        assert decoded[0].planes[0].line_size > 202  # the case under test
        expected = [shrink_i420(f.to_ndarray(format="yuv420p"), short_side) for f in decoded]
    src = VideoFileSource(str(padded), short_side_px=short_side)
    got = [src.read() for _ in range(3)]
    src.close()
    for frame, want in zip(got, expected, strict=True):
        assert frame is not None and frame.i420 is not None
        assert frame.i420.shape == want.shape and np.array_equal(frame.i420, want)
    if short_side is not None:
        assert i420_shape(expected[0]) == (64, 100)


def test_shrink_planes_rejects_planes_that_do_not_fit_together() -> None:
    y, cb = np.zeros((8, 8), np.uint8), np.zeros((4, 4), np.uint8)
    assert i420_shape(shrink_planes(y, cb, cb, 4)) == (4, 4)
    with pytest.raises(ValueError, match="not I420 planes"):
        shrink_planes(y, cb, np.zeros((4, 3), np.uint8), 4)


def test_jpeg_from_planes_decodes_to_the_same_picture(clip: Path) -> None:
    src = VideoFileSource(str(clip))
    frame = src.read()
    src.close()
    ref = _ffmpeg_rgb(clip, 1)[0]
    pending = prepare_frame(frame, IngestSettings(encoding="jpeg"))
    assert pending.encoding == "jpeg"
    decoded = decode_jpeg(pending.array)
    assert decoded.shape == ref.shape
    assert np.abs(decoded.astype(int) - ref.astype(int)).mean() < 4.0
    # the reduced-scale decode preprocess uses is still at least the size it asked for
    small = decode_jpeg(pending.array, min_hw=(100, 100))
    assert 100 <= small.shape[0] < 240 and small.shape[1] >= 100


def test_ingest_downscale_and_raw_encoding_work_from_planes(clip: Path) -> None:
    src = VideoFileSource(str(clip))
    frame = src.read()
    src.close()
    small = prepare_frame(frame, IngestSettings(encoding="jpeg", frame_short_side_px=100))
    assert decode_jpeg(small.array).shape == (120, 160, 3)  # a whole factor of 2 keeps >= 100
    auto = prepare_frame(frame, IngestSettings(encoding="jpeg"), auto_short_side_px=60)
    assert decode_jpeg(auto.array).shape == (60, 80, 3)
    kept = prepare_frame(
        frame, IngestSettings(encoding="jpeg", frame_short_side_px=None), auto_short_side_px=60
    )
    assert decode_jpeg(kept.array).shape == (240, 320, 3)
    raw = prepare_frame(frame, IngestSettings(encoding="raw"))
    assert raw.encoding == "raw" and raw.array.shape == (240, 320, 3)


def test_shrink_keeps_aspect_and_even_sizes_and_never_upscales() -> None:
    rng = np.random.default_rng(0)
    i420 = rng.integers(0, 256, (480 * 3 // 2, 640), dtype=np.uint8)
    out = shrink_i420(i420, 110)  # halved twice: 120 >= 110, a third time would give 60
    h, w = i420_shape(out)
    assert (h, w) == (120, 160)
    assert i420_shape(shrink_i420(i420, 240)) == (240, 320)
    assert shrink_i420(i420, 241) is i420  # halving would go below 241: kept as is
    assert shrink_i420(i420, 600) is i420
    assert shrink_i420(i420, None) is i420
    y, cb, cr = i420_planes(out)
    assert y.shape == (120, 160) and cb.shape == cr.shape == (60, 80)
    # a box filter: a flat picture stays flat, and the mean of a random one is kept
    flat = np.full_like(i420, 77)
    assert np.all(shrink_i420(flat, 110) == 77)
    odd = rng.integers(0, 256, (246 * 3 // 2, 330), dtype=np.uint8)  # 330x246 -> 164x122 (even)
    assert i420_shape(shrink_i420(odd, 100)) == (122, 164)
    assert abs(float(y.mean()) - float(i420[:480].mean())) < 1.0


def test_flat_colours_survive_the_plane_path() -> None:
    for rgb in ((200, 30, 30), (20, 180, 40), (10, 10, 220), (128, 128, 128)):
        img = np.full((64, 96, 3), rgb, np.uint8)
        ycrcb = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)  # full range, as JPEG stores it
        y, cr, cb = ycrcb[..., 0], ycrcb[::2, ::2, 1], ycrcb[::2, ::2, 2]
        i420 = np.concatenate([y.ravel(), cb.ravel(), cr.ravel()]).reshape(-1, 96)
        assert np.abs(i420_to_rgb(i420).astype(int) - img).max() <= 2
        assert np.abs(decode_jpeg(encode_jpeg_i420(i420, 95)).astype(int) - img).max() <= 4


def test_grayscale_jpeg_and_png_bytes_still_decode_to_rgb() -> None:
    gray = np.tile(np.arange(80, dtype=np.uint8), (64, 1))
    ok, jpeg = cv2.imencode(".jpg", gray)
    assert ok and decode_jpeg(jpeg.tobytes()).shape == (64, 80, 3)
    ok, png = cv2.imencode(".png", np.full((10, 12, 3), 200, np.uint8))
    assert ok and np.all(decode_jpeg(png.tobytes()) == 200)


def test_bad_i420_and_bad_jpeg_give_codec_errors() -> None:
    with pytest.raises(CodecError, match="I420"):
        encode_jpeg_i420(np.zeros((10, 7), np.uint8))
    with pytest.raises(CodecError, match="cannot decode JPEG"):
        decode_jpeg(b"\xff\xd8 definitely not a jpeg")


def test_frames_made_to_the_models_input_look_like_preprocess_fitting_them(clip: Path) -> None:
    """With ``auto`` and one model input, ingest makes raw frames to exactly that input (one
    plane resize, RGB at the small size) and preprocess passes them on; the pixels stay what
    preprocess would have made of the whole frame."""
    src = VideoFileSource(str(clip))
    frame = src.read()
    src.close()
    spec = load_spec("mobilenet-v1-0.25-128-quant")
    fit = model_input(spec)
    reference = fit_image(_ffmpeg_rgb(clip, 1)[0], fit.hw, fit.policy)
    raw = prepare_frame(frame, IngestSettings(encoding="raw"), 128, fit)
    jpeg = prepare_frame(frame, IngestSettings(encoding="jpeg"), 128, fit)
    assert raw.array.shape == (128, 128, 3) and raw.fit == fit.key
    # a JPEG keeps its halving rule (at the model's own size it would lose detail the model sees)
    assert decode_jpeg(jpeg.array).shape == (240, 320, 3) and jpeg.fit is None
    for pending in (raw, jpeg):
        message = decode_message(pending.encode("cam", 0, 0.0))
        assert message.meta.get("fit") == pending.fit
        tensor = prepare_tensor(message, spec)
        assert tensor.shape == (128, 128, 3)
        assert np.abs(tensor.astype(int) - reference.astype(int)).mean() < 4.0
    # an explicit frame size wins over the models' input: nothing fitted, nothing marked
    sized = prepare_frame(frame, IngestSettings(encoding="raw", frame_short_side_px=100), 128, fit)
    assert sized.array.shape == (100, 133, 3) and sized.fit is None
    # a center-crop input is fitted in RGB (crop, no bars) and still marked
    crop = ModelInput((96, 96), "center-crop", 110)
    cropped = prepare_frame(frame, IngestSettings(encoding="raw"), 110, crop)
    assert cropped.array.shape == (96, 96, 3) and cropped.fit == crop.key


def test_preprocess_checks_the_shape_of_a_frame_marked_as_fitted() -> None:
    """The ``fit`` meta is a hint, never trusted: a frame of another size is fitted anyway."""
    spec = load_spec("mobilenet-v1-0.25-128-quant")
    key = model_input(spec).key
    big = np.zeros((240, 320, 3), np.uint8)
    big[:, 160:] = 200
    tensor = prepare_tensor(Message({"encoding": "raw", "fit": key}, big), spec)
    assert tensor.shape == (128, 128, 3) and tensor[:, :60].max() == 0 and tensor[:, 70:].min() == 200
    exact = np.full((128, 128, 3), 9, np.uint8)
    assert np.array_equal(prepare_tensor(Message({"encoding": "raw", "fit": key}, exact), spec), exact)
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        prepare_tensor(Message({"encoding": "raw", "fit": key}, exact[..., 0]), spec)


def test_plane_resize_keeps_flat_pictures_flat_and_even_sizes() -> None:
    rng = np.random.default_rng(1)
    i420 = rng.integers(0, 256, (480 * 3 // 2, 640), dtype=np.uint8)
    out = resize_i420(i420, (128, 128))
    y, cb, cr = i420_planes(out)
    assert y.shape == (128, 128) and cb.shape == cr.shape == (64, 64)
    assert abs(float(y.mean()) - float(i420[:480].mean())) < 1.0
    assert np.all(resize_i420(np.full_like(i420, 50), (224, 224)) == 50)
    assert resize_i420(out, (128, 128)) is out
    with pytest.raises(ValueError, match="even"):
        resize_i420(i420, (127, 128))
