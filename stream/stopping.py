"""How a framestream command stops: SIGINT (Ctrl-C) and SIGTERM (what ``kill``, ``timeout``,
systemd, Docker and Kubernetes send) mean the same thing, and every command handles them here.

The first signal asks for an orderly stop: while a pipeline plays, the callback bound with
`StopSignals.notify` runs (the run stops its sources and drains within
``streams.drain_timeout_s``); before anything is bound (start-up), `StopRequested` is raised where
the program is, so its ``finally`` blocks stop what it started. Either way the command exits 0.

A second signal (either kind, after `REPEAT_S`) skips the drain: `ForcedStop` is raised, the
``finally`` blocks still stop what the command started, and it exits ``128 + signal`` (130 for
SIGINT, 143 for SIGTERM). Later signals are ignored while that clean-up runs, which may take
`FORCED_EXIT_S` at most (then, as after SIGKILL, `stream.watchdog` stops what is left).

Ray's ``ray.init`` puts its own SIGTERM handler in (one that exits at once): call `reinstall`
after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = [
    "FORCED_EXIT_S",
    "REPEAT_S",
    "STOP_SIGNALS",
    "ForcedStop",
    "StopRequested",
    "StopSignals",
    "active",
    "exit_code",
    "forced",
    "handle_stop_signals",
    "on_stop_signal",
    "reinstall",
]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

FORCED_EXIT_S = 10.0
"""After a second signal, the process exits (``128 + signal``) at the latest this long after, even
if a clean-up step hangs; `stream.watchdog` stops what that step would have."""

REPEAT_S = 1.0
"""The same signal again within this long is the same request (a terminal's Ctrl-C reaches a
process both directly and through its group when a parent forwards it)."""


class StopRequested(KeyboardInterrupt):
    """The first stop signal arrived before anything could drain (start-up): unwind and exit 0."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class ForcedStop(KeyboardInterrupt):
    """A second stop signal: skip the drain, stop what was started, exit ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """The process's SIGINT and SIGTERM handler while a command runs (see the module docstring)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        forced_exit_s: float | None = FORCED_EXIT_S,
        exit_process: Callable[[int], object] = os._exit,
    ) -> None:
        """`forced_exit_s`: how long a forced stop's clean-up may take before `exit_process`
        ends the process (None: no limit)."""
        self._clock = clock
        self._forced_exit_s = forced_exit_s
        self._exit_process = exit_process
        self._callbacks: list[Callable[[], object]] = []
        self._previous: dict[int, object] = {}
        self.first: tuple[int, float] | None = None
        """(signal, when) of the first stop signal."""
        self.forced: int | None = None
        """The signal that forced the stop, if one did."""

    @property
    def requested(self) -> bool:
        return self.first is not None

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            previous = signal.signal(sig, self.handle)
            self._previous.setdefault(sig, previous)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def handle(self, signum: int, frame: FrameType | None = None) -> None:
        now = self._clock()
        if self.first is None:
            self.first = (signum, now)
            if not self._callbacks:
                raise StopRequested(signum)
            for callback in list(self._callbacks):
                callback()
            return
        if self.forced is not None:
            return  # the forced clean-up is running: let it finish
        first_signum, first_at = self.first
        if signum == first_signum and now - first_at < REPEAT_S:
            return
        self.forced = signum
        if self._forced_exit_s is not None:
            deadline = threading.Timer(self._forced_exit_s, self._exit_process, (128 + signum,))
            deadline.daemon = True
            deadline.start()
        raise ForcedStop(signum)

    @contextlib.contextmanager
    def notify(self, callback: Callable[[], object]) -> Iterator[None]:
        """Call `callback` on the first stop signal while inside this block (at once when one
        came already). It runs in the main thread between two bytecodes: it must only set a flag
        (``loop.call_soon_threadsafe(event.set)``)."""
        self._callbacks.append(callback)
        try:
            if self.first is not None:
                callback()
            yield
        finally:
            self._callbacks.remove(callback)


_active: list[StopSignals] = []


def active() -> StopSignals | None:
    """The handler `handle_stop_signals` installed, if one is."""
    return _active[-1] if _active else None


@contextlib.contextmanager
def handle_stop_signals() -> Iterator[StopSignals]:
    """Install a `StopSignals` for this block (the one already installed, when nested); the main
    thread only, as Python runs signal handlers there."""
    if _active:
        yield _active[-1]
        return
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("stop signals can only be handled in the main thread")
    signals = StopSignals()
    signals.install()
    _active.append(signals)
    try:
        yield signals
    finally:
        _active.remove(signals)
        signals.restore()


@contextlib.contextmanager
def on_stop_signal(callback: Callable[[], object]) -> Iterator[StopSignals | None]:
    """Call `callback` on the first stop signal inside this block (`StopSignals.notify`), through
    the installed handler or one installed for this block. Off the main thread, where Python runs
    no signal handler, with none installed: signals are left alone and None is yielded."""
    if active() is None and threading.current_thread() is not threading.main_thread():
        yield None
        return
    with handle_stop_signals() as signals, signals.notify(callback):
        yield signals


def forced() -> bool:
    """True once a second stop signal came: clean-up steps that only drain should be skipped."""
    signals = active()
    return signals is not None and signals.forced is not None


def reinstall() -> None:
    """Put the active handler back after a library replaced it (``ray.init`` does)."""
    signals = active()
    if signals is not None and threading.current_thread() is threading.main_thread():
        signals.install()


def exit_code(error: KeyboardInterrupt) -> int:
    """The exit code for a stop that unwound the program: 0 for an orderly one (`StopRequested`),
    ``128 + signal`` for a forced one, 130 for a KeyboardInterrupt from anywhere else."""
    if isinstance(error, ForcedStop):
        return error.exit_code
    return 0 if isinstance(error, StopRequested) else 128 + signal.SIGINT
