"""The OpenVINO engine: uint8 NHWC RGB batches in, [N, classes] scores out (probabilities, or
independent sigmoid scores for multi-label models).

One compiled model per engine, with a dynamic batch dimension and all preprocessing inside it
(see `stream.zoo.graph.prepare_model`). Requests run on an `openvino.AsyncInferQueue`; the
asyncio entry point never blocks the event loop and lets several batches be in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from stream.errors import ModelError
from stream.zoo.descriptors import ModelSpec
from stream.zoo.graph import prepare_model
from stream.zoo.repository import load_spec
from stream.zoo.store import (
    DEFAULT_CACHE_DIR,
    Labels,
    ModelLocation,
    find_labels,
    locate_model,
)

__all__ = ["Engine", "compile_model", "import_model", "open_engine", "read_model_file"]

log = logging.getLogger(__name__)
_core_lock = threading.Lock()
_core: ov.Core | None = None


def _get_core() -> ov.Core:
    global _core
    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


def read_model_file(path: Path) -> ov.Model:
    """`Core.read_model` with a ModelError that names the file when it is corrupt or truncated."""
    try:
        return _get_core().read_model(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"cannot read model file {path}: it is corrupt, truncated or not a model ({first})"
        ) from e


@dataclass
class _SyncJob:
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None

    def resolve(self, result: np.ndarray | None, error: BaseException | None) -> None:
        self.result, self.error = result, error
        self.done.set()


@dataclass
class _AsyncJob:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[np.ndarray]
    batch: np.ndarray  # kept alive: the request reads it in place (share_inputs=True)

    def resolve(self, result: np.ndarray | None, error: BaseException | None) -> None:
        def _set() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)  # type: ignore[arg-type]

        # RuntimeError: the loop closed while the request ran, so nobody waits for the answer
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_set)


def _request_done(model: str) -> Callable[[ov.InferRequest, Any], None]:
    """The request queues' callback, handing each result to its job. It must not reference the
    engine: the queue holds it in C++, where Python's garbage collector cannot see the cycle back,
    so an engine it referenced was never freed, with its compiled models and their threads (each
    model version swapped out leaked one)."""

    def done(request: ov.InferRequest, job: Any) -> None:
        try:
            out = request.get_output_tensor(0).data.copy()
        except BaseException as e:  # noqa: BLE001 - handed to the waiter, never lost
            job.resolve(None, ModelError(f"{model}: inference failed: {e}"))
            return
        job.resolve(out, None)

    return done


class _Pool:
    """One compiled model and its request queue; `slots` keeps starts from blocking the loop."""

    def __init__(self, compiled: ov.CompiledModel, num_requests: int, on_done: Any) -> None:
        self.compiled = compiled
        self.queue = ov.AsyncInferQueue(compiled, num_requests)
        self.queue.set_callback(on_done)
        self.size = len(self.queue)
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    def slots(self, loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
        if self._slots is None or self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(self.size), loop
        return self._slots


_BLOB_DYNAMIC = "dynamic.blob"


def _blob_static(n: int) -> str:
    return f"batch{n}.blob"


class Engine:
    """A compiled model plus its labels. Thread-safe; `infer_async` is for one event loop.

    Any batch size runs on the dynamic-batch model. Sizes listed in `static_batch_sizes` also get a
    model compiled for exactly that size, which OpenVINO's CPU plugin runs 10-30 % faster; a batch
    of such a size goes there (same results: the graph is the same).
    """

    def __init__(
        self,
        spec: ModelSpec,
        compiled: ov.CompiledModel,
        labels: Labels,
        location: ModelLocation,
        num_requests: int = 0,
        static: dict[int, ov.CompiledModel] | None = None,
    ) -> None:
        self.spec = spec
        self.version = spec.version
        """The repository version this engine runs (every score it gives is stamped with it)."""
        self.labels: list[str] = list(labels.names)
        self.labels_source = labels.source
        self.model_path = location.path
        self.synthetic = location.synthetic
        on_done = _request_done(spec.name)
        self._dynamic = _Pool(compiled, num_requests, on_done)
        self._static = {n: _Pool(c, num_requests, on_done) for n, c in (static or {}).items()}
        self.num_requests = self._dynamic.size
        self._closed = False

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.spec.input_hw

    @property
    def static_batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self._static))

    def export(self, folder: Path) -> None:
        """Write the compiled models into `folder` (``open_engine(compiled_from=folder)`` imports
        them without building or compiling a graph)."""
        folder.mkdir(parents=True, exist_ok=True)
        pools = {_BLOB_DYNAMIC: self._dynamic, **{_blob_static(n): p for n, p in self._static.items()}}
        for blob, pool in pools.items():
            (folder / blob).write_bytes(pool.compiled.export_model().getvalue())

    @property
    def streams(self) -> int:
        """Inference streams the device runs in parallel (OpenVINO's NUM_STREAMS)."""
        return int(self._dynamic.compiled.get_property("NUM_STREAMS"))

    def _check(self, batch: np.ndarray) -> np.ndarray:
        if self._closed:
            raise ModelError(f"{self.spec.name}: engine is closed")
        h, w = self.spec.input_hw
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8 or batch.shape[1:] != (h, w, 3):
            got = f"{batch.dtype} {batch.shape}" if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ValueError(f"{self.spec.name}: batch must be uint8 [N, {h}, {w}, 3] RGB, got {got}")
        return np.ascontiguousarray(batch)

    def _pool(self, n: int) -> _Pool:
        return self._static.get(n, self._dynamic)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """uint8 [N, h, w, 3] RGB -> float32 [N, classes] scores (blocks until done).

        A batch is split over the request pool so every inference stream works on it.
        """
        batch = self._check(batch)
        n = batch.shape[0]
        if n == 0:
            return np.zeros((0, self.spec.labels_count), np.float32)
        parts = [batch] if n in self._static else np.array_split(batch, min(self.num_requests, n))
        jobs = []
        for part in parts:
            job = _SyncJob()
            self._pool(len(part)).queue.start_async({0: part}, job, share_inputs=True)
            jobs.append(job)
        for job in jobs:
            job.done.wait()
            if job.error is not None:
                raise job.error
        return np.concatenate([j.result for j in jobs if j.result is not None], axis=0)

    async def infer_async(self, batch: np.ndarray) -> np.ndarray:
        """Same as `infer` as one request, awaited; several calls may be in flight at once.

        Waits (asynchronously) for a free request first, so starting one never blocks the loop.
        Do not modify `batch` until the call returns: the request reads it in place.
        """
        batch = self._check(batch)
        if batch.shape[0] == 0:
            return np.zeros((0, self.spec.labels_count), np.float32)
        loop = asyncio.get_running_loop()
        pool = self._pool(batch.shape[0])
        async with pool.slots(loop):
            job = _AsyncJob(loop, loop.create_future(), batch)
            pool.queue.start_async({0: batch}, job, share_inputs=True)
            return await job.future

    def close(self) -> None:
        """Wait for requests in flight; no request starts after. The compiled models (and their
        threads) are freed with the engine once the caller drops it."""
        if self._closed:
            return
        self._closed = True
        for pool in [self._dynamic, *self._static.values()]:
            pool.queue.wait_all()


def _compile_config(
    performance_hint: str, num_requests: int, inference_precision: str | None
) -> dict[str, Any]:
    if performance_hint not in ("THROUGHPUT", "LATENCY", "CUMULATIVE_THROUGHPUT"):
        raise ValueError(f"performance_hint must be THROUGHPUT or LATENCY, got {performance_hint!r}")
    if num_requests < 0:
        raise ValueError(f"num_requests must be >= 0, got {num_requests}")
    config: dict[str, Any] = {"PERFORMANCE_HINT": performance_hint}
    if num_requests:
        config["PERFORMANCE_HINT_NUM_REQUESTS"] = num_requests
    if inference_precision is not None:
        if inference_precision not in ("f32", "bf16", "f16"):
            raise ValueError(f"inference_precision must be f32, bf16 or f16, got {inference_precision!r}")
        config["INFERENCE_PRECISION_HINT"] = inference_precision
    return config


def compile_model(
    model: ov.Model,
    performance_hint: str = "THROUGHPUT",
    num_requests: int = 0,
    inference_precision: str | None = None,
    compiled_cache: Path | None = None,
) -> Any:
    """Compile for the CPU. `inference_precision` "f32" forces float32 math; None keeps the
    device default (bfloat16 on CPUs with AMX/AVX512-BF16, faster, about 3 significant digits).
    `compiled_cache` is a directory for OpenVINO's compiled-model cache (a restarted stage then
    loads instead of compiling; the cache key covers the graph and these settings)."""
    config = _compile_config(performance_hint, num_requests, inference_precision)
    if compiled_cache is not None:
        try:
            compiled_cache.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(compiled_cache)
        except OSError as e:  # a read-only home (some containers): compile every time instead
            log.warning(
                "compiled-model cache %s is not writable (%s); compiling without it", compiled_cache, e
            )
    try:
        with _cache_lock(config.get("CACHE_DIR")):
            return _get_core().compile_model(model, "CPU", config)
    except RuntimeError as e:
        raise ModelError(f"{model.get_friendly_name()}: OpenVINO could not compile the model: {e}") from e


def import_model(
    blob: Path,
    performance_hint: str = "THROUGHPUT",
    num_requests: int = 0,
    inference_precision: str | None = None,
    compiled_cache: Path | None = None,
) -> Any:
    """A compiled model `Engine.export` wrote, imported with the settings `compile_model` takes
    (`compiled_cache` is not used: nothing is compiled)."""
    config = _compile_config(performance_hint, num_requests, inference_precision)
    try:
        return _get_core().import_model(blob.read_bytes(), "CPU", config)
    except (OSError, RuntimeError) as e:
        raise ModelError(f"cannot import the compiled model {blob}: {e}") from e


@contextlib.contextmanager
def _cache_lock(cache_dir: str | None) -> Iterator[None]:
    """One process at a time compiles into a compiled-model cache: two Infer processes starting
    together wrote the same blob at once, and OpenVINO failed one of them ("filesystem error:
    cannot set permissions"). The one that waits then loads the blob the other wrote."""
    if cache_dir is None:
        yield
        return
    with open(Path(cache_dir) / ".compile.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_engine(
    name: str,
    *,
    weights_dir: Path | None = None,
    cache_dir: Path | None = None,
    allow_synthetic: bool = True,
    performance_hint: str = "THROUGHPUT",
    num_requests: int = 0,
    inference_precision: str | None = None,
    static_batch_sizes: tuple[int, ...] = (1,),
    repository: Path | str | None = None,
    spec: ModelSpec | None = None,
    yield_ratio: float = 0.0,
    compiled_from: Path | None = None,
    use_compiled_cache: bool = True,
) -> Engine:
    """Load model `name` (weights dir, then cache, then a synthetic stand-in) and compile it.

    `weights_dir` is the settings' ``models.weights_dir`` (None: no such folder); `cache_dir` defaults to
    ``~/.cache/framestream/models``. `num_requests` 0 lets OpenVINO pick the optimal pool size.
    `inference_precision` None keeps the device default (bf16 where the CPU has it); "f32" for
    bit-faithful float math (contract checks). `static_batch_sizes` get an extra model compiled
    for exactly that batch size (faster; each costs one more compile at open). `spec` is the
    descriptor to load (a repository version, `ModelRepository.spec`); None: the serving version
    of `name` in `repository`, the settings' ``models.repository`` (None: its default folder; the
    caller names it, never the environment). `yield_ratio` > 0: after each compile, wait that many
    times as long as it took, so a version loaded beside one that serves leaves it most of the CPU
    (a compile takes every core). `compiled_from`: a folder an engine of the same model and
    settings was exported to (`Engine.export`): its compiled models are imported instead, with no
    graph built in this process. `use_compiled_cache` False compiles without OpenVINO's
    compiled-model cache: a model loaded from that cache cannot be exported again.
    """
    if any(n < 1 for n in static_batch_sizes):
        raise ValueError(f"static_batch_sizes must be >= 1, got {static_batch_sizes}")
    spec = spec if spec is not None else load_spec(name, repository)
    weights = Path(weights_dir) if weights_dir is not None else None
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    location = locate_model(spec, weights_dir=weights, cache_dir=cache, allow_synthetic=allow_synthetic)
    compiled_cache = cache / "compiled" if use_compiled_cache else None

    def paced(make: Any, *args: Any) -> Any:
        started = time.monotonic()
        compiled = make(*args, performance_hint, num_requests, inference_precision, compiled_cache)
        if yield_ratio > 0:
            time.sleep((time.monotonic() - started) * yield_ratio)
        return compiled

    sizes = sorted(set(static_batch_sizes))
    if compiled_from is not None:
        compiled = paced(import_model, compiled_from / _BLOB_DYNAMIC)
        static = {n: paced(import_model, compiled_from / _blob_static(n)) for n in sizes}
    else:
        model = prepare_model(read_model_file(location.path), spec)
        compiled = paced(compile_model, model)
        h, w = spec.input_hw
        static = {}
        for n in sizes:
            fixed = model.clone()
            fixed.reshape([n, h, w, 3])
            static[n] = paced(compile_model, fixed)
    labels = find_labels(spec, weights_dir=weights, cache_dir=cache)
    if location.synthetic:
        log.warning(
            "%s: SYNTHETIC stand-in with random weights (%s): its labels mean nothing", name, location.path
        )
    if labels.source is None:
        log.warning("%s: no labels file found; classes are named class_<i>", name)
    return Engine(spec, compiled, labels, location, num_requests, static)
