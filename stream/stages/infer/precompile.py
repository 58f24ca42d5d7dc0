"""Compile a model version in a child process at the lowest CPU priority, so a version loaded
beside one that serves takes only the CPU the pipeline leaves idle.

An OpenVINO compile takes every core for a moment, and the CPU plugin has no setting that caps
its threads; building the graph in Python holds the interpreter lock the Infer replica's event
loop needs. Done inside a serving Infer process, both stalled the batches of the old version (the
swap's p99 latency came out about 3x the steady p99 on two cores). The child (``nice`` 19)
compiles the version exactly as the replica would (`open_stage_engine`) and exports the compiled
models into a folder (`Engine.export`); the replica then imports them
(``open_engine(compiled_from=...)``): no graph built, nothing compiled in the serving process.

The child gets the settings' ``models`` and ``infer`` sections as JSON on stdin and the model
name, version and folder as arguments; it reads the version's descriptor from the repository
itself.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream.settings import Settings

__all__ = ["precompile"]

log = logging.getLogger(__name__)

_TIMEOUT_S = 600.0
"""A child this slow (a pipeline that leaves no idle CPU for minutes) is given up: the caller
compiles in its own process, as without a child."""

_CHILD = (
    "import os, runpy; os.nice(19); "
    "runpy.run_module('stream.stages.infer.precompile', run_name='__main__', alter_sys=True)"
)
"""The child's program: the lowest priority before any import (the project's take half a second of
CPU), and no ``preexec_fn`` in the parent, whose fork would copy a serving process's page tables."""

_CHECK_S = 0.25
"""How often a waiting load looks whether it was cancelled (the Infer stage stopping)."""


def precompile(
    settings: Settings,
    model: str,
    version: int,
    folder: Path,
    *,
    cancel: threading.Event,
    timeout_s: float = _TIMEOUT_S,
) -> bool:
    """Compile `version` of `model` at nice 19 and export it into `folder` (blocking: call from a
    thread). False when it could not, or `cancel` was set (the child is killed); the caller then
    compiles as usual, and a failure's reason is logged."""
    sections = {
        "models": settings.models.model_dump(mode="json"),
        "infer": settings.infer.model_dump(mode="json"),
    }
    argv = [sys.executable, "-c", _CHILD, model, str(version), str(folder)]
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
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


def _main(argv: list[str]) -> int:
    from stream.errors import FramestreamError
    from stream.settings import Settings
    from stream.stages.infer.stage import open_stage_engine
    from stream.zoo.repository import ModelRepository

    model, version, folder = argv[0], int(argv[1]), Path(argv[2])
    sections: dict[str, Any] = json.loads(sys.stdin.read())
    settings = Settings.model_validate(sections)
    try:
        spec = ModelRepository(settings.models.repository).spec(model, version)
        # not from the compiled-model cache: a model loaded from there cannot be exported again
        with open_stage_engine(settings, model, spec, use_compiled_cache=False) as engine:
            engine.export(folder)
    except FramestreamError as e:
        print(f"{model} version {version}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
