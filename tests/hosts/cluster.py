"""A multi-host Ray cluster on one machine, shaped like the prod overlay's RayService.

Hosts are network namespaces (`tests.hosts.netns`): a Ray head, the worker hosts of each
worker group, and Redis on a host of its own. Every Ray node is started with ``ray start`` and the
``rayStartParams``, group ``labels`` and ``resources`` of its group in the rendered
``k8s/overlays/prod`` RayService, with the ``RAY_*`` variables its container sets; CPU counts
(the pod's CPU limit, or ``num-cpus``) and the Serve deployments' ``num_cpus`` are multiplied by
one `cpu_scale`, so what fits in a prod pool fits the same way here. The Serve config deployed is
that overlay's ``serveConfigV2``, scaled the same way (the fault suite then fixes replica counts
and the model, `ClusterApp`).

Token authentication stays on, given to every node as Ray documents for clusters it does not
start itself (and as KubeRay's ``authOptions: {mode: token}`` does): ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN`` in the environment of every ``ray start`` and of the driver. Each host has its
own ``--temp-dir`` (the namespaces share one filesystem).

When the RayService has ``gcsFaultToleranceOptions``, the head keeps the GCS tables in the
cluster's Redis as Ray documents for ``ray start`` and as KubeRay sets it up: ``RAY_REDIS_ADDRESS``
and ``--redis-password`` on the head, one ``RAY_external_storage_namespace`` for the cluster, and a
longer ``RAY_gcs_rpc_server_reconnect_timeout_s`` on the workers, so a head that dies and comes
back finds the cluster as it was.

The test process is outside the cluster: it reaches Redis over the bridge, and steers Serve through
`tests.hosts.driver`, a Ray driver it runs on the head host.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stream.adapters.redis.server import RedisServer
from tests.faults.rayapp import FaultApp
from tests.hosts.driver import MARK
from tests.hosts.netns import Host, Network

__all__ = [
    "Cluster",
    "ClusterApp",
    "Group",
    "gcs_fault_tolerant",
    "groups",
    "scaled_serve_config",
    "shared_folder",
    "start_args",
]

ROOT = Path(__file__).resolve().parents[2]


def shared_folder(name: str, root: Path = ROOT) -> Path:
    """A folder `name` that stands for storage every host of the cluster can read (the hosts share
    this machine's disk): the checkout's ``out/cluster``, or, with a checkout in the temp dir (a
    clone under /tmp), a folder in the user's cache. An attached run refuses any path in the
    temp dir, which is only ever the head's own (`deployments.local.runner.check_attached`)."""
    temp = Path(tempfile.gettempdir()).resolve()
    for base in (root / "out" / "cluster", Path.home() / ".cache" / "framestream" / "cluster"):
        resolved = base.resolve()
        if resolved != temp and temp not in resolved.parents:
            return base / name
    raise RuntimeError(f"both the checkout ({root}) and the home folder are in the temp dir ({temp})")


GCS_PORT = 6379
REDIS_PORT = 6379
OBJECT_STORE_BYTES = 100 * 1024 * 1024
"""Per node: the pipeline passes frames through Redis, not the object store; /dev/shm is shared."""
KEEP_ENV = "FRAMESTREAM_CLUSTER_KEEP"
"""Set it to keep the hosts' Ray temp dirs (logs) and Redis data after the run, to debug a failure."""
GCS_RECONNECT_TIMEOUT_S = 600
"""Workers wait this long for a lost GCS to come back (KubeRay's value with GCS fault tolerance)."""
SKIPPED_PARAMS = {"dashboard-host"}
"""rayStartParams that mean nothing without Kubernetes (no dashboard runs here)."""


@dataclass(frozen=True)
class Group:
    """One node group of the RayService: how its nodes are started."""

    name: str
    replicas: int
    params: dict[str, str]
    labels: dict[str, str]
    resources: dict[str, float]
    num_cpus: float
    env: dict[str, str]
    """``RAY_*`` variables the group's container sets to a literal value (Ray's own knobs)."""


def _cpu_quantity(value: str | int | float) -> float:
    text = str(value)
    return float(text[:-1]) / 1000.0 if text.endswith("m") else float(text)


def _group(name: str, spec: dict[str, Any], cpu_scale: float) -> Group:
    params = {str(k): str(v) for k, v in (spec.get("rayStartParams") or {}).items()}
    resources = {k: float(v) for k, v in (spec.get("resources") or {}).items()}
    raw = params.pop("resources", None)
    if raw:  # a JSON string inside a string, as KubeRay passes it on: '"{\"inference\": 1000}"'
        resources.update(json.loads(json.loads(raw)))
    labels = dict(spec.get("labels") or {})
    if "labels" in params:
        labels.update(dict(kv.split("=", 1) for kv in params.pop("labels").split(",") if kv))
    if "num-cpus" in params:
        cpus = float(params.pop("num-cpus"))
    else:
        limits = spec["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
        cpus = _cpu_quantity(limits.get("cpu", 1))
    container = spec["template"]["spec"]["containers"][0]
    env = {
        e["name"]: str(e["value"])
        for e in container.get("env") or []
        if e["name"].startswith("RAY_") and "value" in e
    }
    return Group(name, int(spec.get("replicas", 1)), params, labels, resources, cpus * cpu_scale, env)


def groups(rayservice: dict[str, Any], cpu_scale: float) -> tuple[Group, list[Group]]:
    """(head group, worker groups) of a rendered RayService, CPU counts times `cpu_scale`."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    head = _group("head", cluster["headGroupSpec"], cpu_scale)
    workers = [_group(g["groupName"], g, cpu_scale) for g in cluster["workerGroupSpecs"]]
    return head, workers


def start_args(group: Group) -> list[str]:
    """``ray start`` options of `group` (without --head/--address/--node-ip-address)."""
    args = []
    for key, value in group.params.items():
        if key not in SKIPPED_PARAMS:
            args += [f"--{key}", value]
    args += ["--num-cpus", f"{group.num_cpus:g}"]
    if group.resources:
        args += ["--resources", json.dumps(group.resources)]
    if group.labels:
        args += ["--labels", ",".join(f"{k}={v}" for k, v in group.labels.items())]
    return args


def gcs_fault_tolerant(rayservice: dict[str, Any]) -> bool:
    """Whether the RayService asks for GCS fault tolerance (``gcsFaultToleranceOptions``)."""
    return bool(rayservice["spec"]["rayClusterConfig"].get("gcsFaultToleranceOptions"))


def scaled_serve_config(rayservice: dict[str, Any], cpu_scale: float) -> dict[str, Any]:
    """The RayService's serveConfigV2 with every deployment's ``num_cpus`` times `cpu_scale`."""
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    for app in config["applications"]:
        for deployment in app.get("deployments", []):
            options = deployment.get("ray_actor_options") or {}
            if "num_cpus" in options:
                options["num_cpus"] = round(float(options["num_cpus"]) * cpu_scale, 4)
    return config


@dataclass
class Node:
    host: Host
    group: Group
    temp_dir: Path


@dataclass
class Cluster:
    """Start with `start`, always `close` (kills every process and namespace it made)."""

    head_group: Group
    worker_groups: dict[str, Group]
    counts: dict[str, int]
    """Hosts per worker group."""
    gcs_fault_tolerance: bool = False
    network: Network = field(default_factory=Network)
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    nodes: dict[str, Node] = field(default_factory=dict)
    redis: RedisServer | None = None
    _driver: subprocess.Popen[str] | None = None
    _driver_lock: threading.Lock = field(default_factory=threading.Lock)
    _dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fsc-", dir="/tmp")))

    @property
    def head(self) -> Node:
        return self.nodes["head"]

    @property
    def gcs_address(self) -> str:
        return f"{self.head.host.address}:{GCS_PORT}"

    def env(self) -> dict[str, str]:
        """Environment of every Ray process here: token auth on, this cluster's token."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0"}

    def start(self, *, timeout_s: float = 180.0) -> Cluster:
        try:
            self.network.open()
            self._add_node("head", self.head_group)
            for name, group in self.worker_groups.items():
                for i in range(self.counts.get(name, 0)):
                    self._add_node(f"{name}{i}", group)
            redis_host = self.network.add_host("redis")
            (self._dir / "redis").mkdir(parents=True, exist_ok=True)
            self.redis = RedisServer(
                port=REDIS_PORT,
                bind=redis_host.address,
                aof=True,
                password=secrets.token_hex(16),  # as in prod; it also lifts protected mode
                data_dir=self._dir / "redis",
                launcher=redis_host.command([]),
                start_timeout_s=30,
            )
            self.redis.start()
            self.start_node("head")
            for name in self.nodes:
                if name != "head":
                    self.start_node(name)
            self._start_driver(timeout_s)
            self.wait_nodes(set(self.nodes), timeout_s=timeout_s)
        except BaseException:
            self.close()
            raise
        return self

    def _add_node(self, name: str, group: Group) -> None:
        host = self.network.add_host(name)
        self.nodes[name] = Node(host, group, self._dir / name)

    def start_node(self, name: str, *, timeout_s: float = 120.0) -> None:
        """``ray start`` on host `name` (head first); returns once the node runs."""
        node = self.nodes[name]
        ray = str(Path(sys.executable).with_name("ray"))
        where = (
            ["--head", "--port", str(GCS_PORT), "--include-dashboard", "false"]
            if name == "head"
            else ["--address", self.gcs_address]
        )
        argv = [
            ray, "start", *where,
            "--node-ip-address", node.host.address,
            "--temp-dir", str(node.temp_dir),
            "--object-store-memory", str(OBJECT_STORE_BYTES),
            "--disable-usage-stats",
            *start_args(node.group),
        ]  # fmt: skip
        env = {**self.env(), **node.group.env}
        if self.gcs_fault_tolerance and name == "head":
            assert self.redis is not None and self.redis.password
            env["RAY_REDIS_ADDRESS"] = f"{self.redis.bind}:{self.redis.port}"
            env["RAY_external_storage_namespace"] = self.network.tag
            argv += ["--redis-username", "default", "--redis-password", self.redis.password]
        elif self.gcs_fault_tolerance:
            env["RAY_gcs_rpc_server_reconnect_timeout_s"] = str(GCS_RECONNECT_TIMEOUT_S)
        done = node.host.run(argv, env=env, cwd=ROOT, timeout_s=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"ray start on {name} failed ({done.returncode}): {done.stderr[-2000:]}")

    def restart_head(self, *, timeout_s: float = 180.0) -> None:
        """``ray start --head`` again after a head loss (and the driver with it); returns once
        every host's node is alive again."""
        self.head.host.kill_all()
        if self._driver is not None:
            with contextlib.suppress(Exception):
                self._driver.kill()
                self._driver.wait(5)
        # A new head pod starts with an empty /tmp. (With the old one, `ray start --head` reads the
        # last cluster address there, finds the workers' processes naming it on this machine,
        # and refuses to start as if a GCS still ran here.)
        old = self.head.temp_dir
        self.head.temp_dir = old.with_name(f"{old.name}-{time.monotonic_ns() % 10**6}")
        self.start_node("head", timeout_s=timeout_s)
        self._start_driver(timeout_s)
        self.wait_nodes(set(self.nodes), timeout_s=timeout_s)

    def _start_driver(self, timeout_s: float) -> None:
        argv = [sys.executable, "-m", "tests.hosts.driver", self.gcs_address]
        self._driver = self.head.host.popen(
            argv,
            env=self.env(),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._read(timeout_s)

    def _read(self, timeout_s: float) -> dict[str, Any]:
        assert self._driver is not None and self._driver.stdout is not None
        result: list[str] = []

        def read() -> None:
            assert self._driver is not None and self._driver.stdout is not None
            for line in self._driver.stdout:
                if line.startswith(MARK):
                    result.append(line[len(MARK) :])
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not result:
            raise TimeoutError(f"the cluster driver did not answer within {timeout_s:.0f} s")
        return json.loads(result[0])

    def call(self, request: dict[str, Any], *, timeout_s: float = 60.0) -> dict[str, Any]:
        """One command to the driver on the head (see `tests.hosts.driver`)."""
        with self._driver_lock:
            assert self._driver is not None and self._driver.stdin is not None
            self._driver.stdin.write(json.dumps(request) + "\n")
            self._driver.stdin.flush()
            reply = self._read(timeout_s)
        if not reply.get("ok"):
            raise RuntimeError(f"driver {request.get('op')}: {reply.get('error')}")
        return reply

    def ray_nodes(self) -> list[dict[str, Any]]:
        return list(self.call({"op": "nodes"})["nodes"])

    def wait_nodes(self, names: set[str], *, timeout_s: float, alive: bool = True) -> None:
        """Until Ray sees the nodes of hosts `names` alive (or dead, with ``alive=False``)."""
        want = {self.nodes[n].host.address for n in names}
        deadline = time.monotonic() + timeout_s
        while True:
            seen = {n["ip"] for n in self.ray_nodes() if n["alive"]}
            if (want <= seen) if alive else not (want & seen):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nodes {sorted(names)} not {'alive' if alive else 'dead'}: alive {sorted(seen)}"
                )
            time.sleep(0.5)

    def hosts_of(self, pids: list[int]) -> list[str]:
        """Name of the host each process in `pids` runs on (its network namespace), sorted."""
        by_inode = {}
        for name, node in self.nodes.items():
            with contextlib.suppress(OSError):
                by_inode[os.stat(f"/var/run/netns/{node.host.netns}").st_ino] = name
        out = []
        for pid in pids:
            try:
                out.append(by_inode.get(os.stat(f"/proc/{pid}/ns/net").st_ino, "?"))
            except OSError:
                out.append("?")
        return sorted(out)

    def kill_host(self, name: str) -> int:
        """SIGKILL every process on host `name`; returns how many."""
        return self.nodes[name].host.kill_all()

    def node_alive(self, name: str) -> bool:
        address = self.nodes[name].host.address
        return any(n["alive"] and n["ip"] == address for n in self.ray_nodes())

    def revive(self, name: str, *, timeout_s: float = 120.0) -> bool:
        """Make host `name` a live node again after a fault: plug it back in, and if Ray gave its
        node up (or it was killed), kill what is left there and ``ray start`` it anew. Returns
        whether it had to be restarted."""
        host = self.nodes[name].host
        host.link(True)
        assert self.redis is not None
        with contextlib.suppress(subprocess.CalledProcessError):
            host.blackhole(self.redis.bind, False)
        if self.node_alive(name) and host.pids():
            return False
        with contextlib.suppress(TimeoutError):  # a SIGKILLed node: let Ray notice first
            self.wait_nodes({name}, timeout_s=60, alive=False)
        host.kill_all()
        self.start_node(name, timeout_s=timeout_s)
        self.wait_nodes({name}, timeout_s=timeout_s)
        return True

    def close(self) -> None:
        """Stop everything this cluster started (idempotent)."""
        if self._driver is not None:
            with contextlib.suppress(Exception):
                self._driver.kill()
                self._driver.wait(5)
            self._driver = None
        self.network.close()
        if self.redis is not None:
            self.redis.process = None  # its namespace is gone, and the process with it
        if os.environ.get(KEEP_ENV):
            print(f"cluster logs kept in {self._dir} (${KEEP_ENV} is set)", file=sys.stderr)
        else:
            shutil.rmtree(self._dir, ignore_errors=True)


class ClusterApp(FaultApp):
    """`FaultApp` deployed on a `Cluster` through its driver instead of an in-process Ray."""

    def __init__(self, cluster: Cluster, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cluster = cluster
        self.autoscaling: dict[str, dict[str, Any]] = {}
        """Deployments that autoscale instead of a fixed count: entries merged into the config's
        own ``autoscaling_config`` (its policy stays). Not in `replicas` meanwhile."""

    ROUTE_PREFIX = "/faults"
    """Not ``/``: a `framestream run --address` on the same cluster deploys its own app there."""

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["applications"][0]["route_prefix"] = self.ROUTE_PREFIX
        for entry in config["applications"][0]["deployments"]:
            if entry["name"] in self.autoscaling:
                entry.pop("num_replicas", None)
                entry["autoscaling_config"] = {
                    **entry.get("autoscaling_config", {}),
                    **self.autoscaling[entry["name"]],
                }
        return config

    def autoscale(self, deployment: str, options: dict[str, Any], *, timeout_s: float = 120.0) -> None:
        """Let `deployment` autoscale with `options` on top of its config's autoscaling_config."""
        self.replicas.pop(deployment, None)
        self.autoscaling[deployment] = dict(options)
        self.cluster.call(
            {"op": "deploy", "config": self.config(), "timeout_s": timeout_s}, timeout_s=timeout_s + 30
        )

    def fix(self, deployment: str, n: int, *, timeout_s: float = 120.0) -> None:
        """Back to a fixed count of `n` replicas (after `autoscale`)."""
        self.autoscaling.pop(deployment, None)
        self.scale(deployment, n, timeout_s=timeout_s)

    def host_address(self, host: str) -> str:
        """The IP address of host `host` (the node IP Ray reports for it)."""
        return self.cluster.nodes[host].host.address

    def deploy(self, http_port: int, timeout_s: float = 240.0) -> None:
        self.http_port = http_port
        self.cluster.call(
            {"op": "deploy", "config": self.config(), "timeout_s": timeout_s}, timeout_s=timeout_s + 30
        )
        self.wait_replicas(timeout_s=timeout_s)

    def scale(self, deployment: str, n: int, *, wait: bool = True, timeout_s: float = 120.0) -> None:
        self.replicas[deployment] = n
        self.cluster.call(
            {"op": "deploy", "config": self.config(), "timeout_s": timeout_s}, timeout_s=timeout_s + 30
        )
        if wait:
            self.wait_replicas(timeout_s=timeout_s)

    def running(self) -> dict[str, int]:
        return dict(self.cluster.call({"op": "counts", "app": self.name})["counts"])

    def placement(self) -> dict[str, list[str]]:
        """Host name of each running replica, per deployment."""
        out: dict[str, list[str]] = {}
        for deployment in ("Ingest", "Preprocess", "Infer", "Postprocess", "Sinks", "Classifier", "Ingress"):
            out[deployment] = self.cluster.hosts_of(self.pids(deployment))
        return out

    def placement_text(self) -> str:
        """`placement` in one line: ``Ingest@cpu0 Infer@inference0,inference1 ...``."""
        return " ".join(f"{d}@{','.join(hosts)}" for d, hosts in self.placement().items())
