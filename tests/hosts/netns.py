"""Hosts on one machine: Linux network namespaces on a private bridge (iproute2).

Each `Host` is a network namespace with one veth into the bridge and one address on the benchmark
subnet 198.18.77.0/24 (RFC 2544, never routed on the Internet). The namespaces get no default
route and the bridge no uplink, so nothing started in a host can reach any address outside that
subnet. The bridge itself holds 198.18.77.1 in this (the root) namespace, so the test process
reaches the hosts as a client on the same link.

`Network.close` removes every namespace, veth and the bridge and SIGKILLs every process still in a
namespace; it is idempotent and also runs from ``atexit`` and on SIGTERM/SIGHUP, so a failed or
interrupted run leaves nothing behind (``ip netns list`` is empty of ``fsc*`` names). One network
at a time per machine: a lock file keeps a second run from stacking another bridge on the subnet.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SUBNET", "Host", "Network", "NetnsUnavailable", "netns_unavailable_reason"]

SUBNET = ipaddress.ip_network("198.18.77.0/24")
PREFIX = "fsc"
LOCK_PATH = Path("/tmp/framestream-cluster.lock")


class NetnsUnavailable(RuntimeError):
    """This machine cannot build namespaces here (not root, no iproute2, no permission)."""


def _ip(*args: str, check: bool = True, timeout_s: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=timeout_s)


def netns_unavailable_reason() -> str | None:
    """Why network namespaces cannot be built here, or None when they can (tries one for real)."""
    if os.name != "posix" or not Path("/proc/self/ns/net").exists():
        return "no Linux network namespaces on this system"
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, as CI does)"
    probe = f"{PREFIX}probe{os.getpid()}"
    try:
        result = _ip("netns", "add", probe, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        return f"iproute2 `ip` unusable: {e}"
    if result.returncode != 0:
        return f"`ip netns add` failed: {result.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    """One namespace with one address; `run`/`popen` start commands inside it."""

    name: str
    netns: str
    address: str
    veth: str

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(
        self, argv: Sequence[str], *, timeout_s: float = 120.0, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout_s, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command(argv), start_new_session=True, **kwargs)

    def pids(self) -> list[int]:
        """Every live process whose network namespace is this host's."""
        result = _ip("netns", "pids", self.netns, check=False)
        return sorted(int(p) for p in result.stdout.split() if p.isdigit())

    def kill_all(self) -> int:
        """SIGKILL every process in the namespace (a host losing power); returns how many."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def link(self, up: bool) -> None:
        """Plug or unplug this host's cable (its veth end on the bridge side)."""
        _ip("link", "set", self.veth, "up" if up else "down")

    def can_reach(self, address: str, port: int, timeout_s: float = 1.0) -> bool:
        """Whether a TCP connect from inside this host to `address`:`port` succeeds."""
        probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout={timeout_s})"
        return self.run([sys.executable, "-c", probe], timeout_s=timeout_s + 30).returncode == 0

    def blackhole(self, address: str, on: bool) -> None:
        """Silently drop (or stop dropping) this host's packets to `address`: one peer out of reach."""
        _ip("-n", self.netns, "route", "add" if on else "del", "blackhole", f"{address}/32", check=on)


@dataclass
class Network:
    """A bridge with hosts on it; see the module docstring."""

    hosts: dict[str, Host] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid() % 100000}")
    _lock: Any = None
    _closed: bool = False
    _previous: dict[int, Any] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge (the test process is a client there)."""
        return str(SUBNET.network_address + 1)

    def open(self, lock_timeout_s: float = 600.0) -> Network:
        reason = netns_unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        self._take_lock(lock_timeout_s)
        atexit.register(self.close)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        self._remove_leftovers()
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._no_ipv6(f"net.ipv6.conf.{self.bridge}.disable_ipv6")
            _ip("addr", "add", f"{self.gateway}/{SUBNET.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise
        return self

    def add_host(self, name: str) -> Host:
        """A new namespace with the next free address on the subnet."""
        index = len(self.hosts)
        address = str(SUBNET.network_address + 10 + index)
        host = Host(name, f"{self.tag}-{name}", address, f"{self.tag}v{index}")
        self.hosts[name] = host
        peer = f"{self.tag}p{index}"
        _ip("netns", "add", host.netns)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", host.netns)
        _ip("link", "set", host.veth, "master", self.bridge)
        _ip("link", "set", host.veth, "up")
        inside = ["ip", "netns", "exec", host.netns]
        subprocess.run([*inside, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
        for args in (
            ("link", "set", "lo", "up"),
            ("link", "set", peer, "name", "eth0"),
            ("addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0"),
            ("link", "set", "eth0", "up"),
        ):
            _ip("-n", host.netns, *args)
        return host

    @staticmethod
    def reachable(host: Host, port: int, timeout_s: float = 1.0) -> bool:
        """Whether a TCP connect from the root namespace to `host`:`port` succeeds."""
        try:
            with socket.create_connection((host.address, port), timeout=timeout_s):
                return True
        except OSError:
            return False

    def wait_reachable(self, host: Host, port: int, *, timeout_s: float) -> None:
        """Until a TCP connect from the root namespace to `host`:`port` succeeds."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with socket.create_connection((host.address, port), timeout=1.0):
                    return
            except OSError as e:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{host.name} ({host.address}:{port}) not reachable: {e}") from e
                time.sleep(0.1)

    def close(self) -> None:
        """Kill every process in every host, delete namespaces and bridge (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for host in self.hosts.values():
            host.kill_all()
        for host in self.hosts.values():
            self._wait_empty(host)
            _ip("link", "del", host.veth, check=False)  # its peer goes with it, now, not later
            _ip("netns", "del", host.netns, check=False)
        _ip("link", "del", self.bridge, check=False)
        for sig, previous in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, previous)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _wait_empty(self, host: Host, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while host.pids() and time.monotonic() < deadline:
            host.kill_all()
            time.sleep(0.05)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.close()
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)

    def _take_lock(self, timeout_s: float) -> None:
        handle = LOCK_PATH.open("a+")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock = handle
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.close()
                    raise TimeoutError(
                        f"another cluster run holds {LOCK_PATH} after {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.5)

    def _remove_leftovers(self) -> None:
        """Namespaces and bridges of an earlier run that was SIGKILLed (we hold the lock, so no
        live run owns them)."""
        listed = _ip("netns", "list", check=False).stdout.split("\n")
        for line in listed:
            name = line.split(" ")[0]
            if name.startswith(PREFIX) and "-" in name:
                for pid in _ip("netns", "pids", name, check=False).stdout.split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                _ip("netns", "del", name, check=False)
        for line in _ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith(PREFIX) and name.endswith("br"):
                _ip("link", "del", name, check=False)

    @staticmethod
    def _no_ipv6(key: str) -> None:
        subprocess.run(["sysctl", "-qw", f"{key}=1"], check=False, capture_output=True)
