"""The Redis container as shipped (its start-up script, redis.conf and probes) boots a real
redis-server 7 that enforces the password, persists with AOF everysec and refuses writes rather
than evicting stream entries when full."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from stream.adapters.redis.server import stop_redis_process
from tests.k8s.shipped_redis import PASSWORD, ShippedRedis
from tests.waiting import wait_until

Docs = dict[str, list[dict[str, Any]]]


@pytest.fixture
def shipped(rendered: Docs, tmp_path: Path) -> Iterator[tuple[ShippedRedis, subprocess.Popen[bytes]]]:
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        pytest.skip("redis-server/redis-cli not on PATH")
    server = ShippedRedis(rendered["dev"], tmp_path)
    proc = server.start()
    try:

        def ready() -> bool:
            assert proc.poll() is None, "redis-server exited during start-up"
            return server.probe("readinessProbe") == 0

        wait_until(ready, timeout_s=20, what="the readiness probe to pass", every_s=0.1)
        yield server, proc
    finally:
        stop_redis_process(proc, port=server.port, password=PASSWORD)


def test_shipped_redis_boots_and_passes_its_probes(
    shipped: tuple[ShippedRedis, subprocess.Popen[bytes]],
) -> None:
    server, proc = shipped
    assert server.probe("livenessProbe") == 0
    assert server.probe("readinessProbe", password="wrong") != 0
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    assert PASSWORD.encode() not in cmdline, "the password must not be visible in argv"


def test_shipped_redis_requires_the_password_and_persists_with_aof(
    shipped: tuple[ShippedRedis, subprocess.Popen[bytes]],
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
    shipped: tuple[ShippedRedis, subprocess.Popen[bytes]],
) -> None:
    server, _ = shipped
    with redis.Redis(port=server.port, password=PASSWORD) as client:
        client.xadd("fs:{p}:frames", {"seq": 0})
        client.config_set("maxmemory", "2mb")
        with pytest.raises(redis.ResponseError, match="used memory > .maxmemory."):
            for seq in range(1, 10_000):
                client.xadd("fs:{p}:frames", {"seq": seq, "pad": b"x" * 1024})
        assert client.xrange("fs:{p}:frames", count=1)[0][1][b"seq"] == b"0", "nothing was evicted"
