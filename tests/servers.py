"""Real servers the sink tests deliver to: a private Mosquitto (MQTT broker) and a private
PostgreSQL, each on a free loopback port with its own data dir, stopped (and its dir removed) by
`close`. Like `RedisServer`, each can be stopped, crashed and restarted on the same port and dir.

Run as root (as here), each server runs as its Debian system user (`mosquitto`, `postgres`):
PostgreSQL refuses root, and Mosquitto would switch users itself and lose access to its dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
import pytest

from stream.adapters.redis.server import find_free_port
from stream.watchdog import die_with_parent
from tests.waiting import wait_until

__all__ = ["MosquittoServer", "PostgresServer", "mosquitto_or_skip", "postgres_or_skip"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT_S = 30.0


def _as_user(name: str, directory: Path) -> dict[str, Any]:
    """Popen keyword arguments that run a server as system user `name` when we are root (and give
    it `directory`); nothing when we are not (the server then runs as us)."""
    if os.geteuid() != 0:
        return {}
    shutil.chown(directory, name, name)
    for path in directory.rglob("*"):
        shutil.chown(path, name, name)
    return {"user": name, "group": name, "extra_groups": []}


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class _Server:
    """A server process: started in its own session, signalled when pytest dies, stopped by pid."""

    name = "server"

    def __init__(self, prefix: str) -> None:
        self.port = find_free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.process: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _log_tail(self) -> str:
        raise NotImplementedError

    def _user(self) -> dict[str, Any]:
        return {}

    def start(self) -> Any:
        """Start on this server's port and data dir and wait until it accepts clients."""
        log = open(self.data_dir / "stderr.log", "ab")  # noqa: SIM115 (the child keeps it)
        with log:
            self.process = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
                **self._user(),
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self._log_tail()}")
            return self._ready()

        try:
            wait_until(
                ready, timeout_s=START_TIMEOUT_S, what=f"{self.name} on port {self.port}", every_s=0.05
            )
        except BaseException:
            self.kill()
            raise
        return self

    def _stop_signal(self) -> int:
        return signal.SIGTERM

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully (the server saves its state), SIGKILL if that takes over `timeout_s`."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.send_signal(self._stop_signal())
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server's main process: what a crash looks like."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its connections open but answers nothing (a hung broker)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def restart(self) -> Any:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Any:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class MosquittoServer(_Server):
    """Mosquitto with one user (`username`/`password`, no anonymous clients) and persistence on, so
    a persistent session's subscriptions and queued QoS 1 messages survive a restart."""

    name = "mosquitto"

    def __init__(
        self, *, username: str = "framestream", password: str = "mqtt-secret", tls: bool = False
    ) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise FileNotFoundError("mosquitto not found: apt-get install mosquitto")
        if tls and shutil.which("openssl") is None:
            raise FileNotFoundError("openssl not found: apt-get install openssl")
        super().__init__("framestream-mosquitto-")
        self.binary = binary
        self.username = username
        self.password = password
        self.tls = tls
        self.ca_file = self.data_dir / "ca.pem"
        passwd = self.data_dir / "passwd"
        subprocess.run(
            ["mosquitto_passwd", "-b", "-c", str(passwd), username, password], check=True, capture_output=True
        )
        tls_lines = self._make_certificates() if tls else ""
        (self.data_dir / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"{tls_lines}"
            "allow_anonymous false\n"
            f"password_file {passwd}\n"
            "persistence true\n"
            f"persistence_location {self.data_dir}/\n"
            f"log_dest file {self.data_dir}/mosquitto.log\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )

    def _make_certificates(self) -> str:
        """A test CA (`ca_file`) and a server certificate it signed for 127.0.0.1 and localhost;
        the listener's config lines."""
        d = self.data_dir
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for args in (
            ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ca"],
            ["req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "san.ext"],
        ):  # fmt: skip
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
        return f"certfile {d}/server.pem\nkeyfile {d}/server.key\n"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.username}@127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.data_dir / "mosquitto.conf")]

    def _user(self) -> dict[str, Any]:
        return _as_user("mosquitto", self.data_dir)

    def _ready(self) -> bool:
        return _listening(self.port)

    def _log_tail(self) -> str:
        logs = [self.data_dir / "mosquitto.log", self.data_dir / "stderr.log"]
        return " | ".join(p.read_text(errors="replace")[-400:] for p in logs if p.exists())


class PostgresServer(_Server):
    """PostgreSQL 15 (Debian's `postgresql` package) with a superuser `postgres` whose password is
    `password` over TCP (scram-sha-256), listening on 127.0.0.1 only, its unix socket in its data
    dir. `stop` is a fast shutdown (SIGINT); `crash` an immediate one (SIGQUIT: no checkpoint,
    crash recovery on the next start)."""

    name = "postgres"

    def __init__(self, *, password: str = "pg-secret") -> None:
        if not (PG_BIN / "initdb").exists():
            raise FileNotFoundError(f"{PG_BIN}/initdb not found: apt-get install postgresql")
        super().__init__("framestream-postgres-")
        self.user = "postgres"
        self.password = password
        self.data = self.data_dir / "data"
        pwfile = self.data_dir / "pwfile"
        pwfile.write_text(password + "\n")
        user = _as_user("postgres", self.data_dir)
        subprocess.run(
            [
                str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=UTF8", "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=self.data_dir,
            **user,
        )  # fmt: skip
        pwfile.unlink()

    @property
    def dsn(self) -> str:
        """The DSN a sink is given: no password (that is the sink's secret)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _command(self) -> list[str]:
        return [
            str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data_dir}",
            "-c", "fsync=off", "-c", "full_page_writes=off",
        ]  # fmt: skip

    def _user(self) -> dict[str, Any]:
        return _as_user("postgres", self.data_dir)

    def _stop_signal(self) -> int:
        return signal.SIGINT  # fast shutdown: SIGTERM would wait for every client to leave

    def _ready(self) -> bool:
        try:
            with self.connect(connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A synchronous autocommit connection for the test's own checks."""
        return psycopg.connect(self.dsn, password=self.password, autocommit=True, **kwargs)

    def crash(self) -> None:
        """Immediate shutdown: every backend exits at once, no checkpoint (a crash, without leaving
        orphaned backends behind as SIGKILL of the postmaster would)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            self.process.wait(30)
        self.process = None

    def _log_tail(self) -> str:
        log = self.data_dir / "stderr.log"
        return log.read_text(errors="replace")[-600:] if log.exists() else ""


@contextlib.contextmanager
def mosquitto_or_skip(**kwargs: Any) -> Iterator[MosquittoServer]:
    """A started `MosquittoServer`, or the test skips saying what to install."""
    try:
        server = MosquittoServer(**kwargs)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    with server:
        yield server


@contextlib.contextmanager
def postgres_or_skip(**kwargs: Any) -> Iterator[PostgresServer]:
    """A started `PostgresServer`, or the test skips saying what to install."""
    try:
        server = PostgresServer(**kwargs)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    with server:
        yield server
