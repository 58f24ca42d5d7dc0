"""The one reading of a source string: kind, rest, live or not, the local path it reads."""

from __future__ import annotations

import pytest

from stream.core.sources.ids import source_id
from stream.core.sources.uri import parse_source

CASES = [
    # uri, kind, live, local path
    ("/videos/traffic.mp4", "file", False, "/videos/traffic.mp4"),
    ("clips/", "file", False, "clips/"),
    ("file:/videos/traffic.mp4", "file", False, "/videos/traffic.mp4"),
    ("replay:/tmp/r.fsr", "replay", False, "/tmp/r.fsr"),
    ("RTSP://cam-7:554/stream", "rtsp", True, None),
    ("https://cam.example/mjpeg", "https", True, None),
    ("udp://239.0.0.1:1234", "udp", True, None),
    ("webcam:0", "webcam", True, None),
    ("/dev/video2", "webcam", True, None),
    ("rtsp:no-slashes", "rtsp", False, "no-slashes"),
    ("./odd:name.mp4", "file", False, "./odd:name.mp4"),
]


@pytest.mark.parametrize(("uri", "kind", "live", "path"), CASES)
def test_each_kind_of_source_string_is_read_one_way(
    uri: str, kind: str, live: bool, path: str | None
) -> None:
    parsed = parse_source(uri)
    assert (parsed.kind, parsed.live, parsed.path) == (kind, live, path)


def test_ids_follow_the_parse() -> None:
    assert source_id("rtsp://user:pw@cam-7:554/stream?x=1") == "cam-7-stream"
    assert source_id("webcam:3") == "webcam-3"
    assert source_id("/dev/video0") == "video0"
    assert source_id("replay:/tmp/rec/traffic.fsr") == "traffic"
    assert source_id("file:/videos/traffic.mp4") == "traffic"
    assert source_id("/videos/traffic.mp4") == "traffic"
