"""The framestream Serve application as the fault suite runs it: the real config file
(``deployments/serve/serve_config.yaml``) with a unique application name, fixed replica counts and fault-
friendly settings, deployed on a local Ray; plus finding a replica's OS process to kill.

Replica processes are found from outside, by their process title (Ray names an actor's worker
``ray::ServeReplica:<app>:<deployment>``). The application name carries this process's pid, so a
scan never matches another Ray cluster's replicas on the same machine. (``ray.util.state`` would
need the Ray dashboard, which the suite does not start.)
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

from deployments.serve.config import deploy, load_config, override
from deployments.serve.config import start_local_ray as _start_local_ray
from deployments.serve.status import replica_counts
from stream.settings import Settings

__all__ = ["FaultApp", "process_pids"]


def start_local_ray() -> None:
    """The local Ray the fault and API suites deploy on: `framestream run`'s one node
    (`deployments.serve.config.start_local_ray`) with 4 CPUs."""
    _start_local_ray(num_cpus=4, ignore_reinit_error=True)


def process_pids(title: str) -> list[int]:
    """PIDs of live processes whose command line starts with `title` (e.g. a Ray actor's title)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if state != "Z" and (cmd == title or cmd.startswith(title + " ") or cmd.startswith(title + ".")):
            pids.append(int(entry))
    return sorted(pids)


class FaultApp:
    """One deployed application; `replicas` are fixed counts per stage deployment (no autoscaling,
    so a scenario knows how many replicas it kills among)."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        model: str,
        replicas: dict[str, int],
        *,
        ingress: dict[str, Any] | None = None,
        base: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        """`base` is the Serve config to start from (default: deployments/serve/serve_config.yaml);
        `name` the application's (default: ``faults<pid>``)."""
        self.name = name or f"faults{os.getpid()}"
        self.http_port = 0
        dumped = settings.model_dump(mode="json")
        dumped["redis"].pop("password", None)
        dumped.pop("api", None)  # tokens come from the environment, as with `framestream run`
        dumped["redis"]["url"] = redis_url
        self.replicas = dict(replicas)
        self._base = override(
            base if base is not None else load_config(),
            args={"model": model, "settings": dumped, "ingress": ingress or {}},
        )
        self._base["applications"][0]["name"] = self.name

    def config(self) -> dict[str, Any]:
        config = copy.deepcopy(self._base)
        config["http_options"] = {
            **config.get("http_options", {}),
            "host": "127.0.0.1",
            "port": self.http_port,
        }
        for entry in config["applications"][0]["deployments"]:
            if entry["name"] in self.replicas:
                entry.pop("autoscaling_config", None)
                entry["num_replicas"] = self.replicas[entry["name"]]
        return config

    def deploy(self, http_port: int, timeout_s: float = 240.0) -> None:
        self.http_port = http_port
        deploy(self.config(), timeout_s=timeout_s)
        self.wait_replicas(timeout_s=timeout_s)

    def scale(self, deployment: str, n: int, *, wait: bool = True, timeout_s: float = 120.0) -> None:
        """Set `deployment` to `n` replicas (Serve drains the ones it removes)."""
        self.replicas[deployment] = n
        deploy(self.config(), timeout_s=timeout_s)
        if wait:
            self.wait_replicas(timeout_s=timeout_s)

    def running(self) -> dict[str, int]:
        return replica_counts(self.name)

    def wait_replicas(self, *, timeout_s: float) -> dict[str, int]:
        """Until every fixed-size deployment runs exactly its replica count (and has that many
        processes); returns the counts."""
        deadline = time.monotonic() + timeout_s
        while True:
            counts = self.running()
            ok = all(counts.get(d) == n and len(self.pids(d)) == n for d, n in self.replicas.items())
            if ok:
                return counts
            if time.monotonic() > deadline:
                pids = {d: self.pids(d) for d in self.replicas}
                raise TimeoutError(f"replicas not settled after {timeout_s:.0f} s: {counts} {pids}")
            time.sleep(0.25)

    def pids(self, deployment: str) -> list[int]:
        """OS processes of `deployment`'s replicas right now."""
        return process_pids(f"ray::ServeReplica:{self.name}:{deployment}")
