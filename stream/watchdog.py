"""What a command starts dies with it, even when the command itself is SIGKILLed.

Two mechanisms, both needed:

- `die_with_parent`: a ``preexec_fn`` that asks Linux to send the child a signal when its parent
  dies (``PR_SET_PDEATHSIG``). The private redis-server and the processes runner's stage
  processes get it: they stop the moment the run is gone. Elsewhere it does nothing, and the
  watchdog below covers them.
- `start_watchdog`: a small detached process (``python -m stream.watchdog``) that follows the
  command's process tree while it runs, every `POLL_S`, and waits on a pipe from it. When the
  pipe reaches end of file (the command exited, however it ended) it stops whatever of that tree
  is still alive: SIGTERM, then SIGKILL after `GRACE_S`. That is how the local Ray of
  ``framestream run`` goes, agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) and
  workers included, which Ray itself leaves adopted by init when its driver is killed. Only
  processes that descended from the command are touched (by pid and start time, so a reused pid
  is never hit): another Ray or redis-server on the machine is never one of them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

__all__ = [
    "GRACE_S",
    "POLL_S",
    "die_with_parent",
    "main",
    "running",
    "start_watchdog",
    "stop_processes",
]

POLL_S = 1.0
GRACE_S = 3.0
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets `sig` when this process dies.
    None off Linux, or off the main thread (Linux signals the child when the *thread* that
    started it ends, and a worker thread may end long before the process)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
            os.kill(os.getpid(), sig)

    return preexec


_pipes: list[int] = []


def start_watchdog() -> int | None:
    """Start the watchdog for this process (once; later calls return None). The pipe's write end
    stays open, unseen by children, until this process exits. Returns the watchdog's pid."""
    if _pipes:
        return None
    read_end, write_end = os.pipe()  # non-inheritable: only the watchdog is given the read end
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream.watchdog", "--pid", str(os.getpid()), "--fd", str(read_end)],
            pass_fds=(read_end,),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # not in the terminal's group: Ctrl-C must not stop it first
        )
    finally:
        os.close(read_end)
    _pipes.append(write_end)
    return proc.pid


def stop_processes(procs: list, grace_s: float = GRACE_S) -> list:
    """SIGTERM every process of `procs` (psutil.Process), SIGKILL those still running after
    `grace_s`; returns the ones that had to be killed. A zombie counts as ended: it holds nothing
    but its pid, until its new parent (init) reaps it."""
    import psutil

    def wait(procs: list, timeout_s: float) -> list:
        deadline = time.monotonic() + timeout_s
        while (alive := [p for p in procs if running(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return alive

    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    alive = wait(procs, grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    wait(alive, grace_s)
    return alive


def running(proc) -> bool:
    """`proc` (a psutil.Process) still runs: the same process (pid and start time), not a zombie."""
    import psutil

    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _follow(pid: int, fd: int) -> None:
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    seen: dict[tuple[int, float], psutil.Process] = {}
    while True:
        with contextlib.suppress(psutil.Error):
            for child in root.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    seen.setdefault((child.pid, child.create_time()), child)
        ready, _, _ = select.select([fd], [], [], POLL_S)
        if ready and not os.read(fd, 4096):
            break
        if not root.is_running():
            break
    # is_running() compares the start time too: a pid reused since is not ours
    left = [p for p in seen.values() if running(p) and p.pid != os.getpid()]
    if left:
        names = ", ".join(sorted(f"{_name(p)} ({p.pid})" for p in left))
        print(f"framestream watchdog: {pid} ended; stopping what it left: {names}", file=sys.stderr)
        killed = stop_processes(left)
        if killed:
            print(f"framestream watchdog: killed {len(killed)} that ignored SIGTERM", file=sys.stderr)


def _name(proc) -> str:
    import psutil

    try:
        return str(proc.name())
    except psutil.Error:
        return "?"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stream.watchdog")
    parser.add_argument("--pid", type=int, required=True, help="the process whose tree to follow")
    parser.add_argument("--fd", type=int, required=True, help="read end of its pipe")
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # a closed terminal or its Ctrl-C: the command decides
    _follow(args.pid, args.fd)


if __name__ == "__main__":
    main()
