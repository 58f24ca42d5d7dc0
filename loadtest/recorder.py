"""`loadtest record`: capture an ingest source, or a pipeline's frames stream, into a replay file.

Ground truth comes from ``--label TEXT`` (every frame) or a labels TSV whose lines are
``KEY<TAB>LABEL`` with KEY a frame index (``12``), an inclusive range (``0-39``) or, for image
folders, a file name (``cat.bmp``); ``#`` starts a comment. Later lines win.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.replayfile import ReplayWriter
from stream.adapters.redis.entries import text
from stream.core.codec import decode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.messages import FRAME
from stream.errors import CodecError, ConfigError

__all__ = ["Labels", "Recording", "read_labels_tsv", "record_source", "record_stream"]

_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_DEFAULT_FRAME_MS = 1000.0 / 30.0


@dataclass(frozen=True)
class Recording:
    """What a recording wrote."""

    path: Path
    frames: int
    labelled: int
    encoding: str
    span_ms: float


class Labels:
    """Ground truth per frame: one label for all, per index/range, or per file name."""

    def __init__(
        self,
        *,
        default: str | None = None,
        by_index: Mapping[int, str] | None = None,
        ranges: list[tuple[int, int, str]] | None = None,
        by_name: Mapping[str, str] | None = None,
    ) -> None:
        self.default = default
        self.by_index = dict(by_index or {})
        self.ranges = list(ranges or [])
        self.by_name = dict(by_name or {})

    def for_frame(self, index: int, name: str | None = None) -> str | None:
        if name is not None and name in self.by_name:
            return self.by_name[name]
        if index in self.by_index:
            return self.by_index[index]
        for lo, hi, label in reversed(self.ranges):
            if lo <= index <= hi:
                return label
        return self.default


def read_labels_tsv(path: str | Path, *, default: str | None = None) -> Labels:
    """Parse a labels TSV (see the module docstring); `ConfigError` names a bad line."""
    by_index: dict[int, str] = {}
    ranges: list[tuple[int, int, str]] = []
    by_name: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read labels file {path}: {e}") from e
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, label = line.partition("\t")
        key, label = key.strip(), label.strip()
        if not sep or not key or not label:
            raise ConfigError(f"{path}:{n}: expected KEY<TAB>LABEL, got {line!r}")
        if key.isdigit():
            by_index[int(key)] = label
        elif m := _RANGE.match(key):
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ConfigError(f"{path}:{n}: range {key} ends before it starts")
            ranges.append((lo, hi, label))
        else:
            by_name[key] = label
    return Labels(default=default, by_index=by_index, ranges=ranges, by_name=by_name)


def _add(
    writer: ReplayWriter,
    *,
    rgb: np.ndarray | None,
    jpeg: bytes | None,
    ts: float,
    label: str | None,
    encoding: str,
    jpeg_quality: int,
    i420: np.ndarray | None = None,
) -> None:
    from stream.adapters.media.jpeg import decode_jpeg, encode_jpeg, encode_jpeg_i420
    from stream.adapters.media.yuv import i420_to_rgb

    if i420 is not None:  # decoded video: JPEG straight from its planes, or RGB for raw
        if encoding == "jpeg":
            writer.add_jpeg(encode_jpeg_i420(i420, jpeg_quality), ts, label)
            return
        rgb = i420_to_rgb(i420)
    if encoding == "jpeg":
        writer.add_jpeg(jpeg if jpeg is not None else encode_jpeg(rgb, jpeg_quality), ts, label)  # type: ignore[arg-type]
    else:
        writer.add_raw(rgb if rgb is not None else decode_jpeg(jpeg), ts, label)  # type: ignore[arg-type]


def record_source(
    spec: str,
    out: str | Path,
    *,
    labels: Labels | None = None,
    encoding: str = "jpeg",
    jpeg_quality: int = 90,
    max_frames: int | None = None,
    every_nth: int = 1,
    on_frame: Callable[[int], None] | None = None,
) -> Recording:
    """Record `spec` (anything `stream.adapters.media.video.open_source` opens) into `out`.

    Stops at the end of a finite source, after `max_frames`, or on Ctrl-C (live sources), and
    keeps what was recorded.
    Timestamps are the source's capture time when it has one (live), else its media time.
    """
    from stream.adapters.media.video import open_source

    if encoding not in ("jpeg", "raw"):
        raise ConfigError(f"encoding must be 'jpeg' or 'raw', got {encoding!r}")
    if every_nth < 1:
        raise ConfigError(f"every_nth must be >= 1, got {every_nth}")
    labels = labels or Labels()
    source = open_source(spec)
    names = [p.name for p in getattr(source, "files", [])]
    meta: dict[str, object] = {"recorded_from": spec, "live": source.live}
    if getattr(source, "fps", None):
        meta["source_fps"] = float(source.fps)  # type: ignore[attr-defined]
    written = labelled = index = 0
    first_ts = last_ts = 0.0
    try:
        with ReplayWriter(out, source=spec, meta=meta) as writer:
            while max_frames is None or written < max_frames:
                try:
                    frame = source.read()
                except KeyboardInterrupt:  # Ctrl-C ends a live recording; keep what was captured
                    break
                if frame is None:
                    break
                i, index = index, index + 1
                if i % every_nth:
                    continue
                ts = frame.capture_ms if frame.capture_ms is not None else frame.pts_ms
                ts = float(ts) if ts is not None else i * _DEFAULT_FRAME_MS
                label = labels.for_frame(i, names[i] if i < len(names) else None) or frame.label
                _add(
                    writer,
                    rgb=frame.rgb,
                    jpeg=frame.jpeg,
                    i420=frame.jfif_i420(),
                    ts=ts,
                    label=label,
                    encoding=encoding,
                    jpeg_quality=jpeg_quality,
                )
                first_ts = ts if written == 0 else first_ts
                last_ts = ts
                written += 1
                labelled += label is not None
                if on_frame is not None:
                    on_frame(written)
            if written == 0:
                raise ConfigError(f"source {spec!r} gave no frames; nothing to record")
    finally:
        source.close()
    return Recording(Path(out), written, labelled, encoding, last_ts - first_ts)


async def record_stream(
    client: object,
    keys: PipelineKeys,
    out: str | Path,
    *,
    sources: set[str] | None = None,
    start_id: str = "-",
    end_id: str = "+",
    labels: Labels | None = None,
    encoding: str | None = None,
    max_frames: int | None = None,
    chunk: int = 500,
) -> Recording:
    """Copy the frames of a pipeline's frames stream (XRANGE, read-only) into a replay file.

    Frames keep their own encoding unless `encoding` forces one; their ``capture_ms`` becomes
    the timestamp and their ``label`` the ground truth unless `labels` gives one. `sources`
    keeps only those source ids.
    """
    labels = labels or Labels()
    written = labelled = 0
    first_ts = last_ts = 0.0
    cursor = start_id
    meta = {"recorded_from": keys.frames, "sources": sorted(sources) if sources else None}
    with ReplayWriter(out, source=keys.frames, meta=meta) as writer:
        while max_frames is None or written < max_frames:
            entries = await client.xrange(keys.frames, min=cursor, max=end_id, count=chunk)  # type: ignore[attr-defined]
            if not entries:
                break
            for _entry_id, fields in entries:
                data = fields.get(FIELD.encode())
                if data is None:
                    continue
                try:
                    msg = decode_message(data)
                except CodecError:
                    continue
                m = msg.meta
                if m.get("kind") != FRAME or msg.array is None:
                    continue
                if sources is not None and m.get("source") not in sources:
                    continue
                label = labels.for_frame(written) or m.get("label")
                ts = float(m.get("capture_ms") or m.get("ingest_ms") or written * _DEFAULT_FRAME_MS)
                enc = m.get("encoding", "raw")
                rgb, jpeg = (None, msg.array.tobytes()) if enc == "jpeg" else (msg.array, None)
                _add(
                    writer, rgb=rgb, jpeg=jpeg, ts=ts, label=label, encoding=encoding or enc, jpeg_quality=90
                )
                first_ts = ts if written == 0 else first_ts
                last_ts = ts
                written += 1
                labelled += label is not None
                if max_frames is not None and written >= max_frames:
                    break
            last = entries[-1][0]
            last = text(last)
            cursor = f"({last}"
        if written == 0:
            raise ConfigError(
                f"no frames found in {keys.frames}" + (f" for sources {sorted(sources)}" if sources else "")
            )
    return Recording(Path(out), written, labelled, encoding or "as recorded", last_ts - first_ts)
