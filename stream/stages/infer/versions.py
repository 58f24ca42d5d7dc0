"""Which version of its model an Infer replica runs, following the model repository live.

Every `models.poll_s` a replica reads its model's `serving.yml` (`ModelRepository.serving`). When
the active version changes it loads the new one in a thread (the event loop keeps serving batches
on the old one): a child process at the lowest CPU priority compiles it into the compiled-model
cache (`stream.stages.infer.precompile`), the replica loads it from there and runs one inference
per batch shape on it, and only then points new batches at it: load before unload, as OVMS does.
A batch runs whole on the engine it started with; the old engine is closed once its last batch is
done. A version that fails to load (a missing or corrupt file, another input size) is logged,
counted in the pipeline counters (``model_load_failed:<model>``) and not tried again until the
active version changes; the old one keeps serving.

A shadow version (`serving.shadow`) is loaded the same way and run by a `ShadowInfer` loop
beside the active one (`stream.stages.infer.shadow`). Promoting it makes its loaded engine the
active one, so promotion costs no load. When the shadow stops, its consumer group is destroyed,
so it holds back no trimming of the tensors stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from redis.exceptions import ResponseError

from stream.errors import FramestreamError, ModelError
from stream.zoo.repository import Serving

if TYPE_CHECKING:
    from stream.stages.infer.shadow import ShadowInfer
    from stream.stages.infer.stage import InferStage

__all__ = ["VersionWatch", "drop_shadow_group"]

log = logging.getLogger(__name__)

_YIELD_RATIO = 4.0
"""A version loading beside the serving one waits this many times as long as each load from the
compiled-model cache and each warm-up took before the next: it takes about a fifth of the CPU
instead of all of it, so the batches served meanwhile keep their latency."""


async def drop_shadow_group(stage: InferStage) -> None:
    """Destroy the shadow's consumer group on every partition's tensors stream (no shadow runs)."""
    from stream.core.keys import PipelineKeys

    group = PipelineKeys.group("shadow", stage.model)
    for stream in stage.all_streams:
        with contextlib.suppress(ResponseError):  # no such stream yet
            await stage.client.xgroup_destroy(stream, group)


class VersionWatch:
    """The versions one Infer replica serves: polls the repository, loads off the event loop,
    swaps between batches, runs the shadow loop."""

    def __init__(self, stage: InferStage) -> None:
        self.stage = stage
        self.model = stage.model or ""
        self.poll_s = stage.settings.models.poll_s
        self._next_poll_s = time.monotonic() + self.poll_s
        self._loading: asyncio.Task[Any] | None = None
        self._loading_version: int | None = None
        self._loading_for = ""  # "active" | "shadow"
        self._cancel = threading.Event()
        """Set when the stage stops: a load waiting on its low-priority compile gives up."""
        self.failed: set[int] = set()
        """Versions that failed to load (not tried again until the active version changes)."""
        self.load_failures = 0
        self._retired: list[Any] = []
        self.shadow: ShadowInfer | None = None
        self._shadow_task: asyncio.Task[None] | None = None
        self._shadow_stop = asyncio.Event()
        self._serving: Serving | None = None
        self._first_poll = True
        self.swaps = 0
        self.last_swap_ms: float | None = None
        """Epoch ms of the last swap (new batches ran on the new version from then on)."""

    # -- the loop's periodic step ------------------------------------------------------------

    async def step(self) -> None:
        """Take a finished load, close engines no batch uses any more, poll when due."""
        if self._loading is not None and self._loading.done():
            await self._loaded()
        await self._close_retired()
        if self._shadow_task is not None and self._shadow_task.done():
            await self._shadow_ended()
        now = time.monotonic()
        if now >= self._next_poll_s:
            self._next_poll_s = now + self.poll_s
            await self.poll()

    async def poll(self) -> None:
        """Read serving.yml and act on what changed."""
        try:
            serving = await asyncio.to_thread(self.stage.repository.serving, self.model)
        except FramestreamError as e:
            if self._serving is not None or self._first_poll:
                log.error("infer %s: cannot read which version serves: %s", self.model, e)
            self._first_poll = False
            return
        if self._serving is not None and serving.active != self._serving.active:
            self.failed.clear()  # a new choice of version: each may be tried again
        self._serving = serving
        if self._first_poll and serving.shadow is None:
            await drop_shadow_group(self.stage)  # left by a pipeline that stopped with a shadow
        self._first_poll = False
        await self._follow_active(serving)
        await self._follow_shadow(serving)

    async def _follow_active(self, serving: Serving) -> None:
        want = serving.active
        if want == self.stage.version or want in self.failed:
            return
        if self.shadow is not None and self.shadow.version == want:  # promoted: already loaded
            engine = self.shadow.engine
            await self._stop_shadow(retire=False)
            self._swap(engine)
            if serving.shadow is None:
                await drop_shadow_group(self.stage)
            return
        self._load(want, "active")

    async def _follow_shadow(self, serving: Serving) -> None:
        want = serving.shadow
        running = self.shadow.version if self.shadow is not None else None
        if want == running:
            return
        if running is not None:
            await self._stop_shadow(retire=True)
            if want is None:
                await drop_shadow_group(self.stage)
        if want is not None and want not in self.failed:
            self._load(want, "shadow")

    # -- loading -------------------------------------------------------------------------------

    def _load(self, version: int, role: str) -> None:
        if self._loading is not None:  # one load at a time; the next poll asks again
            return
        self._loading_version, self._loading_for = version, role
        log.info("infer %s: loading version %d (%s)", self.model, version, role)
        self._loading = asyncio.create_task(asyncio.to_thread(self._open, version))

    def _open(self, version: int) -> Any:
        """Compile and warm `version` (in a thread): one inference per batch shape the stage runs."""
        stage = self.stage
        spec = stage.repository.spec(self.model, version)
        have = stage.engine.spec.input_hw
        if spec.input_hw != have:
            raise ModelError(
                f"{self.model} version {version} takes {spec.input_hw[0]}x{spec.input_hw[1]} inputs; "
                f"preprocess makes {have[0]}x{have[1]} tensors for this model"
            )
        from stream.stages.infer.precompile import precompile
        from stream.stages.infer.stage import open_stage_engine

        with tempfile.TemporaryDirectory(prefix=f"framestream-{self.model}-v{version}-") as tmp:
            # compiled at the lowest priority in a child process, then imported here
            folder = Path(tmp)
            compiled = precompile(stage.settings, self.model, version, folder, cancel=self._cancel)
            if self._cancel.is_set():
                raise FramestreamError(f"{self.model} version {version}: not loaded, the stage stops")
            engine = open_stage_engine(
                stage.settings,
                self.model,
                spec,
                yield_ratio=_YIELD_RATIO,
                compiled_from=folder if compiled else None,
            )
        try:
            h, w = spec.input_hw
            for size in stage.buckets:
                started = time.monotonic()
                engine.infer(np.zeros((size, h, w, 3), np.uint8))
                time.sleep((time.monotonic() - started) * _YIELD_RATIO)
        except BaseException:
            engine.close()
            raise
        return engine

    async def _loaded(self) -> None:
        task, version, role = self._loading, self._loading_version, self._loading_for
        self._loading = self._loading_version = None
        assert task is not None and version is not None
        try:
            engine = task.result()
        except Exception as e:  # noqa: BLE001 - any failure to load: the old version serves on
            self.failed.add(version)
            self.load_failures += 1
            log.error(
                "infer %s: version %d failed to load (%s: %s); version %d keeps serving",
                self.model, version, type(e).__name__, e, self.stage.version,
            )  # fmt: skip
            counters = self.stage.keys.counters
            with contextlib.suppress(Exception):  # counting must not stop the loop
                await self.stage.client.hincrby(counters, f"model_load_failed:{self.model}", 1)
            return
        serving = self._serving
        if role == "active" and serving is not None and serving.active == version:
            self._swap(engine)
        elif role == "shadow" and serving is not None and serving.shadow == version:
            self._start_shadow(engine)
        else:  # the choice changed while it loaded
            self._retired.append(engine)
        self._next_poll_s = 0.0  # look again at once: something else may be waiting

    def _swap(self, engine: Any) -> None:
        from stream.stages.base import now_ms

        old = self.stage.engine
        self.stage.engine = engine
        self.swaps += 1
        self.last_swap_ms = now_ms()
        log.warning(
            "infer %s: swapped version %s for version %d (new batches run on it)",
            self.model, getattr(old, "version", "?"), engine.version,
        )  # fmt: skip
        self._retired.append(old)

    async def _close_retired(self) -> None:
        for engine in list(self._retired):
            if self.stage.batches_on(engine) == 0 and engine is not self.stage.engine:
                self._retired.remove(engine)
                close = getattr(engine, "close", None)
                if close is not None:
                    await asyncio.to_thread(close)

    # -- the shadow ------------------------------------------------------------------------------

    def _start_shadow(self, engine: Any) -> None:
        from stream.stages.infer.shadow import ShadowInfer

        stage = self.stage
        self.shadow = ShadowInfer(
            stage.settings, stage.client, consumer=stage.consumer, model=self.model, engine=engine, like=stage
        )
        self._shadow_stop = asyncio.Event()
        self._shadow_task = asyncio.create_task(
            self.shadow.run(self._shadow_stop), name=f"shadow:{self.model}"
        )
        log.warning("infer %s: version %d runs as a shadow", self.model, engine.version)

    async def _stop_shadow(self, *, retire: bool) -> None:
        shadow, task = self.shadow, self._shadow_task
        self.shadow, self._shadow_task = None, None
        if shadow is None:
            return
        self._shadow_stop.set()
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        if retire:
            self._retired.append(shadow.engine)

    async def _shadow_ended(self) -> None:
        """The shadow loop ended by itself (its group was destroyed under it, Redis went away):
        start it again on the same engine at the next poll."""
        task, shadow = self._shadow_task, self.shadow
        self._shadow_task, self.shadow = None, None
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.info("infer %s: the shadow loop ended (%s); starting it again", self.model, task.exception())
        if shadow is not None and self._serving is not None and self._serving.shadow == shadow.version:
            self._start_shadow(shadow.engine)
        elif shadow is not None:
            self._retired.append(shadow.engine)

    async def close(self) -> None:
        """The stage stops: stop the shadow, drop a load in progress, close engines swapped out."""
        await self._stop_shadow(retire=True)
        if self._loading is not None:
            self._cancel.set()
            with contextlib.suppress(BaseException):
                engine = await self._loading
                self._retired.append(engine)
            self._loading = None
        await self._close_retired()
