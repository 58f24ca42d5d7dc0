"""Which published frames become a source's thumbnail (the console shows it): at most one per
`interval_ms` per source, only JPEG bytes (ingest reuses the JPEG frames it publishes; a raw frame
is encoded only when a thumbnail is `due`), never larger than `max_bytes`."""

from __future__ import annotations

__all__ = ["ThumbnailThrottle", "is_jpeg"]

_JPEG_MAGIC = b"\xff\xd8\xff"


def is_jpeg(data: bytes | memoryview) -> bool:
    """True when `data` starts like a JPEG file (SOI marker and the next marker's first byte)."""
    return bytes(data[:3]) == _JPEG_MAGIC


class ThumbnailThrottle:
    """Per source, the time the last thumbnail was taken; `take` says whether this frame is one."""

    def __init__(self, interval_ms: float, max_bytes: int) -> None:
        if interval_ms < 0:
            raise ValueError(f"thumbnail interval_ms must be >= 0 (0 = off), got {interval_ms}")
        if max_bytes < 1:
            raise ValueError(f"thumbnail max_bytes must be >= 1, got {max_bytes}")
        self.interval_ms = interval_ms
        self.max_bytes = max_bytes
        self._last_ms: dict[str, float] = {}

    def due(self, source_id: str, now_ms: float) -> bool:
        """Whether a frame of `source_id` published at `now_ms` may become its thumbnail (before
        anyone encodes one)."""
        last = self._last_ms.get(source_id)
        return self.interval_ms != 0 and (last is None or now_ms - last >= self.interval_ms)

    def take(self, source_id: str, data: bytes | memoryview, now_ms: float) -> bool:
        """Whether `data` (a frame of `source_id` published at `now_ms`) becomes its thumbnail;
        True also records it, so the next one is due `interval_ms` later."""
        if len(data) > self.max_bytes or not is_jpeg(data) or not self.due(source_id, now_ms):
            return False
        self._last_ms[source_id] = now_ms
        return True

    def forget(self, source_id: str) -> None:
        """Drop a source that stopped (bounds the memory to the sources playing)."""
        self._last_ms.pop(source_id, None)
