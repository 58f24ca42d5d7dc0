"""The Redis container of a rendered overlay (its start-up script, config files and probes), run
on loopback: re-rooted into a temp dir on a free port, so the tests boot what ships."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from stream.adapters.redis.server import find_free_port
from stream.watchdog import die_with_parent
from tests.k8s.manifests import by_kind

__all__ = ["PASSWORD", "ShippedRedis"]

PASSWORD = "k8s-test-password"
_PATH = "/usr/bin:/bin:/usr/local/bin"


class ShippedRedis:
    """One pod of the overlay's Redis StatefulSet, on 127.0.0.1:`port` (a free one by default;
    a cluster node needs `port` + 10000 free too) with its data under `root`.

    `announce` stands in for the pod's DNS name where the start-up script announces it
    (``$(hostname).framestream-redis.$POD_NAMESPACE.svc``): loopback has no per-pod DNS.
    """

    ANNOUNCED = "$(hostname).framestream-redis.$POD_NAMESPACE.svc"

    def __init__(
        self, docs: list[dict[str, Any]], root: Path, *, port: int | None = None, announce: str = "127.0.0.1"
    ) -> None:
        (sts,) = by_kind(docs, "StatefulSet")
        (self.container,) = sts["spec"]["template"]["spec"]["containers"]
        conf = next(d for d in by_kind(docs, "ConfigMap") if "redis.conf" in d.get("data", {}))
        self.port = port or find_free_port()
        self.root = root
        self.announce = announce
        for sub in ("etc", "run", "data"):
            (root / sub).mkdir(parents=True)
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
        for name, other in conf["data"].items():
            if name != "redis.conf":
                (root / "etc" / name).write_text(other)
        self.env = {e["name"]: e.get("value", PASSWORD) for e in self.container["env"] if "fieldRef" not in
                    e.get("valueFrom", {})}  # fmt: skip

    def _local(self, script: str) -> str:
        return (
            script.replace("/run/redis", str(self.root / "run"))
            .replace("/etc/redis", str(self.root / "etc"))
            .replace("-p 6379", f"-p {self.port}")
            .replace(self.ANNOUNCED, self.announce)
        )

    def start(self) -> subprocess.Popen[bytes]:
        (script,) = self.container["args"]
        return subprocess.Popen(  # the script execs redis-server: this is the server's process
            [*self.container["command"], self._local(script)],
            env={"PATH": _PATH, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )

    def probe(self, name: str, password: str = PASSWORD) -> int:
        cmd = self.container[name]["exec"]["command"]
        return subprocess.run(
            [*cmd[:-1], self._local(cmd[-1])],
            env={"PATH": _PATH, "REDIS_PASSWORD": password},
            capture_output=True,
            timeout=10,
        ).returncode
