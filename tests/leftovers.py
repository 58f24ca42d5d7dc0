"""The suite leaves nothing running: a pytest plugin (loaded by tests/conftest.py) and the helper
fixtures use to stop a local Ray.

At the start of the session every process the suite starts is marked: `MARK` goes into this
process's environment, which every child inherits (redis-servers, Ray's raylet, GCS, agents and
workers, `framestream run` subprocesses, Chromium), and a sampler thread records, every
`SAMPLE_S`, the processes descended from pytest (for the few started with an environment of their
own). At the end, after every fixture has been torn down, whatever of those still runs fails the
session, with a list, and is stopped; so are network namespaces the suite created
(``tests.hosts.netns`` names them after pytest's pid). Processes that ran before the session,
or that other people on the machine start meanwhile, carry neither the mark nor pytest as an
ancestor: they are never counted, nor touched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import threading
import time

import psutil
import pytest

from stream.watchdog import running, stop_processes

__all__ = ["MARK", "leftover_processes", "stop_ray"]

MARK = "PYTEST_FRAMESTREAM_SUITE"
SAMPLE_S = 2.0
SETTLE_S = 15.0
"""How long the end-of-suite check waits for what is stopping already (a run's watchdog sweeping)."""

_RAY_NAMES = ("raylet", "gcs_server")
_PYTHONS_OWN = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
"""Helpers Python's multiprocessing starts once and keeps until the interpreter exits."""


def _is_ray(proc: psutil.Process) -> bool:
    try:
        name = proc.name()
        return name in _RAY_NAMES or name.startswith("ray::") or "ray/" in " ".join(proc.cmdline()[:2])
    except psutil.Error:
        return False


def stop_ray() -> None:
    """``ray.shutdown()`` for a local Ray a fixture started in this process, then SIGTERM / SIGKILL
    whatever of it is left: Ray leaves its agents and the Serve proxy behind, adopted by init."""
    import ray

    ours = [p for p in psutil.Process().children(recursive=True) if _is_ray(p)]
    ray.shutdown()
    stop_processes([p for p in ours if running(p)])


class _Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="leftovers-sampler", daemon=True)
        self.seen: dict[tuple[int, float], psutil.Process] = {}
        self.done = threading.Event()

    def sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            for proc in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.seen.setdefault((proc.pid, proc.create_time()), proc)

    def run(self) -> None:
        while not self.done.wait(SAMPLE_S):
            self.sample()


def _marked(value: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and proc.environ().get(MARK) == value:
                found.append(proc)
    return found


def leftover_processes(value: str, sampled: list[psutil.Process]) -> list[psutil.Process]:
    """Processes still running that carry the mark `value` or were sampled as pytest's."""
    me = psutil.Process()
    ancestors = {p.pid for p in me.parents()} | {me.pid}
    by_key = {}
    for proc in [*_marked(value), *sampled]:
        with contextlib.suppress(psutil.Error):
            if proc.pid in ancestors or not running(proc):
                continue
            if proc.ppid() == me.pid and any(m in " ".join(proc.cmdline()) for m in _PYTHONS_OWN):
                continue
            by_key[(proc.pid, proc.create_time())] = proc
    return list(by_key.values())


def _namespaces() -> set[str]:
    if shutil.which("ip") is None:
        return set()
    try:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def _our_namespace(name: str) -> bool:
    from tests.hosts.netns import PREFIX

    pid = os.getpid()
    return name.startswith((f"{PREFIX}{pid % 100000}", f"{PREFIX}probe{pid}"))


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:160] or proc.name()}"
    except psutil.Error:
        return f"{proc.pid} (gone)"


_state: dict[str, object] = {}


def pytest_sessionstart(session: pytest.Session) -> None:
    if MARK in os.environ:
        return  # a pytest run by a test of the suite: the outer session checks
    value = os.environ[MARK] = f"{os.getpid()}-{secrets.token_hex(4)}"
    sampler = _Sampler()
    sampler.start()
    _state.update(value=value, sampler=sampler, namespaces=_namespaces())


@pytest.hookimpl(trylast=True)  # after pytest tore the session's fixtures down (also after -x)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    sampler = _state.get("sampler")
    if not isinstance(sampler, _Sampler):
        return
    sampler.done.set()
    sampler.sample()
    sampled = list(sampler.seen.values())
    deadline = time.monotonic() + SETTLE_S
    while (left := leftover_processes(str(_state["value"]), sampled)) and time.monotonic() < deadline:
        time.sleep(0.2)
    before = _state["namespaces"]
    assert isinstance(before, set)
    namespaces = sorted(n for n in _namespaces() - before if _our_namespace(n))
    if not left and not namespaces:
        return
    report = ["the test suite left these running (now stopped):"]
    report += [f"  process {_describe(p)}" for p in left]
    report += [f"  network namespace {n}" for n in namespaces]
    stop_processes(left)
    for name in namespaces:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "leftovers", red=True)
        reporter.write_line("\n".join(report))
    else:
        print("\n".join(report))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
