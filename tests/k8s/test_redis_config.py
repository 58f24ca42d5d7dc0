"""The Redis container as shipped (its start-up script, redis.conf and probes) boots a real
redis-server 7 that enforces the password, persists with AOF everysec and refuses writes rather
than evicting stream entries when full."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.k8s.manifests import by_kind

Docs = dict[str, list[dict[str, Any]]]
PASSWORD = "k8s-test-password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Shipped:
    """The dev overlay's Redis container, re-rooted into a temp dir on a free loopback port."""

    def __init__(self, docs: list[dict[str, Any]], root: Path) -> None:
        (sts,) = by_kind(docs, "StatefulSet")
        (self.container,) = sts["spec"]["template"]["spec"]["containers"]
        conf = next(d for d in by_kind(docs, "ConfigMap") if "redis.conf" in d.get("data", {}))
        self.port = _free_port()
        self.root = root
        for sub in ("etc", "run", "data"):
            (root / sub).mkdir()
        text = conf["data"]["redis.conf"]
        for old, new in (
            ("port 6379", f"port {self.port}"),
            ("bind * -::*", "bind 127.0.0.1"),
            ("dir /data", f"dir {root / 'data'}"),
            ("/run/redis", str(root / "run")),
        ):
            assert old in text, old
            text = text.replace(old, new)
        (root / "etc" / "redis.conf").write_text(text)
        self.env = {e["name"]: e.get("value", PASSWORD) for e in self.container["env"]}

    def _local(self, script: str) -> str:
        return (
            script.replace("/run/redis", str(self.root / "run"))
            .replace("/etc/redis", str(self.root / "etc"))
            .replace("-p 6379", f"-p {self.port}")
        )

    def start(self) -> subprocess.Popen[bytes]:
        (script,) = self.container["args"]
        return subprocess.Popen(
            [*self.container["command"], self._local(script)],
            env={"PATH": "/usr/bin:/bin:/usr/local/bin", **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def probe(self, name: str, password: str = PASSWORD) -> int:
        cmd = self.container[name]["exec"]["command"]
        return subprocess.run(
            [*cmd[:-1], self._local(cmd[-1])],
            env={"PATH": "/usr/bin:/bin:/usr/local/bin", "REDIS_PASSWORD": password},
            capture_output=True,
            timeout=10,
        ).returncode


@pytest.fixture
def shipped(rendered: Docs, tmp_path: Path) -> Iterator[tuple[_Shipped, subprocess.Popen[bytes]]]:
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        pytest.skip("redis-server/redis-cli not on PATH")
    server = _Shipped(rendered["dev"], tmp_path)
    proc = server.start()
    try:
        deadline = time.monotonic() + 20
        while server.probe("readinessProbe") != 0:
            assert proc.poll() is None, "redis-server exited during start-up"
            assert time.monotonic() < deadline, "readiness probe never passed"
            time.sleep(0.1)
        yield server, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_shipped_redis_boots_and_passes_its_probes(shipped: tuple[_Shipped, subprocess.Popen[bytes]]) -> None:
    server, proc = shipped
    assert server.probe("livenessProbe") == 0
    assert server.probe("readinessProbe", password="wrong") != 0
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    assert PASSWORD.encode() not in cmdline, "the password must not be visible in argv"


def test_shipped_redis_requires_the_password_and_persists_with_aof(
    shipped: tuple[_Shipped, subprocess.Popen[bytes]],
) -> None:
    server, _ = shipped
    with redis.Redis(port=server.port) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with redis.Redis(port=server.port, password=PASSWORD, decode_responses=True) as client:
        config = client.config_get("*")
        assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
        assert config["maxmemory-policy"] == "noeviction"
        assert int(config["maxmemory"]) == 256 * 2**20  # dev overlay: 256mb
        client.xadd("fs:{p}:frames", {"x": "1"})
        assert (server.root / "data" / "appendonlydir").is_dir()


def test_full_redis_refuses_writes_instead_of_evicting(
    shipped: tuple[_Shipped, subprocess.Popen[bytes]],
) -> None:
    server, _ = shipped
    with redis.Redis(port=server.port, password=PASSWORD) as client:
        client.xadd("fs:{p}:frames", {"seq": 0})
        client.config_set("maxmemory", "2mb")
        with pytest.raises(redis.ResponseError, match="used memory > .maxmemory."):
            for seq in range(1, 10_000):
                client.xadd("fs:{p}:frames", {"seq": seq, "pad": b"x" * 1024})
        assert client.xrange("fs:{p}:frames", count=1)[0][1][b"seq"] == b"0", "nothing was evicted"
