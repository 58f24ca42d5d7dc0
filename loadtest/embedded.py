"""A private pipeline for `loadtest replay --embedded`: a redis-server on a free port plus the
stage processes (`stream.runners.processes`, no Ray) for one model, warmed up before use.

The runner is started with no sources: the load tester publishes frames itself. Before the
context is entered, one warm-up frame must come back as a result, so the model is compiled and
every stage is reading when the measured replay starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from loadtest.collector import Collector
from stream.adapters.redis.client import connect
from stream.adapters.redis.entries import Output, last_id, text
from stream.adapters.redis.server import RedisServer
from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import Message, encode_message
from stream.core.keys import PipelineKeys
from stream.core.messages import EOS, FRAME
from stream.errors import ConfigError, FramestreamError
from stream.settings import Settings, load_settings

__all__ = ["EmbeddedPipeline", "embedded_settings"]


def embedded_settings(
    base: Settings | None = None, *, pipeline: str = "p", weights_dir: Path | None = None
) -> Settings:
    """`base` (or the environment's settings) with this pipeline name and weights directory."""
    s = base or load_settings()
    models = s.models if weights_dir is None else s.models.model_copy(update={"weights_dir": weights_dir})
    return s.model_copy(
        update={"streams": s.streams.model_copy(update={"pipeline": pipeline}), "models": models}
    )


class EmbeddedPipeline:
    """``async with EmbeddedPipeline(model=...) as emb:`` -> `emb.url` is a warm pipeline."""

    def __init__(
        self,
        *,
        model: str | None = None,
        weights_dir: Path | None = None,
        pipeline: str = "p",
        settings: Settings | None = None,
        warmup_timeout_s: float = 180.0,
    ) -> None:
        self.settings = embedded_settings(settings, pipeline=pipeline, weights_dir=weights_dir)
        self.model = model or self.settings.models.default
        self.keys = PipelineKeys(self.settings.streams.pipeline)
        self.warmup_timeout_s = warmup_timeout_s
        self.server: RedisServer | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None

    @property
    def url(self) -> str:
        if self.server is None:
            raise ConfigError("the embedded pipeline is not running")
        return self.server.url

    async def __aenter__(self) -> EmbeddedPipeline:
        from stream.runners.processes import run_processes

        self.server = RedisServer().start()
        try:
            self._task = asyncio.create_task(
                run_processes(self.settings, redis_url=self.server.url, sources=[], models=[self.model],
                              stop=self._stop)
            )  # fmt: skip
            await self._warm_up()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _warm_up(self) -> None:
        """Publish one frame and wait for its result (model compiled, every stage reading)."""
        client = await connect(self.url)
        try:
            deadline = time.monotonic() + 30
            while not await _groups_exist(client, self.keys, self.model):
                self._check_task()
                if time.monotonic() > deadline:
                    raise FramestreamError("the stage processes did not create their consumer groups in 30 s")
                await asyncio.sleep(0.05)
            source = f"lt-warmup-{secrets.token_hex(3)}"
            collector = Collector(client, self.keys, [source], await last_id(client, self.keys.results))
            frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
            now = time.time() * 1000.0
            meta = {"kind": FRAME, "source": source, "seq": 0, "capture_ms": now, "ingest_ms": now,
                    "encoding": "raw", "label": None, "stamps": {"ingest": [now, now]}}  # fmt: skip
            await StreamTransport(client, self.keys, stage="loadtest").publish(
                [
                    Output(self.keys.frames, encode_message(Message(meta, frame))),
                    Output(
                        self.keys.frames, encode_message(Message({"kind": EOS, "source": source, "seq": 1}))
                    ),
                ]
            )
            deadline = time.monotonic() + self.warmup_timeout_s
            while collector.distinct < 1:
                self._check_task()
                if time.monotonic() > deadline:
                    raise FramestreamError(
                        f"no warm-up result from the {self.model} pipeline "
                        f"within {self.warmup_timeout_s:.0f} s"
                    )
                await collector.poll()
        finally:
            await client.aclose()

    def _check_task(self) -> None:
        if self._task is not None and self._task.done():
            exc = self._task.exception()
            raise FramestreamError(f"the stage processes stopped: {exc}") from exc

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.streams.drain_timeout_s + 30):
                    await self._task
            self._task = None
        if self.server is not None:
            self.server.close()
            self.server = None


async def _groups_exist(client: Any, keys: PipelineKeys, model: str) -> bool:
    wanted = [
        (keys.frames, keys.group("preprocess", model)),
        (keys.tensors(model), keys.group("infer", model)),
        (keys.scores(model), keys.group("postprocess", model)),
    ]
    for stream, group in wanted:
        try:
            groups = await client.xinfo_groups(stream)
        except Exception:  # noqa: BLE001 - no such key yet
            return False
        names = {text(g["name"]) for g in groups}
        if group not in names:
            return False
    return True
