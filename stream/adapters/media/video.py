"""Frame sources: video files, RTSP, V4L2 webcams, image folders, and kinds others register.

`open_source(spec)` picks a kind from the spec string:

- ``rtsp://...``, ``rtsps://...``, ``rtmp://...``, ``http(s)://...`` -> a live network stream that
  reconnects forever with capped, jittered exponential backoff (tenacity) and notices a stalled
  stream; Motion JPEG streams pass their JPEG images on;
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
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_when_event_set,
    wait_random_exponential,
)

from stream.adapters.media.yuv import i420_to_rgb, shrink_i420, shrink_planes, to_full_range
from stream.core.sources.status import PLAYING, RECONNECTING, STALLED
from stream.core.sources.uri import NETWORK_SCHEMES, parse_source
from stream.errors import SourceError

__all__ = [
    "Frame",
    "FrameSource",
    "ImageFolderSource",
    "LiveCaptureSource",
    "LiveHealth",
    "LiveOptions",
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
_BUILT_IN_KINDS = NETWORK_SCHEMES | {"file", "webcam"}


@dataclass(frozen=True)
class Frame:
    """One frame: `rgb` (HxWx3 uint8), `i420` (a planar 4:2:0 array, see `stream.adapters.media.yuv`;
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

    def to_rgb(self, short_side_px: int | None = None) -> np.ndarray | None:
        """The pixels as uint8 [h, w, 3] RGB; None for JPEG bytes. `i420` is halved while the
        shorter side stays >= `short_side_px`, then converted (in its own range: no table first)."""
        if self.rgb is None and self.i420 is not None:
            return i420_to_rgb(shrink_i420(self.i420, short_side_px), limited=self.i420_limited)
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


def open_source(
    spec: str, *, short_side_px: int | None = None, live_options: LiveOptions | None = None
) -> FrameSource:
    """Open the source `spec` names (see the module docstring); `SourceError` if it cannot.

    `short_side_px` is a hint: video files then scale frames to that shorter side as they
    decode them; other kinds ignore it. `live_options`: how RTSP/HTTP streams and webcams
    reconnect and when they count as stalled. A live source does not connect here: its first
    read does (and keeps trying), so opening one never fails for an unreachable camera.
    """
    if not spec:
        raise SourceError("empty source spec")
    try:
        return _open_kind(spec, short_side_px, live_options)
    except SourceError:
        raise
    except OSError as e:  # too long a name, permission denied, a vanished mount, ...
        raise SourceError(f"source {_shown(spec)}: {e.strerror or e}") from e
    except Exception as e:  # a source plugin's bug is that source's failure, nobody else's
        raise SourceError(f"source {_shown(spec)}: {type(e).__name__}: {e}") from e


def _shown(spec: str, limit: int = 200) -> str:
    """`spec` for an error message, cut short (a reason is stored and shown with the source)."""
    return repr(spec if len(spec) <= limit else spec[:limit] + "...")


def _open_kind(spec: str, short_side_px: int | None, live_options: LiveOptions | None) -> FrameSource:
    parsed = parse_source(spec)
    if parsed.kind not in _KINDS and parsed.kind not in _BUILT_IN_KINDS:
        _load_plugin_kinds()
    if parsed.kind in _KINDS:
        return _KINDS[parsed.kind](parsed.rest)
    if parsed.network:
        return LiveCaptureSource(spec, spec, options=live_options)
    if parsed.webcam and parsed.rest.isdigit():
        return LiveCaptureSource(spec, int(parsed.rest), backend=cv2.CAP_V4L2, options=live_options)
    if parsed.webcam and parsed.rest == spec:
        return LiveCaptureSource(spec, spec, backend=cv2.CAP_V4L2, options=live_options)
    spec = parsed.rest if parsed.kind == "file" else spec
    path = Path(spec)
    if path.is_dir() or glob.has_magic(spec) or path.suffix.lower() in _IMAGE_EXTS:
        return ImageFolderSource(spec)
    if not path.is_file():
        if path.exists():
            raise SourceError(f"source {_shown(spec)} is not a regular file, a directory, or a known kind")
        raise SourceError(f"source {_shown(spec)}: no such file, directory, or known kind ({sorted(_KINDS)})")
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
            _require_regular_file(path)  # a FIFO or a device would block FFmpeg's open for good
            self._container: Any = av.open(path)
            stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError) as e:
            raise SourceError(f"cannot open video {_shown(path)}: {e}") from e
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


def _require_regular_file(path: str | Path) -> None:
    """SourceError unless `path` is a regular file (checked with stat: opening a FIFO blocks)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise SourceError(f"{_shown(str(path))} is not a regular file")


def _read_regular_file(path: Path) -> bytes:
    """The bytes of `path`, opened without blocking (a FIFO with no writer would block a plain
    open forever) and read only when it is a regular file; SourceError otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise SourceError(f"{_shown(str(path))}: {e.strerror or e}") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError(f"{_shown(str(path))} is not a regular file")
        return f.read()


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
            found = list(path.iterdir())
        elif glob.has_magic(spec):
            found = [Path(p) for p in glob.glob(spec)]
        else:
            found = [path]
        # is_file: regular files only (a FIFO named like an image would block its read)
        files = sorted(p for p in found if p.suffix.lower() in _IMAGE_EXTS and p.is_file())
        if not files:
            raise SourceError(f"source {_shown(spec)}: no image files found")
        self.files = files
        self._index = 0

    def read(self) -> Frame | None:
        if self._index >= len(self.files):
            return None
        path = self.files[self._index]
        pts_ms = self._index * 1000.0 / self.fps
        self._index += 1
        data = _read_regular_file(path)  # replaced by a FIFO, or gone, since the listing: SourceError
        if path.suffix.lower() in (".jpg", ".jpeg"):
            return Frame(jpeg=data, pts_ms=pts_ms)
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if bgr is None:
            # one bad file is bad input, not a dead source: pass its bytes on to be dead-lettered
            log.warning("%s: not a readable image; passing it on as is", path)
            return Frame(jpeg=data, pts_ms=pts_ms)
        return Frame(rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), pts_ms=pts_ms)

    def close(self) -> None:
        self._index = len(self.files)


@dataclass(frozen=True)
class LiveOptions:
    """How a live source keeps its stream (the ``ingest`` settings of the same names)."""

    reconnect_initial_backoff_s: float = 0.5
    reconnect_max_backoff_s: float = 10.0
    stall_after_s: float = 10.0
    open_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class LiveHealth:
    """A live source's connection as of now: `status` is playing, reconnecting or stalled (see
    `stream.core.sources.status`); `reconnects` counts attempts to reopen the stream."""

    status: str
    reason: str | None
    reconnects: int
    last_frame_age_s: float | None
    passed: tuple[tuple[str, str | None], ...] = ()
    """(status, reason) the source went through since the previous `health()` call, oldest
    first: a brief outage shows even to a caller that asks only now and then."""


_PASSED_KEPT = 32  # statuses remembered between two health() calls


class LiveCaptureSource:
    """RTSP/HTTP streams and V4L2 webcams through OpenCV; reconnects forever, with backoff.

    The stream is opened by the first `read` (on the reader's thread), not by the constructor, so
    an unreachable camera never blocks whoever opens the source. An open that fails, a read that
    fails (the stream ended or the connection dropped) and a stream silent for `stall_after_s`
    (the read is cut off there) all close the capture and reopen it, with a random wait below
    min(`reconnect_max_backoff_s`, `reconnect_initial_backoff_s` x 2^attempt) between attempts
    (tenacity's "full jitter", so cameras behind one restarted recorder do not come back in step);
    only `close` ends the attempts. `health()` tells how it goes, for status reports.

    Network streams open through FFmpeg with its open and read timeouts set (OpenCV's
    CAP_PROP_OPEN_TIMEOUT_MSEC / CAP_PROP_READ_TIMEOUT_MSEC), so neither an open nor a read blocks
    longer than `open_timeout_s` / `stall_after_s`. OpenCV has no read timeout for V4L2: a webcam
    read gives up after its select timeout (10 s, env OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT);
    `health()` reports such a source stalled from `stall_after_s` on regardless.

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
        options: LiveOptions | None = None,
        opener: Callable[[], Any] | None = None,
    ) -> None:
        self.uri = uri
        self.options = options or LiveOptions()
        self._target = target
        self._backend = backend
        self._opener = opener or self._open_capture
        self.jpeg_packets = False  # the open capture hands over JPEG images (MJPEG, raw mode)
        self._cap: Any = None
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._attempts = 0
        self._status: str = RECONNECTING
        self._reason: str | None = "opening the stream"
        self._last_frame_s: float | None = None
        self._connected_s: float | None = None
        self._reading = False
        self._passed: list[tuple[str, str | None]] = []

    @property
    def reconnects(self) -> int:
        """Attempts to reopen the stream (every open after the first)."""
        return max(0, self._attempts - 1)

    def health(self) -> LiveHealth:
        """Status, reason, reconnect attempts, seconds since the last frame, and the statuses
        passed through since the previous call (for one caller: it takes them). Thread-safe.

        A source playing but silent for `stall_after_s` is stalled from then on, even while its
        read still blocks (a backend without a read timeout); a frame makes it playing again."""
        now = time.monotonic()
        with self._lock:
            silent_since = max(t for t in (self._last_frame_s, self._connected_s) if t is not None) \
                if self._connected_s is not None else None  # fmt: skip
            stall_s = self.options.stall_after_s
            if self._status == PLAYING and silent_since is not None and now - silent_since >= stall_s:
                self._set_locked(STALLED, f"no frame for {now - silent_since:.0f} s (limit {stall_s:g} s)")
            status, reason, last, reconnects = self._status, self._reason, self._last_frame_s, self.reconnects
            passed, self._passed = tuple(self._passed), []
        age = round(now - last, 3) if last is not None else None
        return LiveHealth(status, reason, reconnects, age, passed)

    def _set(self, status: str, reason: str | None) -> None:
        with self._lock:
            self._set_locked(status, reason)

    def _set_locked(self, status: str, reason: str | None) -> None:
        if (status, reason) != (self._status, self._reason):
            self._passed.append((self._status, self._reason))
            del self._passed[:-_PASSED_KEPT]
        self._status, self._reason = status, reason

    def _open_capture(self) -> Any:
        if isinstance(self._target, str) and self._backend == cv2.CAP_ANY:
            timeouts = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                max(1, round(self.options.open_timeout_s * 1000)),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                max(1, round(self.options.stall_after_s * 1000)),
            ]
            cap = cv2.VideoCapture(self._target, cv2.CAP_FFMPEG, timeouts)
        else:
            cap = cv2.VideoCapture(self._target, self._backend)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.uri}")
        if cap.getBackendName() == "FFMPEG":
            fourcc = (int(cap.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF).to_bytes(4, "little")
            self.jpeg_packets = fourcc == b"MJPG" and bool(cap.set(cv2.CAP_PROP_FORMAT, -1))
        return cap

    def _attempt(self) -> Any:
        with self._lock:
            self._attempts += 1
        self.jpeg_packets = False
        cap = self._opener()
        with self._lock:
            self._connected_s = time.monotonic()
        return cap

    def _failed_attempt(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        self._set(RECONNECTING, str(error) if error else "cannot open the stream")
        log.warning("%s: open attempt %d failed (%s); trying again", self.uri, state.attempt_number, error)

    def _pause(self, seconds: float) -> None:
        self._closing.wait(seconds)  # close() cuts a wait short

    def _connect(self) -> Any:
        """Open the stream, trying again until it opens or the source is closed (SourceError then)."""
        retrying = Retrying(
            retry=retry_if_exception_type(SourceError),
            wait=wait_random_exponential(
                multiplier=self.options.reconnect_initial_backoff_s, max=self.options.reconnect_max_backoff_s
            ),
            stop=stop_when_event_set(self._closing),
            sleep=self._pause,
            reraise=True,
            before_sleep=self._failed_attempt,
        )
        return retrying(self._attempt)

    def read(self) -> Frame | None:
        """The next frame; blocks through outages and reconnects; None only once closed."""
        with self._lock:
            self._reading = True
        try:
            return self._read()
        finally:
            with self._lock:
                self._reading = False
            if self._closing.is_set():
                self._release()  # close() left the capture to this thread: it was reading from it

    def _read(self) -> Frame | None:
        while not self._closing.is_set():
            if self._cap is None:
                try:
                    self._cap = self._connect()
                except SourceError:
                    break  # closed while reconnecting
                continue
            started = time.monotonic()
            ok, data = self._cap.read()
            if ok and data is not None:
                with self._lock:
                    self._last_frame_s = time.monotonic()
                    self._set_locked(PLAYING, None)
                now_ms = time.time() * 1000.0
                if self.jpeg_packets:  # a bad image travels on: preprocess dead-letters it, with why
                    return Frame(jpeg=data.tobytes(), capture_ms=now_ms)
                return Frame(rgb=cv2.cvtColor(data, cv2.COLOR_BGR2RGB), capture_ms=now_ms)
            if self._closing.is_set():
                break
            waited_s = time.monotonic() - started
            limit_s = self.options.stall_after_s
            if waited_s >= 0.9 * limit_s:  # the read timeout cut a silent stream off
                with self._lock:  # unless health() called it stalled already (same outage, one event)
                    if self._status != STALLED:
                        self._set_locked(STALLED, f"no frame for {waited_s:.0f} s (limit {limit_s:g} s)")
                log.warning("%s: stalled (no frame for %.1f s), reconnecting", self.uri, waited_s)
            else:
                self._set(RECONNECTING, "the stream ended or the connection dropped")
                log.warning("%s: read failed, reconnecting", self.uri)
            self._release()
        return None

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def close(self) -> None:
        """Stop reading and reconnecting (a wait between attempts ends at once). A read in
        progress on another thread returns within the read timeout and releases the capture
        itself: OpenCV must not release a capture another thread is reading from."""
        self._closing.set()
        with self._lock:
            reading = self._reading
        if not reading:
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
