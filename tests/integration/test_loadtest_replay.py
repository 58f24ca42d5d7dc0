"""Replay and record against a real redis-server: the frames a replay publishes follow the
message schema exactly, on an open-loop schedule, and a frames stream records back losslessly."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from loadtest.recorder import Labels, read_labels_tsv, record_source, record_stream
from loadtest.replayer import Replayer, ReplayPlan, load_clip
from loadtest.replayfile import ReplayFile
from loadtest.schedule import Pace
from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import decode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.errors import ConfigError

FRAME_KEYS = {"kind", "source", "seq", "capture_ms", "ingest_ms", "encoding", "label", "stamps"}


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Eight distinct images, as a camera-less "source" a user can point record at."""
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(8):
        img = np.full((48, 64, 3), i * 30, np.uint8)
        img[8:40, 8:56] = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.{'jpg' if i % 2 else 'png'}"), img)
    return folder


def test_record_a_folder_with_labels_from_a_tsv(image_folder: Path, tmp_path: Path) -> None:
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("# ground truth\n0-3\tcat\n5\tdog\n007.jpg\towl\n")
    rec = record_source(str(image_folder), tmp_path / "clip.fsr", labels=read_labels_tsv(tsv, default="bg"))
    assert rec.frames == 8 and rec.labelled == 8
    with ReplayFile(rec.path) as rf:
        assert rf.labels == ["cat"] * 4 + ["bg", "dog", "bg", "owl"]
        assert [f.encoding for f in rf.frames] == ["jpeg"] * 8
        # a JPEG file in the folder is kept byte for byte, not re-encoded
        assert rf.read(1).data == (image_folder / "001.jpg").read_bytes()
    raw = record_source(str(image_folder), tmp_path / "raw.fsr", encoding="raw", max_frames=3)
    with ReplayFile(raw.path) as rf:
        assert len(rf) == 3 and rf.read(2).payload().shape == (48, 64, 3)
    tsv.write_text("zero\n")
    with pytest.raises(ConfigError, match="labels.tsv:1"):
        read_labels_tsv(tsv)


async def test_replay_publishes_schema_exact_frames_on_an_open_loop_schedule(
    redis_client, image_folder: Path, tmp_path: Path
) -> None:
    rec = record_source(str(image_folder), tmp_path / "clip.fsr", labels=Labels(default="cat"))
    clip = load_clip(rec.path)
    keys = PipelineKeys("lt")
    plan = ReplayPlan(sources=3, pace=Pace("fps", fps=100), loops=2, source_prefix="cam")
    replayer = Replayer(StreamTransport(redis_client, keys, stage="loadtest"), keys, plan, [clip])
    log = await replayer.run()
    assert log.sent == {"cam-0": 16, "cam-1": 16, "cam-2": 16}

    entries = await redis_client.xrange(keys.frames)
    messages = [decode_message(fields[FIELD.encode()]) for _, fields in entries]
    frames = [m for m in messages if m.meta["kind"] == "frame"]
    eos = [m.meta for m in messages if m.meta["kind"] == "eos"]
    assert len(frames) == 48
    assert sorted((e["source"], e["seq"]) for e in eos) == [("cam-0", 16), ("cam-1", 16), ("cam-2", 16)]
    for m in frames:
        assert set(m.meta) == FRAME_KEYS
        assert m.meta["encoding"] == "jpeg" and m.meta["label"] == "cat"
        assert m.array is not None and m.array.dtype == np.uint8 and m.array.ndim == 1
        assert m.meta["ingest_ms"] >= m.meta["capture_ms"] - 1.0
    by_source: dict[str, list[dict]] = {}
    for m in frames:
        by_source.setdefault(m.meta["source"], []).append(m.meta)
    for metas in by_source.values():
        assert [m["seq"] for m in metas] == list(range(16))
        # capture_ms is the scheduled send time: exactly 10 ms apart at 100 fps, whenever it was sent
        gaps = np.diff([m["capture_ms"] for m in metas])
        np.testing.assert_allclose(gaps, 10.0, atol=1e-6)
    # the frame bytes are the recorded JPEGs, frame = seq % clip length
    first = next(m for m in frames if m.meta["source"] == "cam-1" and m.meta["seq"] == 9)
    assert first.array.tobytes() == clip.payloads[1].tobytes()


async def test_a_frames_stream_records_back_into_the_same_frames(
    redis_client, image_folder: Path, tmp_path: Path
) -> None:
    rec = record_source(str(image_folder), tmp_path / "clip.fsr", encoding="raw")
    clip = load_clip(rec.path)
    keys = PipelineKeys("rec")
    plan = ReplayPlan(sources=2, pace=Pace("max"), source_prefix="s")
    await Replayer(StreamTransport(redis_client, keys, stage="loadtest"), keys, plan, [clip]).run()
    copy = await record_stream(redis_client, keys, tmp_path / "copy.fsr", sources={"s-1"})
    assert copy.frames == 8
    with ReplayFile(copy.path) as rf:
        for i, frame in enumerate(rf):
            assert frame.encoding == "raw"
            np.testing.assert_array_equal(frame.payload(), clip.payloads[i])
    with pytest.raises(ConfigError, match="no frames"):
        await record_stream(redis_client, keys, tmp_path / "none.fsr", sources={"nobody"})
    assert not (tmp_path / "none.fsr").exists()


def test_a_replay_file_is_an_ingest_source_kind(image_folder: Path, tmp_path: Path) -> None:
    from loadtest.source import register
    from stream.adapters.media.video import open_source

    rec = record_source(str(image_folder), tmp_path / "clip.fsr", labels=Labels(default="cat"))
    register()
    source = open_source(f"replay:{rec.path}")
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    assert not source.live and len(frames) == 8
    assert all(f.label == "cat" and f.jpeg is not None for f in frames)
    assert [f.pts_ms for f in frames] == pytest.approx([i * 1000 / 30 for i in range(8)])
    from stream.errors import SourceError

    (tmp_path / "bad.fsr").write_bytes(b"nope")
    with pytest.raises(SourceError, match="not a valid replay file"):
        open_source(f"replay:{tmp_path / 'bad.fsr'}")


async def test_a_replay_into_a_partitioned_pipeline_sends_each_source_to_its_partition(
    redis_client, image_folder: Path, tmp_path: Path
) -> None:
    """The load tester joins a pipeline with the partition count it was created with."""
    from stream.adapters.redis.partitions import ensure_layout, recorded_keys
    from stream.core.keys import partition_of

    await ensure_layout(redis_client, PipelineKeys("ltp", 3))
    keys = await recorded_keys(redis_client, "ltp")
    assert keys.partitions == 3
    rec = record_source(str(image_folder), tmp_path / "clip.fsr")
    plan = ReplayPlan(sources=4, pace=Pace("max"), source_prefix="cam")
    await Replayer(
        StreamTransport(redis_client, keys, stage="loadtest"), keys, plan, [load_clip(rec.path)]
    ).run()
    for k in keys.all_partitions:
        sources = {
            decode_message(f[FIELD.encode()]).meta["source"] for _, f in await redis_client.xrange(k.frames)
        }
        assert sources == {f"cam-{i}" for i in range(4) if partition_of(f"cam-{i}", 3) == k.index}
