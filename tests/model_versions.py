"""Versions of one model in a model repository, for tests of version swaps and shadows.

Each version is a synthetic stand-in of the seed ``mobilenet-v1-0.25-128`` (its descriptor,
OpenVINO IR) built with its own random weights, so two versions answer differently on the same
frame; a broken version has a model file that is not a model.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from redis.exceptions import ResponseError

from stream.core.codec import Message, decode_message
from stream.core.keys import FIELD
from stream.waiting import cancel_and_wait
from stream.zoo.repository import ModelRepository, seeds_dir
from stream.zoo.synthetic import build_synthetic
from tests.waiting import until

__all__ = ["BASE", "StreamTap", "add_version", "offline_scores"]

BASE = "mobilenet-v1-0.25-128"


def add_version(
    repository: ModelRepository,
    name: str,
    *,
    seed: int,
    activate: bool = True,
    broken: bool = False,
    labels: list[str] | None = None,
) -> int:
    """Write the next version of `name` (weights from `seed`); its number."""
    raw = yaml.safe_load((seeds_dir() / BASE / "model.yml").read_text(encoding="utf-8"))
    raw.update(framework="openvino", model_file="model.xml", synthetic=False, files=[])
    raw.pop("accuracy", None)
    with repository.new_version(name, activate=activate) as new:
        if broken:
            (new.folder / "model.xml").write_text("<net>not a model</net>", encoding="utf-8")
        else:
            built = build_synthetic(BASE, new.folder / "ir", seed=seed)
            for part in built.parent.iterdir():
                part.rename(new.folder / part.name)
            (new.folder / "ir").rmdir()
        if labels is not None:
            (new.folder / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        (new.folder / "model.yml").write_text(yaml.safe_dump(raw), encoding="utf-8")
        return new.version


def offline_scores(
    repository: ModelRepository, name: str, version: int, tensors: np.ndarray, cache: Path
) -> np.ndarray:
    """float16 scores of `version` on uint8 [N, h, w, 3] `tensors`, one frame per request (OpenVINO
    directly, no pipeline)."""
    from stream.adapters.openvino.engine import open_engine

    spec = repository.spec(name, version)
    with open_engine(name, spec=spec, cache_dir=cache) as engine:
        return np.concatenate([engine.infer(t[None]) for t in tensors]).astype(np.float16)


class StreamTap:
    """Every entry of one stream, read in a background task through a consumer group of its own
    (``tap``, NOACK): takes nothing from the pipeline's groups, and the stages' trim of acked
    entries waits for it as for any group (a cursor read by XREAD fell behind the trim on a busy
    machine and missed entries)."""

    GROUP = "tap"

    def __init__(self, client: Any, stream: str) -> None:
        self.client, self.stream = client, stream
        self.messages: list[Message] = []
        self._task: asyncio.Task[None] | None = None
        self._last: Any = "0"

    async def __aenter__(self) -> StreamTap:
        try:
            await self.client.xgroup_create(self.stream, self.GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        await cancel_and_wait([self._task])
        await self._read(once=True)
        await self.client.xgroup_destroy(self.stream, self.GROUP)

    async def _read(self, once: bool = False) -> None:
        while True:
            reply = await self.client.xreadgroup(
                self.GROUP, "tap", {self.stream: ">"}, count=500, block=None if once else 100, noack=True
            )
            for _, items in reply or []:
                for entry_id, fields in items:
                    self._last = entry_id
                    self.messages.append(decode_message(fields[FIELD.encode()]))
            if once and not reply:
                return

    async def catch_up(self) -> None:
        """Wait until the tap has read up to the stream's last entry now."""
        newest = await self.client.xrevrange(self.stream, count=1)
        if not newest:
            return
        last = newest[0][0]

        def parts(entry_id: Any) -> tuple[int, ...]:
            raw = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            return tuple(int(p) for p in raw.split("-")) if raw != "0" else (0, 0)

        await until(lambda: parts(self._last) >= parts(last), timeout_s=30, what=f"{self.stream} read")

    def of_kind(self, kind: str) -> list[Message]:
        return [m for m in self.messages if m.meta.get("kind") == kind]

    def metas(self, kind: str) -> list[dict[str, Any]]:
        return [dict(m.meta) for m in self.of_kind(kind)]
