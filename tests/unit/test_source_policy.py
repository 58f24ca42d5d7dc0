"""The source policy of ``POST /v1/sources`` (pure: a fake file system and resolver)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stream.adapters.source_access import check_uri, policy_from
from stream.core.sources.policy import SourcePolicy, check_source
from stream.settings import AllowedSources

POLICY = SourcePolicy.build(
    ["file", "replay", "http", "https", "rtsp", "rtsps", "rtmp"], ["/srv/media", "/tmp"], []
)
LINKS = {
    "/srv/media/etc": "/etc",  # a symlink out of a root
    "/srv/media/clips": "/data/clips",  # a symlinked folder outside every root
    "/tmp/up": "/srv/media",  # a symlink from one root into another
}
DNS = {
    "camera.local": ["10.0.0.7"],
    "metadata.google.internal": ["169.254.169.254"],
    "sneaky.example": ["93.184.216.34", "127.0.0.1"],  # one bad address among good ones
    "v6.example": ["2001:db8::1"],
    "mapped.example": ["::ffff:169.254.169.254"],
}


def fake_realpath(path: str) -> str:
    path = os.path.normpath(path)
    for link, target in LINKS.items():
        if path == link or path.startswith(link + "/"):
            return fake_realpath(target + path[len(link) :])
    return path


def fake_resolve(host: str) -> list[str]:
    if host not in DNS:
        raise OSError(f"[Errno -2] Name or service not known: {host!r}")
    return DNS[host]


def check(uri: str, policy: SourcePolicy = POLICY):
    return check_source(uri, policy, real_path=fake_realpath, resolve=fake_resolve)


@pytest.mark.parametrize(
    ("uri", "stored"),
    [
        ("/srv/media/clip.mp4", "/srv/media/clip.mp4"),
        ("file:/srv/media/clip.mp4", "/srv/media/clip.mp4"),
        ("file:///srv/media/clip.mp4", "/srv/media/clip.mp4"),
        ("/srv/media/frames", "/srv/media/frames"),  # an image folder
        ("/tmp/up/clip.mp4", "/srv/media/clip.mp4"),  # stored as resolved
        ("replay:/srv/media/run.fsr", "replay:/srv/media/run.fsr"),
        ("/srv/media/a/../b.mp4", "/srv/media/b.mp4"),
        ("rtsp://camera.local:554/stream", "rtsp://camera.local:554/stream"),
        ("rtsp://user:pw@10.0.0.8/live", "rtsp://user:pw@10.0.0.8/live"),  # private ranges are cameras
        ("https://v6.example/cam.mjpg", "https://v6.example/cam.mjpg"),
        ("http://[2001:db8::2]:8080/x", "http://[2001:db8::2]:8080/x"),
    ],
)
def test_allowed(uri: str, stored: str) -> None:
    verdict = check(uri)
    assert verdict.allowed, verdict.reason
    assert verdict.uri == stored


@pytest.mark.parametrize(
    ("uri", "outcome", "reason"),
    [
        ("/etc/passwd", "forbidden", "/etc/passwd is outside the folders"),
        ("file:///etc/shadow", "forbidden", "/etc/shadow is outside"),
        ("/srv/media/etc/shadow", "forbidden", "/srv/media/etc/shadow is outside"),
        ("/srv/media/clips/a.mp4", "forbidden", "or resolves through a symlink"),
        ("/srv/media/../../etc/passwd", "forbidden", "/srv/media/../../etc/passwd is outside"),
        ("/srv/mediabad/x.mp4", "forbidden", "outside"),  # a prefix of a root is not the root
        ("replay:/etc/passwd", "forbidden", "outside"),
        ("http://169.254.169.254/latest/meta-data", "forbidden", "169.254.169.254 is a cloud metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "forbidden", "resolves to 169.254.169.254"),
        ("http://mapped.example/", "forbidden", "cloud metadata"),
        ("http://[::ffff:169.254.169.254]/", "forbidden", "cloud metadata"),
        ("http://169.254.10.1/", "forbidden", "link-local"),
        ("http://[fe80::1]/", "forbidden", "link-local"),
        ("http://127.0.0.1:6379/", "forbidden", "loopback"),
        ("rtsp://[::1]/x", "forbidden", "loopback"),
        ("http://0.0.0.0/", "forbidden", "unspecified"),
        ("http://sneaky.example/", "forbidden", "resolves to 127.0.0.1"),
        ("http://no-such-host.invalid/", "forbidden", "does not resolve"),
        ("webcam:0", "forbidden", "kind 'webcam' is not allowed"),
        ("/dev/video0", "forbidden", "kind 'webcam' is not allowed"),
        ("gopher://example/", "forbidden", "kind 'gopher' is not allowed"),
        ("data/clip.mp4", "malformed", "must be absolute"),
        ("file:clip.mp4", "malformed", "must be absolute"),
        ("/srv/media/*.jpg", "malformed", "no wildcards"),
        ("/srv/media/a\x00b", "malformed", "control characters"),
        (" /srv/media/clip.mp4", "malformed", "whitespace"),
        ("", "malformed", "empty"),
        ("http:///nohost", "malformed", "needs a host"),
        ("http://camera.local:port/", "malformed", "not a valid http URL"),
    ],
)
def test_refused(uri: str, outcome: str, reason: str) -> None:
    verdict = check(uri)
    assert not verdict.allowed
    assert verdict.outcome == outcome, verdict
    assert reason in verdict.reason, verdict.reason
    for hidden in ("/etc/shadow", "/data/clips", "/etc/passwd"):  # where a path leads stays unsaid
        assert hidden not in verdict.reason or hidden in uri, verdict.reason


def test_explicitly_allowed_networks_and_webcams() -> None:
    policy = SourcePolicy.build(["http", "webcam"], [], ["127.0.0.0/8"])
    assert check("http://127.0.0.1:8080/mjpeg", policy).allowed
    assert not check("http://169.254.169.254/", policy).allowed  # only the named range opens
    assert check("webcam:0", policy).allowed and check("/dev/video2", policy).allowed
    assert check("/dev/video0/../../etc/passwd", policy).outcome == "malformed"
    assert check("/tmp/x.mp4", policy).outcome == "forbidden"  # no file kind at all


def test_a_credential_in_a_url_is_not_repeated_in_the_reason() -> None:
    verdict = check("rtsp://admin:hunter2secret@127.0.0.1/live")
    assert verdict.outcome == "forbidden" and "hunter2secret" not in verdict.reason


def test_the_adapter_resolves_real_symlinks(tmp_path: Path) -> None:
    """The adapter with the real file system: a symlink out of a root is refused."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"x")
    (root / "clip.mp4").write_bytes(b"x")
    (root / "escape").symlink_to(outside)
    policy = policy_from(AllowedSources(roots=[root], schemes=["file"]))
    assert check_uri(str(root / "clip.mp4"), policy).allowed
    refused = check_uri(str(root / "escape" / "secret.mp4"), policy)
    assert refused.outcome == "forbidden" and str(outside) not in refused.reason, refused.reason
    interpreter = check_uri("/proc/self/exe", policy)  # would name this host's Python if it told
    assert interpreter.outcome == "forbidden" and "python" not in interpreter.reason.lower()


@pytest.mark.parametrize("host", ["a" * 64 + ".example", "a..b"])
def test_a_host_name_the_resolver_cannot_encode_is_malformed(host: str) -> None:
    """IDNA refuses an empty label or one over 63 characters with UnicodeError (was a 500)."""
    policy = policy_from(AllowedSources(schemes=["http"]))
    verdict = check_uri(f"http://{host}/", policy)
    assert verdict.outcome == "malformed" and "not a valid host name" in verdict.reason, verdict


def test_settings_read_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.settings import load_settings

    monkeypatch.setenv("FRAMESTREAM_INGEST__ALLOWED_SOURCES__ROOTS", "/srv/media,/data")
    monkeypatch.setenv("FRAMESTREAM_INGEST__ALLOWED_SOURCES__SCHEMES", '["file", "RTSP"]')
    allowed = load_settings().ingest.allowed_sources
    assert allowed.roots == [Path("/srv/media"), Path("/data")]
    assert allowed.schemes == ["file", "rtsp"]
    with pytest.raises(ValueError, match="absolute"):
        AllowedSources(roots=[Path("relative")])
    with pytest.raises(ValueError, match="not an address range"):
        AllowedSources(networks=["localhost"])
