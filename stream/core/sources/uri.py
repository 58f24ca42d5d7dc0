"""What a source string names (pure): the one parser of ``--source`` and ``POST /v1/sources`` URIs.

Ingest opens a source by it, the API's source policy checks it, the source id rule names it and
the runners tell live sources from files by it, so all of them read a string the same way:

- ``/dev/videoN`` and ``webcam:N``: a webcam (kind ``webcam``);
- ``SCHEME://...`` with a network scheme (rtsp, rtsps, rtmp, http, https, udp, tcp): a network
  stream, kind = the scheme;
- ``KIND:REST`` where KIND has no ``/``: that kind (``file:PATH``, ``replay:PATH``, a kind a
  plug-in registers); the kind is compared in lower case;
- anything else, a path (a file, a folder, a glob): kind ``file``.

Network streams and webcams are *live*: they run until removed and drop frames when the pipeline
falls behind. The rest are played from start to end.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NETWORK_SCHEMES", "SourceUri", "parse_source"]

NETWORK_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp"})


@dataclass(frozen=True)
class SourceUri:
    """`uri` read as a `kind` and the `rest` after ``kind:`` (for a plain path, the path itself)."""

    uri: str
    kind: str
    rest: str

    @property
    def network(self) -> bool:
        """A network stream: ``rtsp://...``, ``http(s)://...``, ..."""
        return self.kind in NETWORK_SCHEMES and self.rest.startswith("//")

    @property
    def webcam(self) -> bool:
        return self.kind == "webcam"

    @property
    def live(self) -> bool:
        """A camera of some kind: it never ends by itself and drops when the pipeline is behind."""
        return self.network or self.webcam

    @property
    def path(self) -> str | None:
        """The local path this source reads (a file, a folder, a replay file), else None."""
        return None if self.live or self.rest.startswith("//") else self.rest


def parse_source(uri: str) -> SourceUri:
    """``rtsp://cam/x`` -> (rtsp, //cam/x); ``/a.mp4`` -> (file, /a.mp4); ``file:/a.mp4`` ->
    (file, /a.mp4); ``replay:/r.fsr`` -> (replay, /r.fsr); ``webcam:0`` -> (webcam, 0);
    ``/dev/video0`` -> (webcam, /dev/video0)."""
    if uri.startswith("/dev/video"):
        return SourceUri(uri, "webcam", uri)
    prefix, sep, rest = uri.partition(":")
    if not sep or not prefix or "/" in prefix:
        return SourceUri(uri, "file", uri)
    return SourceUri(uri, prefix.lower(), rest)
