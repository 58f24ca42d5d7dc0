"""The whole pipeline gives the labels the model gives: its top-1 on every frame of a clip against
OpenVINO's top-1 on the same decoded frames (FFmpeg's RGB, fitted as preprocess fits a frame),
with frames in Redis as JPEG and as raw pixels made to the model's input by ingest.

v2-1.0-224 only: v1-0.25-128 is too close to a tie on many of these frames for a 99% bar to say
anything about the pipeline. Two equally faithful RGB conversions of the same decoded frames
(FFmpeg's and OpenCV's, each fitted with INTER_AREA) already give it different top-1 labels on 7.5%
of them (docs/performance.md, "Where the CPU goes", has its figures per encoding).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from stream.adapters.media.image import fit_to_model
from stream.adapters.openvino.engine import open_engine
from stream.adapters.redis.server import RedisServer
from stream.adapters.redis.source_registry import SourceSpec, add_source
from stream.core.keys import PipelineKeys
from tests.clips import SCENE_PHOTOS, read_photo, scene_frames, write_clip
from tests.integration.test_stages import V2, collect_results, make_settings, pipeline

pytestmark = pytest.mark.slow

_PER_SCENE = 20


@pytest.fixture(scope="module")
def scenes(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 camera-sized frames (640x480) of six photo scenes, so every frame is resized."""
    frames = []
    for photo in SCENE_PHOTOS:
        frames += scene_frames(read_photo(shared_dir / "images" / photo), _PER_SCENE, (640, 480))
    return write_clip(tmp_path_factory.mktemp("agreement") / "scenes.mp4", frames)


def _direct_top1(clip: Path, model: str, weights: Path, cache: Path) -> list[str]:
    with av.open(str(clip)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with open_engine(model, weights_dir=weights, cache_dir=cache, allow_synthetic=False) as engine:
        batch = np.stack([fit_to_model(rgb, engine.spec) for rgb in decoded])
        scores = np.concatenate([engine.infer(batch[i : i + 8]) for i in range(0, len(batch), 8)])
        return [engine.labels[int(i)] for i in scores.argmax(axis=1)]


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
async def test_pipeline_top1_is_openvinos_top1_on_the_same_frames(
    redis_server: RedisServer,
    redis_client,
    tmp_path: Path,
    shared_dir: Path,
    scenes: Path,
    encoding: str,
) -> None:
    model = V2
    weights = shared_dir / "models"
    settings = make_settings(tmp_path, weights, encoding=encoding)
    keys = PipelineKeys()
    async with pipeline(redis_server.url, settings, [model]):
        await add_source(redis_client, keys, "cam", SourceSpec(uri=str(scenes)))
        results, _ = await collect_results(redis_client, keys, {("cam", model)}, timeout_s=300)
    direct = _direct_top1(scenes, model, weights, tmp_path / "cache")
    assert [r["seq"] for r in results] == list(range(len(direct)))
    agree = [r["label"] == label for r, label in zip(results, direct, strict=True)]
    differ = [
        (r["seq"], r["label"], label) for r, label in zip(results, direct, strict=True) if r["label"] != label
    ]
    assert sum(agree) >= 0.99 * len(agree), differ
    # the frames were not all one picture: the scenes' labels show up
    assert len(set(direct)) >= len(SCENE_PHOTOS) // 2, set(direct)
