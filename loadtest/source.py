"""A replay file as an ingest source: ``framestream run --source replay:clip.fsr``.

`ReplaySource` satisfies `stream.adapters.media.video.FrameSource`; `register()` adds the ``replay:``
prefix to `open_source`. As a source for the ingest stage it plays like a video file (not live:
the ingest stage paces or blocks it, it never drops); `pts_ms` is the recorded time since the
first frame. For open-loop load at a controlled rate use `loadtest replay` instead.
"""

from __future__ import annotations

from loadtest.replayfile import ReplayFile, ReplayFormatError
from stream.adapters.media.video import Frame, register_source_kind
from stream.errors import SourceError

__all__ = ["PREFIX", "ReplaySource", "register"]

PREFIX = "replay"


class ReplaySource:
    """Frames of one replay file, in order, with their labels; `loops` plays it several times."""

    live = False

    def __init__(self, path: str, *, loops: int = 1) -> None:
        if loops < 1:
            raise ValueError(f"loops must be >= 1, got {loops}")
        self.uri = f"{PREFIX}:{path}"
        try:
            self._file = ReplayFile(path)
        except ReplayFormatError as e:
            raise SourceError(str(e)) from e
        if len(self._file) == 0:
            self._file.close()
            raise SourceError(f"{path}: the replay file holds no frames")
        ts = self._file.timestamps_ms
        self._first_ms = ts[0]
        self._period_ms = (ts[-1] - ts[0]) + ((ts[-1] - ts[0]) / (len(ts) - 1) if len(ts) > 1 else 33.3)
        self.fps = 1000.0 * (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 30.0
        self.loops = loops
        self._index = 0

    def __len__(self) -> int:
        return len(self._file) * self.loops

    def read(self) -> Frame | None:
        if self._index >= len(self):
            return None
        loop, i = divmod(self._index, len(self._file))
        self._index += 1
        try:
            frame = self._file.read(i)
        except ReplayFormatError as e:
            raise SourceError(str(e)) from e
        pts_ms = frame.timestamp_ms - self._first_ms + loop * self._period_ms
        if frame.encoding == "jpeg":
            return Frame(jpeg=frame.data, pts_ms=pts_ms, label=frame.label)
        return Frame(rgb=frame.payload(), pts_ms=pts_ms, label=frame.label)

    def close(self) -> None:
        self._index = len(self)
        self._file.close()


def register() -> None:
    """Make ``replay:PATH`` an ingest source kind (idempotent)."""
    register_source_kind(PREFIX, ReplaySource)
