"""A private `redis-server` process on a free loopback port in a temp dir, or a cluster of them.

Used by the embedded mode (``--redis auto``), by the tests (a session fixture) and by the fault
suite, which kills it with SIGKILL and restarts it on the same port and data dir.
`LocalCluster` starts a Redis Cluster of such servers (masters + replicas, ``redis-cli --cluster
create``) for the scale-out tests.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stream.errors import ConfigError
from stream.watchdog import die_with_parent

__all__ = [
    "LocalCluster",
    "RedisServer",
    "find_free_cluster_port",
    "find_free_port",
    "stop_redis_process",
]

_INSTALL_HINT = (
    "redis-server not found on PATH; install it (apt-get install redis-server, or brew install "
    "redis) or pass --redis URL to use a server you run"
)


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def find_free_cluster_port(taken: Collection[int] = ()) -> int:
    """A port that is free together with its cluster bus port (port + 10000), not in `taken`."""
    for _ in range(200):
        port = find_free_port()
        if port + 10_000 <= 65_535 and port not in taken and _port_free(port + 10_000):
            return port
        port = 20_000 + (port % 30_000)  # ephemeral ports are often above 55535: try lower
        if port not in taken and _port_free(port) and _port_free(port + 10_000):
            return port
    raise ConfigError("no free port pair (port, port + 10000) for a cluster node on 127.0.0.1")


def stop_redis_process(
    process: subprocess.Popen[bytes],
    *,
    host: str = "127.0.0.1",
    port: int,
    password: str | None = None,
    timeout_s: float = 5.0,
) -> None:
    """Stop a redis-server this program started, whatever state it is in, and never raise:
    ``SHUTDOWN NOSAVE NOW`` (no RDB dump, no waiting for lagging replicas, which a cluster node
    otherwise waits for; the AOF, when on, is still flushed), then SIGTERM, then SIGKILL, each
    given `timeout_s` to work."""
    if process.poll() is not None:
        return
    with (
        contextlib.suppress(redis.RedisError, OSError),
        redis.Redis(
            host=host,
            port=port,
            password=password,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),  # the server closing the connection is the answer
        ) as client,
    ):
        client.shutdown(nosave=True, now=True)
    for step in (None, process.terminate, process.kill):
        if step is not None:
            with contextlib.suppress(OSError):
                step()
        try:
            process.wait(timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue


class RedisServer:
    """Start, stop, kill and restart a private redis-server.

    `aof` turns on ``appendonly yes`` with ``appendfsync everysec``; without it the server keeps
    nothing across a restart (no RDB snapshots either), which the fault suite uses as its
    negative control.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        aof: bool = False,
        password: str | None = None,
        maxmemory_mb: int = 0,
        start_timeout_s: float = 10.0,
        cluster_node_timeout_ms: int | None = None,
        bind: str = "127.0.0.1",
        launcher: Sequence[str] = (),
    ) -> None:
        """`bind` is the address it listens on and clients use; `launcher` is prepended to its
        command line (``["ip", "netns", "exec", NS]`` runs it on another host of a test network).
        """
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(_INSTALL_HINT)
        self.binary = binary
        self.port = port or find_free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="framestream-redis-"))
        self.aof = aof
        self.password = password
        self.maxmemory_mb = maxmemory_mb
        self.start_timeout_s = start_timeout_s
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        """None: a plain server; a number: ``cluster-enabled yes`` with that node timeout."""
        self.bind = bind
        self.launcher = list(launcher)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.bind}:{self.port}/0"

    def _args(self) -> list[str]:
        args = [
            *self.launcher,
            self.binary,
            "--port", str(self.port),
            "--bind", self.bind,
            "--dir", str(self.data_dir),
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            "--appendonly", "yes" if self.aof else "no",
            "--appendfsync", "everysec",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.maxmemory_mb:
            args += ["--maxmemory", f"{self.maxmemory_mb}mb", "--maxmemory-policy", "noeviction"]
        if self.cluster_node_timeout_ms is not None:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.data_dir / "nodes.conf"),
                "--cluster-node-timeout", str(self.cluster_node_timeout_ms),
            ]  # fmt: skip
        return args

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        # its own session: a Ctrl-C at the terminal must not kill Redis before the stages drain;
        # and SIGTERM when this process dies, even by SIGKILL: no orphaned server holds the port
        self.process = subprocess.Popen(
            self._args(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        client = redis.Redis(host=self.bind, port=self.port, password=self.password, socket_timeout=1.0)
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while True:
                if self.process.poll() is not None:
                    log = self._log_tail()
                    raise ConfigError(f"redis-server exited with code {self.process.returncode}: {log}")
                try:
                    if client.ping():
                        return self
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise ConfigError(
                        f"redis-server did not answer on port {self.port} within "
                        f"{self.start_timeout_s} s: {self._log_tail()}"
                    )
                time.sleep(0.02)
        except BaseException:  # a stop signal mid-start: the caller never gets a server to stop
            self.kill()
            raise
        finally:
            client.close()

    def _log_tail(self) -> str:
        log = self.data_dir / "redis.log"
        return log.read_text(errors="replace")[-500:] if log.exists() else ""

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop gracefully, killing it if that fails (`stop_redis_process`); never raises."""
        if self.process is not None:
            stop_redis_process(
                self.process, host=self.bind, port=self.port, password=self.password, timeout_s=timeout_s
            )
        self.process = None

    def kill(self) -> None:
        """SIGKILL: what a crash looks like. Data not yet fsynced is lost."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> RedisServer:
        """Start again on the same port and data dir (AOF, if on, is replayed)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_CLI_HINT = "redis-cli not found on PATH; it comes with redis-server (apt-get install redis-tools)"


class LocalCluster:
    """A Redis Cluster on loopback: `masters` masters with `replicas` replicas each.

    Every node is a `RedisServer` (cluster-enabled, its own port, bus port + 10000, data dir under
    one temp dir); `start` joins them with ``redis-cli --cluster create`` and waits until every
    node reports ``cluster_state:ok`` with all 16384 slots served and every replica in sync.
    `close` stops every node and deletes the temp dir, also after a failed start.
    """

    def __init__(
        self,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1_000,
        start_timeout_s: float = 30.0,
    ) -> None:
        if masters < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 masters, got {masters}")
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        cli = shutil.which("redis-cli")
        if cli is None:
            raise ConfigError(_CLI_HINT)
        self.cli = cli
        self.masters, self.replicas = masters, replicas
        self.start_timeout_s = start_timeout_s
        self.root = Path(tempfile.mkdtemp(prefix="framestream-cluster-"))
        self.nodes: list[RedisServer] = []
        taken: set[int] = set()
        for _ in range(masters * (1 + replicas)):
            port = find_free_cluster_port(taken)
            taken.add(port)
            data_dir = self.root / f"node-{port}"
            data_dir.mkdir()
            node = RedisServer(port=port, data_dir=data_dir, cluster_node_timeout_ms=node_timeout_ms)
            self.nodes.append(node)

    @property
    def url(self) -> str:
        """A URL naming one node (the first still running): a cluster client finds the rest."""
        live = [n for n in self.nodes if n.process is not None]
        return (live or self.nodes)[0].url

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            create = [self.cli, "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.nodes],
                      "--cluster-replicas", str(self.replicas), "--cluster-yes"]  # fmt: skip
            done = subprocess.run(create, capture_output=True, text=True, timeout=self.start_timeout_s)
            if done.returncode != 0:
                raise ConfigError(f"redis-cli --cluster create failed: {(done.stdout + done.stderr)[-800:]}")
            self.wait_healthy(self.start_timeout_s)
        except BaseException:
            self.close()
            raise
        return self

    def _info(self, node: RedisServer, section: str) -> dict[str, Any]:
        """INFO `section` of `node` (``CLUSTER INFO`` for "cluster") as redis-py parses it: a
        replication section's ``slaveN`` rows are dicts."""
        with redis.Redis(port=node.port, socket_timeout=1.0, decode_responses=True) as client:
            raw = client.cluster("INFO") if section == "cluster" else client.info(section)
        return dict(raw)

    def healthy(self) -> bool:
        """Every running node says ``cluster_state:ok`` with all slots served and `masters` masters
        holding slots, and every running replica's link to its master is up, seen from both ends."""
        live = [n for n in self.nodes if n.process is not None]
        online: dict[int, set[int]] = {}  # master port -> the replica ports it sees online
        links: list[tuple[int, int]] = []  # (replica port, its master's port)
        try:
            for node in live:
                info = self._info(node, "cluster")
                if str(info.get("cluster_state")) != "ok" or str(info.get("cluster_slots_ok")) != "16384":
                    return False
                if int(info.get("cluster_size", 0)) != self.masters:
                    return False
                repl = self._info(node, "replication")
                if repl.get("role") == "slave":
                    if repl.get("master_link_status") != "up":
                        return False
                    links.append((node.port, int(repl["master_port"])))
                # the master's side of the link: a replica whose link is up may still be waiting
                # for the master to see its first sync through (state send_bulk, not online), or
                # not be listed by the master at all yet
                for key, row in repl.items():
                    if key.startswith("slave") and isinstance(row, dict):
                        if row.get("state") != "online":
                            return False
                        online.setdefault(node.port, set()).add(int(row["port"]))
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return False
        return all(replica in online.get(master, set()) for replica, master in links)

    def wait_healthy(self, timeout_s: float) -> None:
        """Wait until `healthy` (after a start, a kill or a failover); ConfigError on timeout."""
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if time.monotonic() > deadline:
                raise ConfigError(f"Redis Cluster on {self.root} not healthy after {timeout_s} s")
            time.sleep(0.05)

    def master_for_slot(self, slot: int) -> RedisServer:
        """The running node that serves `slot` now (asked of any running node)."""
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                with redis.Redis(port=node.port, socket_timeout=1.0) as client:
                    for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                        if int(start) <= slot <= int(end):
                            port = int(master[1])
                            return next(n for n in self.nodes if n.port == port)
            except (redis.ConnectionError, redis.TimeoutError):
                continue
        raise ConfigError(f"no running node knows who serves slot {slot}")

    def master_nodes(self) -> list[RedisServer]:
        """The running nodes that serve slots now."""
        return sorted({self.master_for_slot(slot) for slot in self._slot_starts()}, key=lambda n: n.port)

    def _slot_starts(self) -> list[int]:
        for node in self.nodes:
            if node.process is not None:
                with redis.Redis(port=node.port, socket_timeout=1.0) as client:
                    return [int(row[0]) for row in client.execute_command("CLUSTER SLOTS")]
        return []

    def migrate_slot(self, slot: int, target: RedisServer, *, batch: int = 10) -> None:
        """Move `slot` with its keys to the master `target` while clients keep using it, the way
        ``redis-cli --cluster reshard`` moves each slot: SETSLOT IMPORTING / MIGRATING, MIGRATE the
        keys a few at a time, then SETSLOT NODE on every master (target first)."""
        source = self.master_for_slot(slot)
        if source.port == target.port:
            return
        with redis.Redis(port=source.port) as src, redis.Redis(port=target.port) as dst:
            src_id, dst_id = src.cluster("MYID"), dst.cluster("MYID")
            dst.cluster("SETSLOT", slot, "IMPORTING", src_id)
            src.cluster("SETSLOT", slot, "MIGRATING", dst_id)
            while keys := src.cluster("GETKEYSINSLOT", slot, batch):
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 10_000, "KEYS", *keys)
            dst.cluster("SETSLOT", slot, "NODE", dst_id)
            src.cluster("SETSLOT", slot, "NODE", dst_id)
        for node in self.master_nodes():
            if node.port not in (source.port, target.port):
                with redis.Redis(port=node.port) as other:
                    other.cluster("SETSLOT", slot, "NODE", dst_id)

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
