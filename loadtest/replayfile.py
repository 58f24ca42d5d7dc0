"""The replay file: recorded frames + original timestamps + optional labels (format version 1).

Layout (all integers big-endian; documented with a stdlib-only reader in docs/replay-format.md)::

    header  16 B   b"FSREPLAY" | version u16 | flags u16 (0) | reserved u32 (0)
    record  per frame: b"FRAM" | length u32 | frame bytes (JPEG file, or raw HxWx3 RGB uint8)
    index   UTF-8 JSON: {"format", "version", "source", "created", "meta", "frames": [...]}
    footer  24 B   index offset u64 | index length u32 | index CRC-32 u32 | b"FSREPEND"

Every frame entry in the index gives ``offset`` (of the frame bytes), ``length``, ``crc32``,
``timestamp_ms``, ``encoding`` ("jpeg" | "raw"), ``shape`` ([h, w, 3] for raw, else null) and
``label`` (ground truth or null). The writer writes ``PATH.part`` and renames it at the end, so
an interrupted recording never looks like a complete file. The reader checks every structural
field and every frame's CRC and raises `ReplayFormatError` saying what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np

from stream.errors import FramestreamError

__all__ = [
    "ENCODINGS",
    "FORMAT_NAME",
    "VERSION",
    "FrameInfo",
    "ReplayFile",
    "ReplayFormatError",
    "ReplayFrame",
    "ReplayWriter",
]

FORMAT_NAME = "framestream-replay"
VERSION = 1
ENCODINGS = ("jpeg", "raw")
_HEADER = struct.Struct(">8sHHI")
_HEADER_MAGIC = b"FSREPLAY"
_RECORD = struct.Struct(">4sI")
_RECORD_TAG = b"FRAM"
_FOOTER = struct.Struct(">QII8s")
_FOOTER_MAGIC = b"FSREPEND"
MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_INDEX_BYTES = 512 * 1024 * 1024


class ReplayFormatError(FramestreamError):
    """A file that is not a valid replay file (wrong magic, truncated, corrupt, unknown version)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: not a valid replay file: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class FrameInfo:
    """One frame's index entry."""

    offset: int
    length: int
    crc32: int
    timestamp_ms: float
    encoding: str
    shape: tuple[int, int, int] | None = None
    label: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "length": self.length,
            "crc32": self.crc32,
            "timestamp_ms": self.timestamp_ms,
            "encoding": self.encoding,
            "shape": list(self.shape) if self.shape else None,
            "label": self.label,
        }


@dataclass(frozen=True)
class ReplayFrame:
    """A frame read back: its index entry and its bytes (JPEG file, or raw RGB bytes)."""

    index: int
    info: FrameInfo
    data: bytes

    @property
    def timestamp_ms(self) -> float:
        return self.info.timestamp_ms

    @property
    def label(self) -> str | None:
        return self.info.label

    @property
    def encoding(self) -> str:
        return self.info.encoding

    def payload(self) -> np.ndarray:
        """The frame as the pipeline carries it: 1-D uint8 JPEG bytes, or uint8 HxWx3 RGB."""
        array = np.frombuffer(self.data, dtype=np.uint8)
        if self.info.encoding == "raw":
            assert self.info.shape is not None
            return array.reshape(self.info.shape)
        return array


class ReplayWriter:
    """Write a replay file frame by frame; `close()` (or leaving the `with` block) finishes it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        source: str = "",
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.source = source
        self.meta = dict(meta or {})
        self._part = self.path.with_name(self.path.name + ".part")
        self._file: BinaryIO | None = open(self._part, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._file.write(_HEADER.pack(_HEADER_MAGIC, VERSION, 0, 0))
        self._offset = _HEADER.size
        self._frames: list[FrameInfo] = []
        self._last_ts = -math.inf

    def __len__(self) -> int:
        return len(self._frames)

    def add_jpeg(self, data: bytes, timestamp_ms: float, label: str | None = None) -> None:
        """Append a JPEG-encoded frame captured at `timestamp_ms` (epoch or relative ms)."""
        if not bytes(data[:2]) == b"\xff\xd8":
            raise ValueError("JPEG data must start with the SOI marker FF D8")
        self._add(bytes(data), timestamp_ms, "jpeg", None, label)

    def add_raw(self, rgb: np.ndarray, timestamp_ms: float, label: str | None = None) -> None:
        """Append an uncompressed frame: uint8 HxWx3, RGB order."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"raw frames must be uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
        h, w, _ = rgb.shape
        self._add(np.ascontiguousarray(rgb).tobytes(), timestamp_ms, "raw", (h, w, 3), label)

    def _add(
        self,
        data: bytes,
        timestamp_ms: float,
        encoding: str,
        shape: tuple[int, int, int] | None,
        label: str | None,
    ) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: writer is closed")
        if not math.isfinite(timestamp_ms):
            raise ValueError(f"timestamp_ms must be finite, got {timestamp_ms}")
        if len(data) > MAX_FRAME_BYTES:
            raise ValueError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
        if label is not None and not isinstance(label, str):
            raise ValueError(f"label must be a string or None, got {type(label).__name__}")
        self._file.write(_RECORD.pack(_RECORD_TAG, len(data)))
        self._file.write(data)
        offset = self._offset + _RECORD.size
        self._frames.append(
            FrameInfo(offset, len(data), zlib.crc32(data), float(timestamp_ms), encoding, shape, label)
        )
        self._offset = offset + len(data)

    def close(self) -> Path:
        """Write the index and footer, and move the finished file into place."""
        if self._file is None:
            return self.path
        index = {
            "format": FORMAT_NAME,
            "version": VERSION,
            "source": self.source,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "frame_count": len(self._frames),
            "meta": self.meta,
            "frames": [f.to_json() for f in self._frames],
        }
        raw = json.dumps(index, separators=(",", ":")).encode()
        self._file.write(raw)
        self._file.write(_FOOTER.pack(self._offset, len(raw), zlib.crc32(raw), _FOOTER_MAGIC))
        self._file.close()
        self._file = None
        os.replace(self._part, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the unfinished file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._part.unlink(missing_ok=True)

    def __enter__(self) -> ReplayWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ReplayFile:
    """A replay file opened for reading; the index is checked on open, each frame's CRC on read."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise ReplayFormatError(self.path, f"cannot open: {e.strerror or e}") from e
        try:
            self._size = os.fstat(self._file.fileno()).st_size
            index = self._read_index()
            self.version: int = index["version"]
            self.source: str = str(index.get("source", ""))
            self.created: str = str(index.get("created", ""))
            self.meta: dict[str, Any] = dict(index.get("meta") or {})
            self.frames: list[FrameInfo] = [
                self._check_frame(i, f, index_offset=self._index_offset)
                for i, f in enumerate(index["frames"])
            ]
        except BaseException:
            self._file.close()
            raise

    def _fail(self, reason: str) -> ReplayFormatError:
        return ReplayFormatError(self.path, reason)

    def _read_at(self, offset: int, n: int) -> bytes:
        self._file.seek(offset)
        data = self._file.read(n)
        if len(data) != n:
            raise self._fail(f"truncated: wanted {n} bytes at offset {offset}, file has {self._size}")
        return data

    def _read_index(self) -> dict[str, Any]:
        if self._size < _HEADER.size + _FOOTER.size:
            raise self._fail(f"truncated: {self._size} bytes is too short for a header and a footer")
        magic, version, _flags, _ = _HEADER.unpack(self._read_at(0, _HEADER.size))
        if magic != _HEADER_MAGIC:
            raise self._fail(f"bad magic {magic!r}, expected {_HEADER_MAGIC!r}")
        if version != VERSION:
            raise self._fail(f"format version {version} is not supported; this build reads version {VERSION}")
        offset, length, crc, end_magic = _FOOTER.unpack(
            self._read_at(self._size - _FOOTER.size, _FOOTER.size)
        )
        if end_magic != _FOOTER_MAGIC:
            raise self._fail("no footer (truncated, or the recording was interrupted before it finished)")
        if offset < _HEADER.size or length > MAX_INDEX_BYTES or offset + length + _FOOTER.size != self._size:
            raise self._fail(
                f"footer points outside the file (index at {offset}, {length} bytes, file {self._size})"
            )
        raw = self._read_at(offset, length)
        if zlib.crc32(raw) != crc:
            raise self._fail("index CRC-32 mismatch: the index is corrupt")
        try:
            index = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._fail(f"index is not valid JSON: {e}") from e
        if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
            raise self._fail(f"index does not declare format {FORMAT_NAME!r}")
        if index.get("version") != VERSION:
            raise self._fail(
                f"index version {index.get('version')!r} does not match header version {VERSION}"
            )
        frames = index.get("frames")
        if not isinstance(frames, list):
            raise self._fail("index has no 'frames' list")
        self._index_offset = offset
        return index

    def _check_frame(self, i: int, f: Any, *, index_offset: int) -> FrameInfo:
        try:
            offset, length, crc = int(f["offset"]), int(f["length"]), int(f["crc32"])
            ts, encoding, shape, label = (
                float(f["timestamp_ms"]),
                f["encoding"],
                f.get("shape"),
                f.get("label"),
            )
        except (TypeError, KeyError, ValueError) as e:
            raise self._fail(f"frame {i}: malformed index entry ({type(e).__name__}: {e})") from e
        if encoding not in ENCODINGS:
            raise self._fail(f"frame {i}: unknown encoding {encoding!r}, expected one of {ENCODINGS}")
        if not math.isfinite(ts):
            raise self._fail(f"frame {i}: timestamp_ms is not finite")
        if label is not None and not isinstance(label, str):
            raise self._fail(f"frame {i}: label must be a string or null")
        if not (_HEADER.size + _RECORD.size <= offset and offset + length <= index_offset):
            raise self._fail(f"frame {i}: bytes {offset}..{offset + length} lie outside the record area")
        tag, n = _RECORD.unpack(self._read_at(offset - _RECORD.size, _RECORD.size))
        if tag != _RECORD_TAG or n != length:
            raise self._fail(f"frame {i}: no record header at offset {offset - _RECORD.size}")
        shape_t: tuple[int, int, int] | None = None
        if encoding == "raw":
            if not (
                isinstance(shape, list)
                and len(shape) == 3
                and shape[2] == 3
                and all(isinstance(d, int) and d > 0 for d in shape)
            ):
                raise self._fail(f"frame {i}: raw frame needs shape [h, w, 3], got {shape!r}")
            if shape[0] * shape[1] * 3 != length:
                raise self._fail(f"frame {i}: shape {shape} does not match {length} bytes")
            shape_t = (shape[0], shape[1], 3)
        return FrameInfo(offset, length, crc, ts, encoding, shape_t, label)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def timestamps_ms(self) -> list[float]:
        return [f.timestamp_ms for f in self.frames]

    @property
    def labels(self) -> list[str | None]:
        return [f.label for f in self.frames]

    def read(self, i: int) -> ReplayFrame:
        """Frame `i` with its bytes, CRC-checked."""
        info = self.frames[i]
        data = self._read_at(info.offset, info.length)
        if zlib.crc32(data) != info.crc32:
            raise self._fail(f"frame {i}: CRC-32 mismatch, the frame bytes are corrupt")
        return ReplayFrame(i, info, data)

    def __iter__(self) -> Iterator[ReplayFrame]:
        for i in range(len(self.frames)):
            yield self.read(i)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ReplayFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
