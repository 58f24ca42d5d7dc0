"""A model repository published as an archive at a URL with its sha256: fetched once, verified,
served read-only; a wrong or missing sha256 is one clear error and leaves nothing cached."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.errors import ModelError
from stream.zoo.repository import ModelRepository
from tests.own_models import COLOURS, colour_onnx, write_labels


class _CountingHandler(SimpleHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.hits.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Published:
    url: str  # with #sha256=...
    sha256: str
    hits: list[str]
    base: str


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], env=env, capture_output=True,
                          text=True, timeout=240, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    """A repository with the colour model, made with `models add`, tarred and served over HTTP."""
    work = tmp_path_factory.mktemp("publish")
    env = {"HOME": str(work / "home"), "PATH": os.environ["PATH"], "LANG": "C.UTF-8", "CI": "true",
           "FRAMESTREAM_MODELS__REPOSITORY": str(work / "repository")}  # fmt: skip
    model, labels = colour_onnx(work / "colour.onnx"), write_labels(work / "colours.txt", COLOURS)
    done = _cli(
        env, "models", "add", "colour", str(model), "--labels", str(labels), "--mean", "0", "--scale", "255"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    served = work / "served"
    served.mkdir()
    archive = served / "repo.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(work / "repository", arcname=".")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    hits: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"hits": hits})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield Published(f"{base}/repo.tar.gz#sha256={sha}", sha, hits, base)
    httpd.shutdown()
    httpd.server_close()


def test_a_url_repository_is_fetched_once_and_serves_its_models(published: Published, tmp_path: Path) -> None:
    before = len(published.hits)
    repo = ModelRepository(published.url, cache_dir=tmp_path)
    spec = repo.spec("colour")
    assert (spec.classes, spec.version) == (3, 1)
    assert repo.root == tmp_path / "repositories" / published.sha256
    assert ModelRepository(published.url, cache_dir=tmp_path).versions("colour") == [1]
    assert len(published.hits) == before + 1  # the second replica on this host found it cached
    with pytest.raises(ModelError, match="read-only"):
        ModelRepository(published.url, cache_dir=tmp_path).activate("colour", 1)


def test_a_wrong_or_missing_sha256_is_refused_and_nothing_is_cached(
    published: Published, tmp_path: Path
) -> None:
    wrong = f"{published.base}/repo.tar.gz#sha256={'0' * 64}"
    with pytest.raises(ModelError, match="sha256 mismatch"):
        ModelRepository(wrong, cache_dir=tmp_path).names()
    with pytest.raises(ModelError, match="add the archive's sha256"):
        ModelRepository(f"{published.base}/repo.tar.gz", cache_dir=tmp_path).names()
    with pytest.raises(ModelError, match="HTTP 404"):
        ModelRepository(
            f"{published.base}/nothing.tar.gz#sha256={published.sha256}", cache_dir=tmp_path
        ).names()
    assert not any((tmp_path / "repositories").glob("*"))


def test_classify_with_the_repository_setting_naming_a_url(published: Published, tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    cv2.imwrite(str(image), np.full((48, 64, 3), (20, 20, 230), np.uint8))  # BGR: red
    env = {"HOME": str(tmp_path / "home"), "PATH": os.environ["PATH"], "LANG": "C.UTF-8", "CI": "true",
           "FRAMESTREAM_MODELS__REPOSITORY": published.url}  # fmt: skip
    done = _cli(env, "classify", str(image), "--model", "colour", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["results"][0]["top"][0]["label"] == "red", out
    model, labels = colour_onnx(tmp_path / "colour.onnx"), write_labels(tmp_path / "colours.txt", COLOURS)
    refused = _cli(
        env, "models", "add", "colour", str(model), "--labels", str(labels), "--mean", "0", "--scale", "255"
    )
    assert refused.returncode != 0 and "read-only" in refused.stderr
