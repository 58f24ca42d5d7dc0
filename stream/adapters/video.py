"""Frame sources: video files, RTSP, V4L2 webcams, image folders, and kinds others register.

`open_source(spec)` picks a kind from the spec string:

- ``rtsp://...``, ``rtsps://...``, ``rtmp://...``, ``http(s)://...`` -> a live network stream that
  reconnects with exponential backoff (tenacity); Motion JPEG streams pass their JPEG images on;
- ``webcam:N`` or ``/dev/videoN`` -> a live V4L2 webcam;
- a directory, a glob (``frames/*.jpg``) or a single image -> an image sequence (JPEG files are
  passed on as their bytes, not decoded and re-encoded);
- ``PREFIX:REST`` for a prefix added with `register_source_kind` (the load tester adds ``replay:``);
- anything else (optionally ``file:PATH``) -> a video file FFmpeg can read (H.264/H.265/MPEG-4/MJPEG)
  through PyAV, decoded with FFmpeg's own threads.

Every read is blocking: call it from a thread (`asyncio.to_thread`), never on the event loop.
"""

from __future__ import annotations

import glob
import importlib.metadata
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from stream.adapters.yuv import i420_to_rgb, shrink_i420, shrink_planes, to_full_range
from stream.errors import SourceError

__all__ = [
    "Frame",
    "FrameSource",
    "ImageFolderSource",
    "LiveCaptureSource",
    "NETWORK_PREFIXES",
    "VideoFileSource",
    "open_source",
    "register_source_kind",
    "skip_frames",
    "write_demo_clip",
    "write_video",
]

log = logging.getLogger(__name__)

_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
_I420_FORMATS = ("yuv420p", "yuvj420p")
_JPEG_RANGE = 2  # AVCOL_RANGE_JPEG: full range
NETWORK_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
"""Source specs that name a network stream: any host can open them, none reads a local file."""
_NETWORK_PREFIXES = NETWORK_PREFIXES


@dataclass(frozen=True)
class Frame:
    """One frame: `rgb` (HxWx3 uint8), `i420` (a planar 4:2:0 array, see `stream.adapters.yuv`;
    what decoded video gives, in video range when `i420_limited`) or `jpeg` bytes. At least one
    is set.

    `pts_ms` is media time (for sampling by target fps); `capture_ms` an epoch time when the
    source knows when the frame was taken (replay files); `label` optional ground truth.
    """

    rgb: np.ndarray | None = None
    jpeg: bytes | None = None
    i420: np.ndarray | None = None
    i420_limited: bool = False
    pts_ms: float | None = None
    capture_ms: float | None = None
    label: str | None = None

    def jfif_i420(self, short_side_px: int | None = None) -> np.ndarray | None:
        """The I420 planes in full range, ready for a JPEG, halved while the shorter side stays
        >= `short_side_px` (halving first: the range conversion then touches 4x fewer pixels)."""
        if self.i420 is None:
            return None
        planes = shrink_i420(self.i420, short_side_px)
        return to_full_range(planes) if self.i420_limited else planes

    def to_rgb(self) -> np.ndarray | None:
        """The pixels as uint8 [h, w, 3] RGB (converted from `i420` if need be); None for JPEG bytes."""
        if self.rgb is None and self.i420 is not None:
            return i420_to_rgb(self.jfif_i420())  # type: ignore[arg-type]
        return self.rgb


@runtime_checkable
class FrameSource(Protocol):
    """A source of frames. `live` sources drop when the pipeline falls behind; others wait."""

    uri: str
    live: bool

    def read(self) -> Frame | None:
        """The next frame, blocking; None at the end of a finite source."""
        ...

    def close(self) -> None: ...


SourceFactory = Callable[[str], FrameSource]
_KINDS: dict[str, SourceFactory] = {}


def register_source_kind(prefix: str, factory: SourceFactory) -> None:
    """Open specs ``PREFIX:REST`` with `factory(REST)` (e.g. ``replay`` for the load tester)."""
    if not prefix or ":" in prefix or "/" in prefix:
        raise ValueError(f"source kind prefix must be a plain word, got {prefix!r}")
    _KINDS[prefix] = factory


_PLUGIN_GROUP = "framestream.sources"
_plugins_loaded = False


def _load_plugin_kinds() -> None:
    """Let installed packages add source kinds (entry points in group ``framestream.sources``,
    each a callable that calls `register_source_kind`); loadtest adds ``replay:`` this way, so
    any ingest process can play replay files without `stream` importing `loadtest`."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in importlib.metadata.entry_points(group=_PLUGIN_GROUP):
        try:
            entry.load()()
        except Exception as e:  # a broken plugin must not break the built-in kinds
            log.warning("source plugin %s failed to load: %s", entry.name, e)


def open_source(spec: str, *, short_side_px: int | None = None) -> FrameSource:
    """Open the source `spec` names (see the module docstring); `SourceError` if it cannot.

    `short_side_px` is a hint: video files then scale frames to that shorter side as they
    decode them; other kinds ignore it.
    """
    if not spec:
        raise SourceError("empty source spec")
    prefix, sep, rest = spec.partition(":")
    if sep and prefix not in _KINDS:
        _load_plugin_kinds()
    if sep and prefix in _KINDS:
        return _KINDS[prefix](rest)
    lowered = spec.lower()
    if lowered.startswith(_NETWORK_PREFIXES):
        return LiveCaptureSource(spec, spec)
    if prefix == "webcam" and rest.isdigit():
        return LiveCaptureSource(spec, int(rest), backend=cv2.CAP_V4L2)
    if spec.startswith("/dev/video"):
        return LiveCaptureSource(spec, spec, backend=cv2.CAP_V4L2)
    if prefix == "file" and sep:
        spec = rest
    path = Path(spec)
    if path.is_dir() or glob.has_magic(spec) or path.suffix.lower() in _IMAGE_EXTS:
        return ImageFolderSource(spec)
    if not path.is_file():
        raise SourceError(f"source {spec!r}: no such file, directory, or known kind ({sorted(_KINDS)})")
    return VideoFileSource(spec, short_side_px=short_side_px)


def skip_frames(source: FrameSource, n: int) -> int:
    """Read and discard `n` frames (to resume after a position); returns how many were skipped."""
    for i in range(n):
        if source.read() is None:
            return i
    return n


class VideoFileSource:
    """A video file through PyAV (FFmpeg), RGB frames with their presentation times."""

    live = False

    def __init__(self, path: str, *, short_side_px: int | None = None) -> None:
        import av

        self.uri = path
        self.short_side_px = short_side_px
        try:
            self._container: Any = av.open(path)
            stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError) as e:
            raise SourceError(f"cannot open video {path!r}: {e}") from e
        # slice threads only: frame threading costs ~35% more CPU per frame (measured), and in a
        # pipeline sharing the cores CPU per frame is what bounds throughput
        stream.thread_type = "SLICE"
        self._stream = stream
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 30.0
        self._frames: Iterator[Any] = self._container.decode(stream)
        self._index = 0

    def read(self) -> Frame | None:
        import av

        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except av.FFmpegError as e:
            raise SourceError(f"{self.uri}: cannot decode frame {self._index}: {e}") from e
        pts_ms = float(frame.time * 1000.0) if frame.time is not None else self._index * 1000.0 / self.fps
        self._index += 1
        w, h = frame.width, frame.height
        if frame.format.name in _I420_FORMATS and w % 2 == 0 and h % 2 == 0:
            i420 = shrink_planes(*_plane_views(frame), self.short_side_px)
            full = frame.format.name == "yuvj420p" or frame.color_range == _JPEG_RANGE
            return Frame(i420=i420, i420_limited=not full, pts_ms=pts_ms)
        if self.short_side_px is not None and min(w, h) > self.short_side_px:
            scale = self.short_side_px / min(w, h)
            w, h = max(1, round(w * scale)), max(1, round(h * scale))
            rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
        else:
            rgb = frame.to_ndarray(format="rgb24")
        return Frame(rgb=rgb, pts_ms=pts_ms)

    def close(self) -> None:
        self._container.close()


def _plane_views(frame: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, Cb, Cr of a decoded 4:2:0 PyAV frame as uint8 views (no copy; rows padded to the line size)."""
    views = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8, count=plane.line_size * plane.height)
        rows = rows.reshape(plane.height, plane.line_size)
        views.append(rows[:, : plane.width])
    return views[0], views[1], views[2]


class ImageFolderSource:
    """Images from a directory (sorted), a glob, or one file; nominal `fps` for media time."""

    live = False

    def __init__(self, spec: str, fps: float = 30.0) -> None:
        self.uri = spec
        self.fps = fps
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_EXTS)
        elif glob.has_magic(spec):
            files = sorted(Path(p) for p in glob.glob(spec) if Path(p).suffix.lower() in _IMAGE_EXTS)
        else:
            files = [path] if path.is_file() else []
        if not files:
            raise SourceError(f"source {spec!r}: no image files found")
        self.files = files
        self._index = 0

    def read(self) -> Frame | None:
        if self._index >= len(self.files):
            return None
        path = self.files[self._index]
        pts_ms = self._index * 1000.0 / self.fps
        self._index += 1
        if path.suffix.lower() in (".jpg", ".jpeg"):
            return Frame(jpeg=path.read_bytes(), pts_ms=pts_ms)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            # one bad file is bad input, not a dead source: pass its bytes on to be dead-lettered
            log.warning("%s: not a readable image; passing it on as is", path)
            return Frame(jpeg=path.read_bytes(), pts_ms=pts_ms)
        return Frame(rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), pts_ms=pts_ms)

    def close(self) -> None:
        self._index = len(self.files)


class LiveCaptureSource:
    """RTSP/HTTP streams and V4L2 webcams through OpenCV; reconnects with exponential backoff.

    A read that fails closes the capture and reopens it, waiting 0.5 s, 1 s, 2 s, ... (at most
    `max_backoff_s`) between attempts; after `max_attempts` failed reopenings the source raises
    `SourceError` (the ingest stage reports it and publishes end-of-stream).

    A network stream of Motion JPEG (what many IP cameras serve over HTTP) is read as its JPEG
    images, not decoded: FFmpeg hands over each packet (OpenCV's raw mode) and frames carry
    `jpeg` bytes, as image folders do. Reading then costs next to nothing (a 160x120 stream read
    at 5,000 frames/s, the test camera's own limit; decoded, the overload test's camera got
    ~1,200 frames/s through), and the frames are decoded once, in preprocess.
    """

    live = True

    def __init__(
        self,
        uri: str,
        target: str | int,
        *,
        backend: int = cv2.CAP_ANY,
        max_attempts: int = 8,
        max_backoff_s: float = 10.0,
        opener: Callable[[], Any] | None = None,
    ) -> None:
        self.uri = uri
        self._target = target
        self._backend = backend
        self._opener = opener or self._open_capture
        self.max_attempts = max_attempts
        self.max_backoff_s = max_backoff_s
        self.reconnects = 0
        self.jpeg_packets = False  # the open capture hands over JPEG images (MJPEG, raw mode)
        self._cap: Any = None
        self._closed = False
        self._connect()

    def _open_capture(self) -> Any:
        cap = cv2.VideoCapture(self._target, self._backend)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.uri}")
        if cap.getBackendName() == "FFMPEG":
            fourcc = (int(cap.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF).to_bytes(4, "little")
            self.jpeg_packets = fourcc == b"MJPG" and bool(cap.set(cv2.CAP_PROP_FORMAT, -1))
        return cap

    def _connect(self) -> None:
        self.jpeg_packets = False
        retrying = Retrying(
            retry=retry_if_exception_type(SourceError),
            wait=wait_exponential(multiplier=0.5, max=self.max_backoff_s),
            stop=stop_after_attempt(self.max_attempts),
            reraise=True,
            before_sleep=lambda rs: log.warning(
                "%s: reconnect attempt %d failed", self.uri, rs.attempt_number
            ),
        )
        self._cap = retrying(self._opener)

    def read(self) -> Frame | None:
        while not self._closed:
            ok, data = self._cap.read() if self._cap is not None else (False, None)
            if ok and data is not None:
                now_ms = time.time() * 1000.0
                if self.jpeg_packets:  # a bad image travels on: preprocess dead-letters it, with why
                    return Frame(jpeg=data.tobytes(), capture_ms=now_ms)
                return Frame(rgb=cv2.cvtColor(data, cv2.COLOR_BGR2RGB), capture_ms=now_ms)
            if self._closed:
                break
            log.warning("%s: read failed, reconnecting", self.uri)
            self._release()
            self.reconnects += 1
            self._connect()
        return None

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def close(self) -> None:
        self._closed = True
        self._release()


def write_video(path: Path, frames: Iterable[np.ndarray], *, fps: int = 25, crf: int = 20) -> Path:
    """Encode uint8 HxWx3 RGB frames into an H.264 (yuv420p) file at `path` with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream: Any = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
                stream.options = {"preset": "veryfast", "crf": str(crf)}
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return path


def write_demo_clip(path: Path, *, frames: int = 150, size: tuple[int, int] = (320, 240)) -> Path:
    """A synthetic clip (moving shapes on a gradient) for `framestream run` without a source."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]

    def frame(i: int) -> np.ndarray:
        rgb = np.stack([(xx + 2 * i) % 256, (yy + i) % 256, np.full_like(xx, (3 * i) % 256)], -1).astype(
            np.uint8
        )
        cx, cy = int(w / 2 + w / 3 * np.sin(i / 15)), int(h / 2 + h / 3 * np.cos(i / 20))
        cv2.circle(rgb, (cx, cy), h // 6, (255, 255, 255), -1)
        cv2.rectangle(rgb, (w - cx - 20, h - cy - 20), (w - cx + 20, h - cy + 20), (200, 30, 30), -1)
        return rgb

    return write_video(Path(path), (frame(i) for i in range(frames)))
