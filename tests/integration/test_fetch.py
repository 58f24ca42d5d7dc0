"""`models fetch` end to end against a local HTTP server serving archives built here.

Download -> size + sha256 check -> unpack -> convert_model -> IR in the cache -> the engine uses
it. Every failure must say what went wrong and leave nothing behind in the cache.
"""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from stream.adapters.openvino.engine import open_engine
from stream.cli import app
from stream.errors import ModelError
from stream.zoo import load_spec
from stream.zoo.fetch import fetch_model

MEAN, SCALE = [120.0, 110.0, 100.0], [50.0, 60.0, 70.0]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    """(served folder, base URL) of an http.server on 127.0.0.1 in a thread."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("FRAMESTREAM_MODELS__REPOSITORY", str(d))
    return d


def _tiny_onnx() -> bytes:
    """data [1,3,16,16] NCHW -> Conv -> GAP -> MatMul -> scores [1,1000] logits."""
    rng = np.random.default_rng(11)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 1, (4, 1000)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["data", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1000])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def _archive(kind: str, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


LABELS = "background\n" + "\n".join(f"thing {i}" for i in range(1000)) + "\n"


def _publish(
    models_dir: Path, served: Path, base: str, payload: bytes, file_name: str, **override: object
) -> str:
    """Serve `payload` as `file_name` and write a descriptor 'tiny' pointing at it."""
    (served / file_name).write_bytes(payload)
    (served / "labels.txt").write_text(LABELS)
    entry = {
        "name": file_name,
        "url": f"{base}/{file_name}",
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    entry.update(override)
    desc = {
        "framework": "onnx",
        "files": [entry],
        "model_file": "tiny.onnx",
        "labels": {
            "name": "labels.txt",
            "url": f"{base}/labels.txt",
            "sha256": hashlib.sha256(LABELS.encode()).hexdigest(),
        },
        "input": {"name": "data", "shape": [1, 3, 16, 16], "layout": "NCHW", "mean": MEAN, "scale": SCALE},
        "output": {"name": "scores", "classes": 1000, "kind": "logits"},
    }
    (models_dir / "tiny" / "1").mkdir(parents=True, exist_ok=True)
    (models_dir / "tiny" / "1" / "model.yml").write_text(yaml.safe_dump(desc))
    return "tiny"


def _leftovers(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []


@pytest.mark.parametrize(
    ("kind", "file_name"), [("tgz", "tiny.tgz"), ("zip", "tiny.zip"), ("plain", "tiny.onnx")]
)
def test_fetch_verifies_converts_caches_and_the_engine_uses_it(server, models_dir, tmp_path, kind, file_name):
    served, base = server
    model = _tiny_onnx()
    payload = model if kind == "plain" else _archive(kind, {"tiny/tiny.onnx": model, "tiny/README": b"hi"})
    name = _publish(models_dir, served, base, payload, file_name)
    cache = tmp_path / "cache"

    xml = fetch_model(load_spec(name, models_dir), cache)

    assert xml == cache / "tiny" / "ir" / "model.xml" and xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in xml.parent.iterdir()) == [
        "labels.txt",
        "model.bin",
        "model.xml",
        "source.json",
    ]
    assert not [p for p in cache.rglob(".*")], "temp files left in the cache"
    with open_engine(
        name, cache_dir=cache, allow_synthetic=False, inference_precision="f32", repository=models_dir
    ) as engine:
        assert engine.model_path == xml and not engine.synthetic
        assert engine.labels[0] == "thing 0" and engine.labels_source == xml.parent / "labels.txt"
        image = np.random.default_rng(5).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
        got = engine.infer(image)
    raw = ov.Core().compile_model(
        ov.Core().read_model(model, b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    x = ((image.astype(np.float32) - MEAN) / SCALE).transpose(0, 3, 1, 2).astype(np.float32)
    logits = raw(x)[raw.outputs[0]]
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_fetch_command_shows_where_it_cached_and_is_idempotent(server, models_dir, tmp_path):
    served, base = server
    name = _publish(models_dir, served, base, _archive("tgz", {"tiny.onnx": _tiny_onnx()}), "tiny.tgz")
    cache = tmp_path / "cache"
    runner = CliRunner()
    first = runner.invoke(app, ["models", "fetch", name, "--cache-dir", str(cache)])
    assert first.exit_code == 0, first.output
    assert "OpenVINO IR cached at" in first.output
    (served / "tiny.tgz").unlink()  # a second fetch must not need the network
    again = runner.invoke(app, ["models", "fetch", name, "--cache-dir", str(cache)])
    assert again.exit_code == 0, again.output


def _expect_clean_failure(models_dir: Path, name: str, cache: Path, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        fetch_model(load_spec(name, models_dir), cache, timeout_s=20)
    assert _leftovers(cache) == [], "a failed fetch left files in the cache"


def test_wrong_sha256_is_refused_and_nothing_is_cached(server, models_dir, tmp_path):
    served, base = server
    name = _publish(
        models_dir, served, base, _archive("tgz", {"tiny.onnx": _tiny_onnx()}), "t.tgz", sha256="0" * 64
    )
    _expect_clean_failure(models_dir, name, tmp_path / "cache", "sha256 mismatch for t.tgz: expected 0000")


def test_truncated_download_is_refused(server, models_dir, tmp_path):
    served, base = server
    payload = _archive("tgz", {"tiny.onnx": _tiny_onnx()})
    name = _publish(models_dir, served, base, payload, "t.tgz")
    (served / "t.tgz").write_bytes(payload[: len(payload) // 2])  # the server now has half the file
    _expect_clean_failure(models_dir, name, tmp_path / "cache", r"t.tgz is truncated: got \d+ of \d+ bytes")


def test_corrupt_archive_is_refused(server, models_dir, tmp_path):
    served, base = server
    name = _publish(models_dir, served, base, b"not a gzip stream at all" * 40, "t.tgz")
    _expect_clean_failure(models_dir, name, tmp_path / "cache", "archive t.tgz is corrupt or truncated")


def test_corrupt_model_file_is_refused(server, models_dir, tmp_path):
    served, base = server
    model = _tiny_onnx()
    name = _publish(
        models_dir, served, base, _archive("tgz", {"tiny.onnx": model[: len(model) // 3]}), "t.tgz"
    )
    _expect_clean_failure(
        models_dir, name, tmp_path / "cache", "cannot convert tiny.onnx: corrupt or not a model"
    )


def test_offline_fails_fast_with_a_clear_message(models_dir, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = _publish(models_dir, tmp_path, f"http://127.0.0.1:{port}", b"x", "t.onnx")
    _expect_clean_failure(
        models_dir, name, tmp_path / "cache", r"cannot connect to 127.0.0.1 .*are you offline\?"
    )


def test_http_error_and_missing_sha256_are_clear(server, models_dir, tmp_path):
    served, base = server
    name = _publish(models_dir, served, base, b"x", "t.onnx", url=f"{base}/missing.onnx")
    _expect_clean_failure(models_dir, name, tmp_path / "cache", "missing.onnx answered HTTP 404")
    _publish(models_dir, served, base, b"x", "t.onnx", sha256=None)
    _expect_clean_failure(
        models_dir, name, tmp_path / "cache", "no sha256 for t.onnx; refusing an unverified download"
    )


def test_failed_refetch_keeps_the_good_cached_model(server, models_dir, tmp_path):
    served, base = server
    payload = _archive("tgz", {"tiny.onnx": _tiny_onnx()})
    name = _publish(models_dir, served, base, payload, "t.tgz")
    cache = tmp_path / "cache"
    xml = fetch_model(load_spec(name, models_dir), cache)
    before = _leftovers(cache)
    (served / "t.tgz").write_bytes(payload[:100])
    with pytest.raises(ModelError, match="truncated"):
        fetch_model(load_spec(name, models_dir), cache, force=True)
    assert _leftovers(cache) == before and xml.is_file()


def test_unknown_model_name(models_dir, tmp_path):
    cache = tmp_path / "cache"
    result = CliRunner().invoke(app, ["models", "fetch", "no-such-model", "--cache-dir", str(cache)])
    assert result.exit_code == 1
    assert "unknown model 'no-such-model'" in result.output
    assert _leftovers(cache) == []
