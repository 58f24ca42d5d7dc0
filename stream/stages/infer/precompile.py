"""Compile a model version into the compiled-model cache in a child process at the lowest CPU
priority, so a version loaded beside one that serves takes only the CPU the pipeline leaves idle.

An OpenVINO compile takes every core for a moment, and the CPU plugin has no setting that caps
its threads: compiled inside a serving Infer process, each compile of the new version stalled the
batches of the old one (the swap's p99 latency came out about 3x the steady p99 on two cores).
The child (``nice`` 19) writes the compiled blobs into the compiled-model cache
(``models.cache_dir``/compiled); the Infer process then compiles the same graphs with the same
settings and OpenVINO loads them from that cache instead of compiling.

The child gets the settings' ``models`` and ``infer`` sections as JSON on stdin and the model
name and version as arguments; it reads the version's descriptor from the repository itself.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

from stream.settings import Settings

__all__ = ["precompile"]

log = logging.getLogger(__name__)

_TIMEOUT_S = 600.0
"""A child this slow (a pipeline that leaves no idle CPU for minutes) is given up: the caller
compiles in its own process, as without a child."""

_CHECK_S = 0.25
"""How often a waiting load looks whether it was cancelled (the Infer stage stopping)."""


def precompile(
    settings: Settings, model: str, version: int, *, cancel: threading.Event, timeout_s: float = _TIMEOUT_S
) -> bool:
    """Compile `version` of `model` into the compiled-model cache at nice 19 (blocking: call from a
    thread). False when it could not, or `cancel` was set (the child is killed); the caller then
    compiles as usual, and a failure's reason is logged."""
    sections = {
        "models": settings.models.model_dump(mode="json"),
        "infer": settings.infer.model_dump(mode="json"),
    }
    argv = [sys.executable, "-m", "stream.stages.infer.precompile", model, str(version)]
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_lowest_priority,  # noqa: PLW1509 - os.nice only, no locks taken
        )
    except OSError as e:
        log.warning("infer %s: cannot compile version %d at low priority (%s)", model, version, e)
        return False
    deadline = time.monotonic() + timeout_s
    sections_json: str | None = json.dumps(sections)
    while True:
        try:
            _, err = child.communicate(sections_json, timeout=_CHECK_S)
            break
        except subprocess.TimeoutExpired:
            sections_json = None  # written already: communicate must not send it again
            if cancel.is_set() or time.monotonic() > deadline:
                child.kill()
                child.communicate()
                if not cancel.is_set():
                    log.warning(
                        "infer %s: compiling version %d at low priority took over %.0f s; "
                        "compiling it in the Infer process instead", model, version, timeout_s,
                    )  # fmt: skip
                return False
    if child.returncode != 0:
        tail = (err or "").strip().splitlines()[-1:] or ["no output"]
        log.warning(
            "infer %s: compiling version %d at low priority failed (exit %d: %s)",
            model, version, child.returncode, tail[0],
        )  # fmt: skip
        return False
    return True


def _lowest_priority() -> None:
    os.nice(19)


def _main(argv: list[str]) -> int:
    from stream.errors import FramestreamError
    from stream.stages.infer.stage import open_stage_engine
    from stream.zoo.repository import ModelRepository

    model, version = argv[0], int(argv[1])
    sections: dict[str, Any] = json.loads(sys.stdin.read())
    settings = Settings.model_validate(sections)
    try:
        spec = ModelRepository(settings.models.repository).spec(model, version)
        open_stage_engine(settings, model, spec).close()
    except FramestreamError as e:
        print(f"{model} version {version}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
