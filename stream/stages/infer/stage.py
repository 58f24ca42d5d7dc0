"""infer: dynamic batching onto an OpenVINO engine, several batches in flight.

Reads up to `max_batch_size` tensors, waits at most `max_wait_ms` for more (policy in
`stream.core.batching`), runs one batched request per batch with up to `infer.inflight` batches in
flight, and emits float16 probabilities with `batch_size`, `batch_wait_ms` and `model_version` in
the meta.

The version served follows the model repository (`stream.stages.infer.versions`): a new active
version is loaded and warmed off the event loop, then swapped in between two batches (each batch
runs whole on the engine it started with); a shadow version runs beside it
(`stream.stages.infer.shadow`).

Redis rounds XREADGROUP BLOCK timeouts up to its cron tick (100 ms at the default hz 10), far
coarser than `max_wait_ms`, so while a partial batch waits the loop polls without blocking and
sleeps on the event loop instead.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from stream.adapters.metrics import metrics
from stream.adapters.redis.entries import DeadLetter, Entry, Output
from stream.core.batching import BatchBuffer, BatchPolicy, batch_buckets, padded_size
from stream.core.codec import Message, encode_message
from stream.core.keys import PipelineKeys
from stream.core.messages import EOS, FRAME, SKIP
from stream.settings import Settings
from stream.stages.base import Handled, StageBase, now_ms, skip_marker, undecoded_frame
from stream.stages.infer.batch_tuning import tuned_batch_size
from stream.zoo.descriptors import ModelSpec
from stream.zoo.repository import ModelRepository

__all__ = ["InferStage", "held_at_most", "open_stage_engine"]

_POLL_S = 0.001
_MIN_READ_AHEAD = 16


def open_stage_engine(
    settings: Settings,
    model: str,
    spec: ModelSpec,
    *,
    yield_ratio: float = 0.0,
    compiled_from: Path | None = None,
    use_compiled_cache: bool = True,
) -> Any:
    """Compile `spec` (a version of `model`) the way the infer settings ask (`yield_ratio`,
    `compiled_from` and `use_compiled_cache`: `open_engine`'s, for a version loaded while another
    serves)."""
    from stream.adapters.openvino.engine import open_engine

    return open_engine(
        model,
        spec=spec,
        yield_ratio=yield_ratio,
        compiled_from=compiled_from,
        use_compiled_cache=use_compiled_cache,
        weights_dir=settings.models.weights_dir,
        cache_dir=settings.models.cache_dir,
        performance_hint=settings.infer.performance_hint,
        num_requests=settings.infer.num_requests,
        static_batch_sizes=tuple(batch_buckets(settings.infer.max_batch_size))
        if settings.infer.static_batches
        else (1,),
    )


def held_at_most(max_batch_size: int, inflight: int) -> int:
    """Tensors one Infer replica holds at most: its batches in flight and what it reads ahead.
    It reads ahead that far so small batches (a tuned size of 2, say) still come from one Redis
    read per several batches instead of one per batch."""
    return max(max_batch_size * (inflight + 1), _MIN_READ_AHEAD)


class InferStage(StageBase):
    name = "infer"
    stage_group = "infer"

    def __init__(
        self, settings: Settings, client: aioredis.Redis, *, consumer: str, model: str, engine: Any = None
    ) -> None:
        super().__init__(
            settings,
            client,
            consumer=consumer,
            stream_of=lambda keys: keys.tensors(model),
            group=PipelineKeys.group(self.stage_group, model),
            model=model,
        )
        self.repository = ModelRepository(settings.models.repository)
        if engine is None:
            engine = open_stage_engine(settings, model, self.repository.spec(model))
        self.engine = engine
        """The engine new batches run on (a batch keeps the one it started with)."""
        self._inflight: dict[int, int] = {}
        """Batches running per engine (by id): a swapped-out engine is closed once it has none."""
        self.versions: Any = None
        """The version watch (`stream.stages.infer.versions`), made at the first `run`."""
        self.output = self.keys.scores(model)  # partition 0's; `_output` picks each entry's
        cfg = settings.infer
        self.policy = BatchPolicy(cfg.max_batch_size, cfg.max_wait_ms)
        self.inflight = cfg.inflight
        self.buckets = batch_buckets(cfg.max_batch_size)
        self._poll_s = max(_POLL_S, cfg.max_wait_ms / 4000.0)
        self._warm = False
        self.batches = 0
        self.batched_frames = 0
        self._failure: BaseException | None = None

    async def start(self) -> None:
        """Create the group, run every padded batch shape once per request (warm-up), then pick
        the batch size (`stream.stages.infer.batch_tuning`, once per model and machine).

        A dynamic-shape engine is slow on the first call with each new input shape (hundreds of
        ms to seconds); paying that here keeps it out of the first frames' latency.
        """
        await super().start()
        if self._warm:
            return
        h, w = self.engine.spec.input_hw
        requests = max(1, int(getattr(self.engine, "num_requests", 1)))
        for size in self.buckets:
            x = np.zeros((size, h, w, 3), np.uint8)
            for _ in range(2):
                await asyncio.gather(*[self.engine.infer_async(x) for _ in range(requests)])
        if self.settings.infer.batch_tuning and len(self.buckets) > 1:
            cache_file = self.settings.models.cache_dir / "compiled" / "batch-tuning.json"
            size = await tuned_batch_size(self.engine, self.buckets, cache_file, inflight=self.inflight)
            self.policy = BatchPolicy(size, self.policy.max_wait_ms)
            self.buckets = [b for b in self.buckets if b <= size]
        self._warm = True

    @property
    def version(self) -> int:
        """The model version new batches run on."""
        return int(getattr(self.engine, "version", 1))

    def batches_on(self, engine: Any) -> int:
        """Batches running on `engine` now."""
        return self._inflight.get(id(engine), 0)

    async def maintain(self) -> None:
        await super().maintain()
        if self.versions is not None:
            await self.versions.step()

    def _watch_versions(self) -> None:
        if self.versions is None:
            from stream.stages.infer.versions import VersionWatch

            self.versions = VersionWatch(self)

    async def run(self, stop: asyncio.Event) -> None:
        self._watch_versions()
        try:
            await self._run(stop)
        finally:
            if self.versions is not None:
                await self.versions.close()

    async def _run(self, stop: asyncio.Event) -> None:
        await self.start()
        self._failure = None  # run again after a Redis outage (`run_resilient`): start clean
        buffer: BatchBuffer[tuple[Entry, Message, float]] = BatchBuffer(self.policy)
        slots = asyncio.Semaphore(self.inflight)
        tasks: set[asyncio.Task[None]] = set()
        limit = held_at_most(self.policy.max_batch_size, self.inflight)
        try:
            while not stop.is_set():
                self.tick()
                if self._failure is not None:
                    raise self._failure
                wait_ms = buffer.wait_ms(_ms())
                if len(buffer) < limit and (wait_ms is None or wait_ms > 0):
                    block = self.settings.streams.block_ms if wait_ms is None else None
                    entries = await self.next_entries(limit - len(buffer), block)
                    if entries:
                        good, bad = self.transport.decode(entries)
                        await self.reject(bad)
                        arrived = _ms()
                        buffer.add([(e, m, now_ms()) for e, m in good], arrived)
                    elif wait_ms is not None:
                        # poll a few times per max_wait_ms: each poll costs a Redis round trip
                        await asyncio.sleep(min(self._poll_s, wait_ms / 1000.0))
                for batch in buffer.take_ready(_ms()):
                    await self._launch(batch, slots, tasks)
                if len(buffer) >= limit:
                    await asyncio.sleep(_POLL_S)  # every slot busy: let a batch finish
                await self.maintain()
            leftover, bad = self.transport.decode(await self.reader.finish())  # reads in flight (P > 1)
            await self.reject(bad)
            buffer.add([(e, m, now_ms()) for e, m in leftover], _ms())
            async with asyncio.timeout(self.settings.streams.drain_timeout_s):
                await self._drain(buffer, slots, tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _drain(
        self, buffer: BatchBuffer[tuple[Entry, Message, float]], slots: asyncio.Semaphore, tasks: set
    ) -> None:
        for batch in buffer.take_all():
            await self._launch(batch, slots, tasks)
        if tasks:
            await asyncio.gather(*list(tasks))

    async def _launch(self, batch: list, slots: asyncio.Semaphore, tasks: set[asyncio.Task[None]]) -> None:
        await slots.acquire()
        engine = self.engine  # the whole batch runs on it, even if a new version comes meanwhile
        self._inflight[id(engine)] = self._inflight.get(id(engine), 0) + 1
        task = asyncio.create_task(self._run_batch(batch, slots, engine))
        tasks.add(task)

        def _done(t: asyncio.Task[None]) -> None:
            tasks.discard(t)
            left = self._inflight.get(id(engine), 1) - 1
            if left > 0:
                self._inflight[id(engine)] = left
            else:
                self._inflight.pop(id(engine), None)
            if not t.cancelled() and t.exception() is not None and self._failure is None:
                self._failure = t.exception()

        task.add_done_callback(_done)

    async def _run_batch(
        self, batch: list[tuple[Entry, Message, float]], slots: asyncio.Semaphore, engine: Any
    ) -> None:
        try:
            await self.commit(await self._infer(batch, engine))
        finally:
            slots.release()

    async def _infer(self, batch: list[tuple[Entry, Message, float]], engine: Any) -> Handled:
        out = Handled()
        frames: list[tuple[Entry, Message, float]] = []
        bad: set[int] = set()
        h, w = engine.spec.input_hw
        for entry, message, arrived in batch:
            kind = message.meta.get("kind")
            if kind in (EOS, SKIP):
                continue
            reason = _bad_tensor(message, self.model or "", (h, w))
            if reason is None:
                frames.append((entry, message, arrived))
            else:
                bad.add(id(entry))
                self._bad(entry, message, reason, out)
        started = now_ms()
        probs = np.zeros((0, engine.spec.labels_count), np.float16)
        infer_ms = 0.0
        if frames:
            t0 = time.monotonic()
            size = padded_size(len(frames), self.buckets)
            x = np.zeros((size, h, w, 3), np.uint8)
            for i, (_, m, _) in enumerate(frames):
                x[i] = m.array
            probs = (await engine.infer_async(x))[: len(frames)].astype(np.float16)
            infer_ms = (time.monotonic() - t0) * 1000.0 / len(frames)
            metrics.stage_seconds(self.name, infer_ms / 1000.0)
            metrics.batch_size(self.model or "", len(frames))
            self.batches += 1
            self.batched_frames += len(frames)
        done = now_ms()
        scores = iter(probs)
        version = int(getattr(engine, "version", 1))
        for entry, message, arrived in batch:
            meta = dict(message.meta)
            kind = meta.get("kind")
            if kind in (EOS, SKIP):
                self._pass_on(entry, meta, out)
                out.acks.append(entry)
            elif id(entry) not in bad:
                meta["batch_size"] = len(frames)
                meta["batch_wait_ms"] = round(started - arrived, 3)
                meta["model_version"] = version
                meta["stamps"] = {**meta.get("stamps", {}), "infer": [arrived, done]}
                self._emit(entry, meta, next(scores), engine, infer_ms, out)
                out.acks.append(entry)
        return out

    def skips_for_undecodable(self, letters: list[DeadLetter]) -> list[Output]:
        """A tensor cut short (its header still said which frame it was) is skipped like a tensor
        that cannot be run: postprocess need not wait for it."""
        skips = []
        for letter in letters:
            meta = undecoded_frame(letter)
            if meta is not None:
                reason = f"infer {self.model}: {letter.reason}"
                skips.append(Output(self._output(letter.entry), skip_marker(meta, reason)))
        return skips

    def _bad(self, entry: Entry, message: Message, reason: str, out: Handled) -> None:
        """A tensor that cannot be run: a dead letter, and a skip marker so postprocess goes on."""
        out.dead.append(DeadLetter(entry, f"infer {self.model}: {reason}"))
        if "source" in message.meta and "seq" in message.meta:
            out.outputs.append(Output(self._output(entry), skip_marker(message.meta, reason)))

    def _pass_on(self, entry: Entry, meta: dict[str, Any], out: Handled) -> None:
        """An eos or skip marker goes on to postprocess as it came."""
        out.outputs.append(Output(self._output(entry), encode_message(Message(meta=meta))))

    def _emit(
        self,
        entry: Entry,
        meta: dict[str, Any],
        scores: np.ndarray,
        engine: Any,
        infer_ms: float,
        out: Handled,
    ) -> None:
        out.outputs.append(Output(self._output(entry), encode_message(Message(meta=meta, array=scores))))

    def _output(self, entry: Entry) -> str:
        return self.partition_keys(entry).scores(self.model or "")


def _bad_tensor(message: Message, model: str, hw: tuple[int, int]) -> str | None:
    meta = message.meta
    if meta.get("kind") != FRAME:
        return f"unknown message kind {meta.get('kind')!r}"
    if meta.get("model") not in (None, model):
        return f"tensor is for model {meta.get('model')!r}, this stage serves {model!r}"
    a = message.array
    if a is None or a.dtype != np.uint8 or a.shape != (hw[0], hw[1], 3):
        got = "no array" if a is None else f"{a.dtype} {a.shape}"
        return f"expected uint8 tensor {hw[0]}x{hw[1]}x3, got {got}"
    return None


def _ms() -> float:
    return time.monotonic() * 1000.0
