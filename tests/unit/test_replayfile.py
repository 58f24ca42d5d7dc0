"""The replay file format: round trip, the documented stdlib reader, and corrupt files rejected."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadtest.replayfile import ReplayFile, ReplayFormatError, ReplayWriter
from stream.errors import FramestreamError

DOC = Path(__file__).resolve().parents[2] / "docs" / "replay-format.md"


def _frames(n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, size=(24 + i, 32, 3), dtype=np.uint8) for i in range(n)]


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def _write(path: Path, frames: list[np.ndarray]) -> Path:
    with ReplayWriter(path, source="synthetic", meta={"fps": 30}) as w:
        for i, rgb in enumerate(frames):
            if i % 2:
                w.add_raw(rgb, 1000.0 + 33.3 * i, label=None if i == 3 else f"label {i}")
            else:
                w.add_jpeg(_jpeg(rgb), 1000.0 + 33.3 * i, label=f"label {i}")
    return path


def test_round_trip_keeps_bytes_timestamps_labels_and_meta(tmp_path: Path) -> None:
    frames = _frames()
    path = _write(tmp_path / "clip.fsr", frames)
    assert not (tmp_path / "clip.fsr.part").exists()
    with ReplayFile(path) as rf:
        assert len(rf) == 6
        assert rf.source == "synthetic" and rf.meta == {"fps": 30} and rf.version == 1
        assert rf.timestamps_ms == pytest.approx([1000.0 + 33.3 * i for i in range(6)])
        assert rf.labels == ["label 0", "label 1", "label 2", None, "label 4", "label 5"]
        for i, frame in enumerate(rf):
            if i % 2:
                assert frame.encoding == "raw"
                np.testing.assert_array_equal(frame.payload(), frames[i])
            else:
                assert frame.encoding == "jpeg"
                assert frame.data == _jpeg(frames[i])
                decoded = cv2.imdecode(frame.payload(), cv2.IMREAD_COLOR)
                assert decoded.shape == frames[i].shape


def test_the_documented_stdlib_reader_reads_a_file(tmp_path: Path) -> None:
    """docs/replay-format.md promises a reader in ~20 lines of plain Python: run it."""
    frames = _frames(4)
    path = _write(tmp_path / "clip.fsr", frames)
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert code, "docs/replay-format.md lost its reader snippet"
    snippet = code.group(1)
    assert "import framestream" not in snippet and "from stream" not in snippet
    assert "numpy" not in snippet and len(snippet.strip().splitlines()) <= 25
    scope: dict = {}
    exec(compile(snippet, str(DOC), "exec"), scope)
    index, got = scope["read_replay"](str(path))
    assert index["version"] == 1 and len(got) == 4
    assert got[1][0]["label"] == "label 1"
    assert got[1][1] == frames[1].tobytes()
    assert got[0][1] == _jpeg(frames[0])


def test_an_interrupted_recording_leaves_no_file_that_looks_complete(tmp_path: Path) -> None:
    path = tmp_path / "clip.fsr"
    with pytest.raises(RuntimeError), ReplayWriter(path) as w:
        w.add_raw(_frames(1)[0], 0.0)
        raise RuntimeError("camera unplugged")
    assert not path.exists() and not (tmp_path / "clip.fsr.part").exists()


def test_bad_frames_are_refused_when_writing(tmp_path: Path) -> None:
    with ReplayWriter(tmp_path / "x.fsr") as w:
        with pytest.raises(ValueError, match="SOI"):
            w.add_jpeg(b"not a jpeg", 0.0)
        with pytest.raises(ValueError, match="HxWx3"):
            w.add_raw(np.zeros((4, 4), np.uint8), 0.0)
        with pytest.raises(ValueError, match="finite"):
            w.add_raw(np.zeros((4, 4, 3), np.uint8), float("nan"))


def _corrupt(path: Path, at: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[at : at + len(data)] = data
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(b""), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "no footer"),
        (lambda p: p.write_bytes(p.read_bytes()[:200] + p.read_bytes()[-24:]), "footer points outside"),
        (lambda p: _corrupt(p, 0, b"GIF89a"), "bad magic"),
        (lambda p: _corrupt(p, 8, struct.pack(">H", 9)), "version 9 is not supported"),
        (lambda p: _corrupt(p, p.stat().st_size - 40, b"#"), "index CRC-32 mismatch"),
    ],
    ids=["empty", "cut-footer", "cut-middle", "magic", "version", "index-bitflip"],
)
def test_corrupt_files_are_rejected_with_a_clear_error(tmp_path: Path, damage, message: str) -> None:
    path = _write(tmp_path / "clip.fsr", _frames())
    damage(path)
    with pytest.raises(ReplayFormatError, match=message) as info:
        ReplayFile(path)
    assert isinstance(info.value, FramestreamError)
    assert str(path) in str(info.value)


def test_a_damaged_frame_is_caught_by_its_crc_on_read(tmp_path: Path) -> None:
    path = _write(tmp_path / "clip.fsr", _frames())
    with ReplayFile(path) as rf:
        offset = rf.frames[2].offset
    _corrupt(path, offset + 100, b"\x00\x01\x02")
    with ReplayFile(path) as rf:
        rf.read(1)
        with pytest.raises(ReplayFormatError, match="frame 2: CRC-32 mismatch"):
            rf.read(2)


def test_missing_file_is_a_format_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(ReplayFormatError, match="cannot open"):
        ReplayFile(tmp_path / "nope.fsr")


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0), flip=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_truncation_or_bit_flip_gives_a_format_error_or_valid_data(
    tmp_path_factory: pytest.TempPathFactory, cut: int, flip: int, bit: int
) -> None:
    frames = _frames(3)
    path = _write(tmp_path_factory.mktemp("fuzz") / "clip.fsr", frames)
    raw = bytearray(path.read_bytes())
    truncated = raw[: cut % len(raw)]
    path.write_bytes(bytes(truncated))
    with pytest.raises(ReplayFormatError):
        ReplayFile(path)
    i = flip % len(raw)
    raw[i] ^= 1 << bit
    path.write_bytes(bytes(raw))
    try:
        with ReplayFile(path) as rf:
            for frame in rf:
                assert frame.data  # a flip that survives must have hit something harmless
    except ReplayFormatError:
        pass
