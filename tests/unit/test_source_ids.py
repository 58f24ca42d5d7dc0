"""One rule names a source, whichever way it came in (pure)."""

from __future__ import annotations

import pytest

from stream.core.sources.ids import ID_PATTERN, source_id, source_ids


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("clips/traffic.mp4", "traffic"),
        ("/data/clips/traffic.mp4", "traffic"),
        ("clips/stills/", "stills"),
        ("rtsp://user:secret@cam-7:554/stream?token=x", "cam-7-stream"),
        ("http://10.0.0.5/video.mjpg", "10.0.0.5-video.mjpg"),
        ("webcam:0", "webcam-0"),
        ("replay:recordings/racer.fsr", "racer"),
        ("weird name (1).mp4", "weird-name-1"),
        ("///", "source"),
    ],
)
def test_a_uri_names_its_source(uri: str, expected: str) -> None:
    assert source_id(uri) == expected
    assert ID_PATTERN.match(source_id(uri))


def test_a_password_in_a_url_never_reaches_the_id() -> None:
    assert "secret" not in source_id("rtsp://admin:secret@cam/live")


def test_names_taken_in_one_run_get_a_suffix_in_order() -> None:
    assert source_ids(["a/clip.mp4", "b/clip.mp4", "clip.mkv", "other.mp4"]) == [
        "clip",
        "clip-2",
        "clip-3",
        "other",
    ]


def test_the_runners_and_the_api_use_this_rule() -> None:
    """The run loop both runners share and the ingress's source routes name sources with this module
    (no copy)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for path in ("stream/runners/drive.py", "deployments/api/sources.py"):
        tree = ast.parse((root / path).read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "stream.core.sources.ids" in modules, path
