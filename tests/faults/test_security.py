"""Security in the fault suite's spirit: nothing decoded from Redis or HTTP can run code; Redis
over TLS (``rediss://``) works through `connect`; a wrong Redis password fails fast and clearly,
also for ``framestream stage`` and ``framestream run``; Ray's token authentication is never
switched off; the HTTP ingress rate-limits each client (429). Redis with a password and an ACL
user end to end is in test_drain.py (scenario 7b)."""

from __future__ import annotations

import ast
import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stream.adapters.redis.client import connect
from stream.adapters.redis.server import RedisServer, find_free_port
from stream.errors import TransportError
from stream.settings import load_settings
from tests.faults.conftest import Stack

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
MODEL = "mobilenet-v1-0.25-128"
CODE_DIRS = ("stream", "deployments", "loadtest")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
UNSAFE_ATTRS = {("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("yaml", "load_all")}


def _python_files() -> Iterator[Path]:
    for folder in CODE_DIRS:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _unsafe_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [
                f"{where} import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where} from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in UNSAFE_BUILTINS:
                found.append(f"{where} {func.id}(...)")
            elif (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and (func.value.id, func.attr) in UNSAFE_ATTRS
            ):
                found.append(f"{where} {func.value.id}.{func.attr}(...)")
            if any(k.arg == "allow_pickle" and not _is_false(k.value) for k in node.keywords):
                found.append(f"{where} allow_pickle=True")
    return found


def _is_false(value: ast.expr) -> bool:
    return isinstance(value, ast.Constant) and value.value is False


def test_nothing_decoded_from_redis_or_http_can_run_code() -> None:
    """No pickle (or its kin), no eval/exec, no unsafe yaml.load, no numpy allow_pickle anywhere in
    the code that reads messages, HTTP bodies, replay files or configs."""
    files = list(_python_files())
    assert len(files) > 30
    found = [use for path in files for use in _unsafe_uses(path)]
    assert not found, "\n".join(found)


def test_the_scanner_finds_what_it_forbids(tmp_path: Path) -> None:
    """Negative control: the scan above must flag each forbidden construct."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nfrom marshal import loads\nimport yaml\nimport numpy as np\n"
        "eval('1')\nexec('x=1')\nyaml.load('a: 1')\nnp.load('f.npy', allow_pickle=True)\n"
        "yaml.safe_load('a: 1')\nclient.eval('return 1', 0)\n"
    )
    found = _unsafe_uses(bad)
    assert len(found) == 6, found


def test_ray_token_authentication_is_never_switched_off() -> None:
    """Ray >= 2.52 turns token auth on by default; nothing we ship may turn it off."""
    offenders = []
    for folder in (*CODE_DIRS, "k8s"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".yaml", ".yml", ".json", ".sh", ""}:
                text = path.read_text(errors="replace")
                if "RAY_AUTH_MODE" in text and "disabled" in text:
                    offenders.append(str(path.relative_to(ROOT)))
    for name in ("Makefile", "Dockerfile"):
        for path in ROOT.rglob(name):
            if ".venv" not in path.parts and "RAY_AUTH_MODE" in path.read_text(errors="replace"):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders


# -- Redis over TLS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A redis-server speaking only TLS, with a self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a certificate for the TLS redis-server")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = find_free_port()
    args = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--dir", str(folder), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    args += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.skip(f"this redis-server cannot serve TLS: {proc.stdout.read().decode()[-300:]}")
            try:
                with __import__("socket").create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        yield port, cert
    finally:
        proc.kill()
        proc.wait()


async def test_rediss_url_connects_over_tls(tls_redis: tuple[int, Path]) -> None:
    port, cert = tls_redis
    client = await connect(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}")
    try:
        assert await client.ping()
        assert client.connection_pool.connection_class.__name__ == "SSLConnection"
        await client.xadd("fs:{p}:tls", {"d": b"x"})
        assert await client.xlen("fs:{p}:tls") == 1
    finally:
        await client.aclose()


async def test_plain_redis_url_against_a_tls_server_fails_clearly(tls_redis: tuple[int, Path]) -> None:
    port, _ = tls_redis
    started = time.monotonic()
    with pytest.raises(TransportError, match="Redis at redis://127.0.0.1"):
        await connect(f"redis://127.0.0.1:{port}/0", timeout_s=2.0)
    assert time.monotonic() - started < 30


def test_settings_take_a_rediss_url_and_credentials_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("FRAMESTREAM_REDIS__URL", "rediss://redis.example:6380/0")
    monkeypatch.setenv("FRAMESTREAM_REDIS__USERNAME", "framestream")
    monkeypatch.setenv("FRAMESTREAM_REDIS__PASSWORD", "s3cret")
    redis = load_settings().redis
    assert (redis.url, redis.username, redis.password_value()) == (
        "rediss://redis.example:6380/0",
        "framestream",
        "s3cret",
    )


# -- wrong password at start ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    with RedisServer(password="right-password") as server:
        yield server


@pytest.mark.parametrize("url_auth", [":wrong-password@", ""])
def test_framestream_stage_with_a_wrong_redis_password_exits_at_once_with_a_clear_error(
    locked_redis: RedisServer, url_auth: str
) -> None:
    url = f"redis://{url_auth}127.0.0.1:{locked_redis.port}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMESTREAM_REDIS__")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "stream.cli", "stage", "postprocess", "--redis", url, "--model", MODEL],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "refused the credentials" in proc.stderr and "FRAMESTREAM_REDIS__PASSWORD" in proc.stderr
    assert "wrong-password" not in proc.stderr, "the password must not be echoed"
    assert time.monotonic() - started < 120


def test_framestream_run_processes_with_a_wrong_redis_password_exits_with_a_clear_error(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    url = f"redis://:wrong-password@127.0.0.1:{locked_redis.port}/0"
    proc = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run", "--runner", "processes", "--redis", url,
         "--model", MODEL, "--source", str(tmp_path), "--timeout", "60"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "FRAMESTREAM_MODELS__CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert "refused the credentials" in out and "wrong-password" not in out, out[-2000:]


# -- the HTTP ingress caps each client's request rate ----------------------------------------------


@pytest.mark.ray
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_ingress_answers_429_with_retry_after_once_a_client_exceeds_its_rate(stack: Stack) -> None:
    """The fault suite's application allows 2 requests/s per client with bursts of 5."""
    url = f"http://127.0.0.1:{stack.app.http_port}/v1/sources"
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.get(url)
        if first.status_code != 200:  # e.g. a pooled Redis connection that an earlier scenario broke
            await asyncio.sleep(0.5)
            first = await http.get(url)
        assert first.status_code == 200, first.text
        # no sleeping for the bucket to refill: refilling is tested with a fake clock in test_policy
        started = time.monotonic()
        replies = [await http.get(url) for _ in range(12)]
        elapsed_s = time.monotonic() - started
        codes = [r.status_code for r in replies]
        assert codes[0] == 200 and 429 in codes, codes
        assert codes.count(200) <= 5 + 2.0 * elapsed_s, (codes, elapsed_s)  # burst + rate x time
        limited = replies[codes.index(429)]
        assert "rate limit" in limited.json()["error"]
        assert limited.headers["retry-after"] == "1", limited.headers  # a wait of <= 1/rate = 0.5 s
