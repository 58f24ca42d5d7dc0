"""ingest's blocking half: read, sample, downscale and encode frames (run in a thread), and
the reader thread of a live source with its drop buffer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from stream.adapters.media.image import fit_image
from stream.adapters.media.jpeg import decode_jpeg, encode_jpeg, encode_jpeg_i420
from stream.adapters.media.video import Frame, FrameSource, LiveHealth
from stream.adapters.media.yuv import i420_shape, i420_to_rgb, resize_i420
from stream.core.codec import Message, encode_message
from stream.core.geometry import ModelInput
from stream.core.messages import EOS, FRAME
from stream.core.sampling import DropBuffer, FrameSampler
from stream.core.sources.status import PLAYING
from stream.errors import CodecError, SourceError
from stream.settings import IngestSettings

__all__ = ["Chunk", "LivePump", "PendingFrame", "encode_frames", "eos_message", "prepare_frame"]

log = logging.getLogger(__name__)
_MAX_READS_PER_CHUNK = 512  # stay responsive when sampling skips most frames


@dataclass
class PendingFrame:
    """A frame ready to publish: its payload plus what the message meta needs."""

    array: np.ndarray
    encoding: str
    capture_ms: float
    pts_ms: float | None
    label: str | None
    fit: str | None = None  # `ModelInput.key` of the input these pixels already are

    def encode(
        self,
        source_id: str,
        seq: int,
        ingest_ms: float,
        models: tuple[str, ...] | None = None,
        model: str | None = None,
    ) -> bytes:
        """The frame message; with `model`, the tensor message of that model (the frame is
        already its input, so it skips preprocess: `IngestSettings.straight_to_tensors`)."""
        meta: dict[str, object] = {
            "kind": FRAME,
            "source": source_id,
            "seq": seq,
            "capture_ms": self.capture_ms,
            "ingest_ms": ingest_ms,
            "encoding": self.encoding,
            "label": self.label,
            "pts_ms": self.pts_ms,
            "stamps": {"ingest": [self.capture_ms, ingest_ms]},
        }
        if models is not None:
            meta["models"] = list(models)
        if self.fit is not None:
            meta["fit"] = self.fit
        if model is not None:
            meta["model"] = model
        return encode_message(Message(meta=meta, array=self.array))


@dataclass
class Chunk:
    frames: list[PendingFrame] = field(default_factory=list)
    consumed: int = 0  # frames read from the source (kept or not)
    eof: bool = False
    dropped: int = 0
    first_pts_ms: float | None = None


def eos_message(
    source_id: str,
    seq: int,
    *,
    first_seq: int = 0,
    error: str | None = None,
    removed: bool = False,
    models: tuple[str, ...] | None = None,
) -> bytes:
    """End of a source: `seq` follows its last frame; it published `seq - first_seq` frames."""
    meta: dict[str, object] = {
        "kind": EOS,
        "source": source_id,
        "seq": seq,
        "first_seq": first_seq,
        "ingest_ms": time.time() * 1000,
    }
    if error:
        meta["error"] = error
    if removed:
        meta["reason"] = "removed"
    if models is not None:
        meta["models"] = list(models)
    return encode_message(Message(meta=meta))


def _shrink(rgb: np.ndarray, short_side: int | None) -> np.ndarray:
    if short_side is None:
        return rgb
    h, w = rgb.shape[:2]
    if min(h, w) <= short_side:
        return rgb
    scale = short_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _planes_at(frame: Frame, fit: ModelInput) -> np.ndarray | None:
    """The frame's I420 planes resized to exactly `fit`'s input, when that is one resize and no
    crop or bars (a stretch model, an even size); None otherwise."""
    if frame.i420 is None:
        return None
    plan = fit.plan(i420_shape(frame.i420))
    if plan.padded or plan.resize_hw != fit.hw or fit.hw[0] % 2 or fit.hw[1] % 2:
        return None
    return resize_i420(frame.i420, fit.hw)


def _rgb(frame: Frame, cap: int | None) -> np.ndarray:
    """The frame as uint8 RGB, I420 halved first while its shorter side stays >= `cap`;
    `CodecError` for JPEG bytes that do not decode."""
    rgb = frame.to_rgb(cap)
    if rgb is not None:
        return rgb
    if frame.jpeg is None:
        raise SourceError("frame has neither pixels nor JPEG bytes")
    return decode_jpeg(frame.jpeg)


def _encoded(
    frame: Frame, cfg: IngestSettings, cap: int | None, fit: ModelInput | None
) -> tuple[np.ndarray, bool]:
    """The frame's payload per ``cfg.encoding``, and whether its pixels are exactly `fit`'s input."""
    if cfg.encoding == "jpeg":
        if frame.i420 is not None:
            return np.frombuffer(encode_jpeg_i420(frame.jfif_i420(cap), cfg.jpeg_quality), np.uint8), False  # type: ignore[arg-type]
        return np.frombuffer(encode_jpeg(_shrink(_rgb(frame, cap), cap), cfg.jpeg_quality), np.uint8), False
    planes = _planes_at(frame, fit) if fit is not None else None
    if planes is not None:
        return i420_to_rgb(planes, limited=frame.i420_limited), True
    rgb = _rgb(frame, cap)
    if fit is not None:
        return fit_image(rgb, fit.hw, fit.policy, fit.shorter, fit.pad), True
    return np.ascontiguousarray(_shrink(rgb, cap)), False


def prepare_frame(
    frame: Frame, cfg: IngestSettings, auto_short_side_px: int | None = None, fit: ModelInput | None = None
) -> PendingFrame:
    """Downscale (if configured) and encode one frame per the ingest settings.

    Decoded video arrives as I420 planes: with JPEG encoding they go into the JPEG as they are
    (no colour conversion), halved while they stay large enough; raw frames are resized as planes
    and converted to RGB at the small size. `auto_short_side_px` is what ``frame_short_side_px:
    auto`` stands for now (what the models reading the frames stream need; None when unknown);
    `fit`, with ``auto`` and raw frames, the one input every such model has
    (`PipelineBacklog.auto_fit`): raw frames are then made to exactly that input (one resize per
    frame; preprocess passes them on) and say so in their ``fit`` meta. JPEG frames are not: a
    JPEG at the model's own size loses detail the model sees (v1-0.25-128's top-1 agreed with
    OpenVINO's on 80% of a scene clip's frames, against 89% for the halved frame). JPEG files
    pass on untouched unless an explicit size asks for downscaling.
    """
    capture_ms = frame.capture_ms if frame.capture_ms is not None else time.time() * 1000.0
    setting = cfg.frame_short_side_px
    explicit = setting != "auto"
    cap = auto_short_side_px if setting == "auto" else setting
    if cfg.encoding == "jpeg" and frame.jpeg is not None and (cap is None or not explicit):
        array = np.frombuffer(frame.jpeg, dtype=np.uint8)  # pass JPEG files on untouched
        return PendingFrame(array, "jpeg", capture_ms, frame.pts_ms, frame.label)
    try:
        array, fitted = _encoded(frame, cfg, cap, None if explicit else fit)
    except CodecError:
        # bad input travels on as is; preprocess dead-letters it with the reason
        bad = np.frombuffer(frame.jpeg or b"", np.uint8)
        return PendingFrame(bad, "jpeg", capture_ms, frame.pts_ms, frame.label)
    key = fit.key if fitted and fit is not None else None
    return PendingFrame(array, cfg.encoding, capture_ms, frame.pts_ms, frame.label, key)


def encode_frames(
    source: FrameSource,
    sampler: FrameSampler,
    n: int,
    cfg: IngestSettings,
    auto_short_side_px: int | None = None,
    fit: ModelInput | None = None,
) -> Chunk:
    """Read up to `n` kept frames from a (non-live) source. Blocking: call from a thread."""
    chunk = Chunk()
    while len(chunk.frames) < n and chunk.consumed < _MAX_READS_PER_CHUNK:
        frame = source.read()
        if frame is None:
            chunk.eof = True
            break
        chunk.consumed += 1
        t_ms = frame.pts_ms if frame.pts_ms is not None else time.time() * 1000.0
        if not sampler.keep(t_ms):
            continue
        if chunk.first_pts_ms is None:
            chunk.first_pts_ms = frame.pts_ms
        chunk.frames.append(prepare_frame(frame, cfg, auto_short_side_px, fit))
    return chunk


class LivePump:
    """Reads a live source on its own thread into a `DropBuffer` (drop by policy when full)."""

    def __init__(self, source: FrameSource, sampler: FrameSampler, cfg: IngestSettings) -> None:
        self.source = source
        self.sampler = sampler
        self.cfg = cfg
        self._buffer: DropBuffer[Frame] = DropBuffer(cfg.live_queue, cfg.live_policy)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._reported = 0
        self.eof = False
        self.error: str | None = None
        self._last_frame_s: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"live:{source.uri}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopped.is_set():
                frame = self.source.read()
                if frame is None:
                    break
                self._last_frame_s = time.monotonic()
                t_ms = frame.capture_ms if frame.capture_ms is not None else time.time() * 1000.0
                if self.sampler.keep(t_ms):
                    with self._lock:
                        self._buffer.put(frame)
        except SourceError as e:
            self.error = str(e)
        except Exception as e:  # a reader thread must not die silently
            log.exception("live source %s failed", self.source.uri)
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.eof = True

    def health(self) -> LiveHealth:
        """The source's own report (`LiveCaptureSource.health`); a source kind without one is
        playing while it gives frames."""
        report = getattr(self.source, "health", None)
        if callable(report):
            health = report()
            if isinstance(health, LiveHealth):
                return health
        last = self._last_frame_s
        age = round(time.monotonic() - last, 3) if last is not None else None
        return LiveHealth(PLAYING, None, 0, age)

    def drain_dropped(self) -> int:
        """Frames the buffer dropped since the last call."""
        with self._lock:
            total = self._buffer.dropped
        new, self._reported = total - self._reported, total
        return new

    def take_encoded(
        self, n: int, publish: bool, auto_short_side_px: int | None = None, fit: ModelInput | None = None
    ) -> Chunk:
        """Up to `n` buffered frames, encoded; with `publish` False they are dropped (pipeline behind)."""
        eof = self.eof
        with self._lock:
            frames = self._buffer.take(n)
        chunk = Chunk(eof=eof and not frames)
        if not publish:
            chunk.dropped = len(frames)
            return chunk
        chunk.frames = [prepare_frame(f, self.cfg, auto_short_side_px, fit) for f in frames]
        return chunk

    def stop(self) -> int:
        """Stop reading; returns how many buffered frames were never published (the caller counts
        them as dropped: a removed live source loses them, and says so)."""
        self._stopped.set()
        self.source.close()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)  # a read in progress still lands in the buffer
        with self._lock:
            return len(self._buffer.take(len(self._buffer)))
