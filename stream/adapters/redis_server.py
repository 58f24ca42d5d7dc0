"""A private `redis-server` process on a free loopback port in a temp dir.

Used by the embedded mode (``--redis auto``), by the tests (a session fixture) and by the fault
suite, which kills it with SIGKILL and restarts it on the same port and data dir.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis

from stream.errors import ConfigError

__all__ = ["RedisServer", "find_free_port"]

_INSTALL_HINT = (
    "redis-server not found on PATH; install it (apt-get install redis-server, or brew install "
    "redis) or pass --redis URL to use a server you run"
)


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        return args

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        # its own session: a Ctrl-C at the terminal must not kill Redis before the stages drain
        self.process = subprocess.Popen(
            self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
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
        finally:
            client.close()

    def _log_tail(self) -> str:
        log = self.data_dir / "redis.log"
        return log.read_text(errors="replace")[-500:] if log.exists() else ""

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL if it takes longer than `timeout_s`."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
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
