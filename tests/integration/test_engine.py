"""The engine on the two real TFLite MobileNets: right answers, batch invariance, async, clear errors."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from stream.adapters.media.image import fit_to_model, read_image
from stream.adapters.openvino.engine import Engine, open_engine
from stream.errors import ModelError

CLOSE_CALL = 0.05  # the largest lead a swapped top-1 may have over the expected class

REAL = {
    "mobilenet_v2_1.0_224_quant.tflite": "mobilenet-v2-1.0-224-quant",
    "mobilenet_v1_0.25_128_quant.tflite": "mobilenet-v1-0.25-128-quant",
}


def _expected_rows() -> list[tuple[str, str, str, str]]:
    from tests.conftest import SHARED

    path = SHARED / "images" / "EXPECTED.tsv"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        image, model_file, label, *note = line.split("\t")
        rows.append((image, model_file, label, note[0] if note else ""))
    return rows


@pytest.fixture(scope="module")
def engines(shared_dir: Path, tmp_path_factory) -> dict[str, Engine]:
    cache = tmp_path_factory.mktemp("cache")
    opened = {
        name: open_engine(name, weights_dir=shared_dir / "models", cache_dir=cache, allow_synthetic=False)
        for name in REAL.values()
    }
    yield opened
    for engine in opened.values():
        engine.close()


def _photos(shared_dir: Path, engine: Engine, n: int) -> np.ndarray:
    paths = sorted((shared_dir / "images").glob("*.bmp")) + sorted((shared_dir / "images").glob("*.jpg"))
    fitted = [fit_to_model(read_image(p), engine.spec) for p in paths]
    return np.stack([fitted[i % len(fitted)] for i in range(n)])


@pytest.mark.parametrize(
    ("image", "model_file", "label", "note"),
    _expected_rows() or [pytest.param("", "", "", "", marks=pytest.mark.skip(reason="../shared is absent"))],
)
def test_expected_top1_through_the_engine(engines, shared_dir, image, model_file, label, note):
    # owl.jpg is marked unstable because a *center crop* flips it to kite; the engine path uses the
    # whole-image resize the file was measured with, where it wins by 68 % to 9 %, so it is tested.
    engine = engines[REAL[model_file]]
    probs = engine.infer(fit_to_model(read_image(shared_dir / "images" / image), engine.spec)[None])[0]
    top1 = engine.labels[int(np.argmax(probs))]
    if top1.split(",")[0] != label:
        # uint8 kernels differ by CPU (AVX2 against AVX-512 VNNI round differently), so a photo whose
        # two best classes are close may swap them: kite_and_cold.jpg gives seashore on one machine
        # and volleyball (0.355 against 0.324) on an AVX2-only one. Such a swap passes only when the
        # expected class is a close second.
        expected = [i for i, name in enumerate(engine.labels) if name.split(",")[0] == label]
        assert expected, f"{label!r} is not a label of {model_file}"
        second = probs[expected[0]]
        assert probs.max() - second <= CLOSE_CALL, (
            f"{image} on {model_file}: got {top1!r}, {label!r} at {second}"
        )
    assert engine.labels_source == shared_dir / "models" / "imagenet_labels.txt"
    assert not engine.synthetic


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL.values()))
def test_batch_output_equals_per_image_output(engines, shared_dir, name):
    engine = engines[name]
    photos = _photos(shared_dir, engine, 64)
    singles = np.concatenate([engine.infer(photos[i : i + 1]) for i in range(64)])
    assert singles.shape == (64, 1000) and singles.dtype == np.float32
    for n in (1, 2, 7, 16, 33, 64):
        batch = engine.infer(photos[:n])
        np.testing.assert_array_equal(batch, singles[:n], err_msg=f"batch of {n} differs")


async def test_async_requests_in_flight_match_sync_and_leave_the_loop_free(engines, shared_dir):
    engine = engines["mobilenet-v2-1.0-224-quant"]
    photos = _photos(shared_dir, engine, 12)
    want = engine.infer(photos)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    tick_task = asyncio.create_task(ticker())
    chunks = [photos[i : i + 3] for i in range(0, 12, 3)]
    got = await asyncio.wait_for(asyncio.gather(*(engine.infer_async(c) for c in chunks)), timeout=60)
    stop.set()
    await tick_task
    np.testing.assert_array_equal(np.concatenate(got), want)
    assert ticks > len(chunks), "the event loop was blocked while inference ran"


def test_probabilities_are_a_distribution_over_1000_classes(engines, shared_dir):
    engine = engines["mobilenet-v2-1.0-224-quant"]
    probs = engine.infer(_photos(shared_dir, engine, 4))
    assert probs.shape == (4, 1000)
    assert (probs >= 0).all() and (probs.sum(axis=1) <= 1.0 + 1e-6).all()
    assert len(engine.labels) == 1000 and engine.labels[285] == "Egyptian cat"


def test_bad_batches_are_refused_with_the_expected_shape(engines):
    engine = engines["mobilenet-v1-0.25-128-quant"]
    with pytest.raises(ValueError, match=r"uint8 \[N, 128, 128, 3\]"):
        engine.infer(np.zeros((1, 128, 128, 3), np.float32))
    with pytest.raises(ValueError, match=r"got uint8 \(1, 224, 224, 3\)"):
        engine.infer(np.zeros((1, 224, 224, 3), np.uint8))
    assert engine.infer(np.zeros((0, 128, 128, 3), np.uint8)).shape == (0, 1000)


def test_without_labels_file_classes_are_numbered(shared_dir, tmp_path):
    weights = tmp_path / "w"
    weights.mkdir()
    shutil.copy(shared_dir / "models" / "mobilenet_v1_0.25_128_quant.tflite", weights)
    with open_engine(
        "mobilenet-v1-0.25-128-quant", weights_dir=weights, cache_dir=tmp_path / "c", allow_synthetic=False
    ) as engine:
        assert engine.labels_source is None
        assert engine.labels[:2] == ["class_0", "class_1"] and len(engine.labels) == 1000


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"\x00garbage, not a flatbuffer" * 10, "garbage"),
        (None, "truncated"),  # first half of the real file
    ],
)
def test_corrupt_or_truncated_model_file_gives_a_clear_error(shared_dir, tmp_path, content, what):
    weights = tmp_path / "w"
    weights.mkdir()
    real = (shared_dir / "models" / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    (weights / "mobilenet_v1_0.25_128_quant.tflite").write_bytes(content or real[: len(real) // 2])
    with pytest.raises(
        ModelError, match=r"cannot read model file .*mobilenet_v1_0.25_128_quant.tflite.*corrupt"
    ):
        open_engine("mobilenet-v1-0.25-128-quant", weights_dir=weights, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*"))


def test_unknown_model_and_missing_weights_say_what_to_do(tmp_path):
    with pytest.raises(ModelError, match="unknown model 'resnet-50'; known models: .*mobilenet"):
        open_engine("resnet-50", cache_dir=tmp_path)
    with pytest.raises(ModelError, match="models fetch mobilenet-v2-1.0-224-quant.*--weights-dir"):
        open_engine("mobilenet-v2-1.0-224-quant", weights_dir=tmp_path, cache_dir=tmp_path)


def test_the_weights_dir_comes_from_the_caller_never_from_the_environment(
    shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings model is the one reader of FRAMESTREAM_* variables: settings that name no
    weights dir (``models.weights_dir: null`` in a config) mean none, whatever the shell has."""
    monkeypatch.setenv("FRAMESTREAM_WEIGHTS_DIR", str(shared_dir / "models"))
    monkeypatch.setenv("FRAMESTREAM_MODELS__WEIGHTS_DIR", str(shared_dir / "models"))
    with pytest.raises(ModelError, match="no model file"):
        open_engine("mobilenet-v1-0.25-128-quant", weights_dir=None, cache_dir=tmp_path / "cache")
    with open_engine(
        "mobilenet-v1-0.25-128-quant", weights_dir=shared_dir / "models", cache_dir=tmp_path
    ) as real:
        assert not real.synthetic


def test_a_closed_engine_is_freed_with_its_compiled_models_and_their_threads(tmp_path: Path) -> None:
    """A model version swapped out is closed and dropped: nothing may keep it (its compiled models
    and their inference threads) alive, or every swap of a long-running infer leaks one."""
    import gc
    import weakref

    import psutil

    def one_engine() -> weakref.ref[Engine]:
        with open_engine("mobilenet-v1-0.25-128", cache_dir=tmp_path) as engine:
            h, w = engine.spec.input_hw
            engine.infer(np.zeros((2, h, w, 3), np.uint8))
            asyncio.run(engine.infer_async(np.zeros((1, h, w, 3), np.uint8)))
            return weakref.ref(engine)

    one_engine()  # the first one loads what stays for the process (OpenVINO's plugin)
    gc.collect()
    threads = psutil.Process().num_threads()  # OpenVINO's own threads included
    refs = [one_engine() for _ in range(3)]
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    assert psutil.Process().num_threads() <= threads
