"""Live progress on the terminal: a rich live line on a TTY, plain lines every few seconds
otherwise (CI logs, pipes), so a run is never silent and never floods a log."""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

__all__ = ["ProgressView"]


class ProgressView:
    """Call it with a state mapping (sent, results, expected, elapsed_s, settling)."""

    def __init__(self, console: Console | None = None, *, title: str = "replay", plain_every_s: float = 2.0):
        self.console = console or Console(stderr=True)
        self.title = title
        self.plain_every_s = plain_every_s
        self._live: Live | None = None
        self._last_plain = 0.0
        self._state: dict[str, Any] = {}
        self._t0 = time.monotonic()
        self._last_results: tuple[float, int] = (self._t0, 0)
        self._rate = 0.0

    def _text(self) -> str:
        s = self._state
        sent, results = s.get("sent", 0), s.get("results", 0)
        now = time.monotonic()
        t, n = self._last_results
        if now - t >= 1.0:
            self._rate = (results - n) / (now - t)
            self._last_results = (now, results)
        phase = "settling" if s.get("settling") else "sending"
        if "elapsed_s" in s and not s.get("settling"):
            self._t_send = now - float(s["elapsed_s"])
        elapsed = now - getattr(self, "_t_send", self._t0)
        return (
            f"{self.title}: {phase} {elapsed:5.1f} s | sent {sent} | results {results} "
            f"({self._rate:.0f}/s) | waiting for {max(0, sent - results)}"
        )

    def __call__(self, state: Mapping[str, Any]) -> None:
        self._state.update(state)
        if self._live is not None:
            self._live.update(Text(self._text()))
            return
        now = time.monotonic()
        if now - self._last_plain >= self.plain_every_s:
            self._last_plain = now
            self.console.print(self._text(), highlight=False, soft_wrap=True)

    def __enter__(self) -> ProgressView:
        if self.console.is_terminal:
            self._live = Live(Text(f"{self.title}: starting"), console=self.console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.update(Text(self._text()))
            self._live.__exit__(exc_type, exc, tb)
            self._live = None
