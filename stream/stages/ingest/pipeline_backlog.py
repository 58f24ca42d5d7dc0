"""How far the pipeline is behind ingest, read from the consumer groups in Redis, and which models
read the frames (so ingest knows what ``frame_short_side_px: auto`` means).

Ingest pauses file sources on `PipelineBacklog.of_partition` and reports `PipelineBacklog.slowest`
to the autoscaler; both read every consumer group of the streams involved (``XINFO GROUPS``). A
sink with ``on_full: pause`` over its ``max_backlog`` counts as a backlog above any high-water
mark (`SINK_FULL`): file sources wait, live sources drop by their policy (counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stream.adapters.media.image import model_input
from stream.adapters.redis.sink_backlog import SinkPause
from stream.adapters.redis.streams import GroupStats, StreamTransport
from stream.core.geometry import ModelInput, source_short_side
from stream.core.keys import PipelineKeys
from stream.errors import ModelError
from stream.settings import SinkSettings
from stream.zoo.repository import ModelRepository

__all__ = ["SINK_FULL", "PipelineBacklog", "auto_fit", "auto_short_side", "reading_models"]

SINK_FULL = 2**62
"""`PipelineBacklog.of_partition` while a pausing sink is full: above every high-water mark."""


class PipelineBacklog:
    """The backlog of the frames stream and of each model's chain after it, over every partition;
    `readers`, `auto_short_side_px` and `auto_fit` follow the frames stream's consumer groups as
    it reads them."""

    def __init__(
        self,
        client: Any,
        keys: PipelineKeys,
        transport: StreamTransport,
        repository: ModelRepository,
        sinks: Sequence[SinkSettings] = (),
    ) -> None:
        self.repository = repository
        self.client = client
        self.keys = keys
        self.transport = transport
        self.sinks = SinkPause(client, keys, sinks)
        self.readers: tuple[str, ...] = ()
        self.auto_short_side_px: int | None = None  # what `frame_short_side_px: auto` means now
        self.auto_fit: ModelInput | None = None  # the input every reading model shares, if one

    async def slowest(self) -> GroupStats:
        """The frames stream's slowest consumer group (lag + pending), or its length with no group;
        with several partitions, that of the partition furthest behind."""
        parts = [await self._frames_backlog(keys) for keys in self.keys.all_partitions]
        return max(parts, key=lambda s: s.backlog)

    async def of_partition(self, keys: PipelineKeys) -> int:
        """Frames not yet through the pipeline: per model, the frames its preprocess has not taken
        plus the tensors its infer and the scores its postprocess have not (the largest such sum
        over the models). File sources pause on this, so a slow stage cannot pile up entries
        without bound behind faster ones (v2 tensors are 150 KB each; a stalled postprocess would
        otherwise let scores grow for as long as the source lasts). A sum, not the largest single
        backlog: with the largest, each stage could hold up to the mark at once, so what a fast
        stage moved on while ingest published again overshot it. Streams are read upstream first:
        a frame moving on between two reads is counted twice, never missed. Per partition
        (`keys`): a source waits on its own partition only. While a sink with ``on_full: pause``
        is full, `SINK_FULL`."""
        if await self.sinks.full():
            return SINK_FULL
        if keys.index != 0:
            await self._frames_groups(keys.partition(0))  # keep `readers` current
        groups = {s.group: s.backlog for s in await self._frames_groups(keys)}
        backlog = max(groups.values()) if groups else int(await self.client.xlen(keys.frames))
        for model in reading_models(self.readers):
            chain = groups.get(PipelineKeys.group("preprocess", model), backlog)
            for stream in (keys.tensors(model), keys.scores(model)):
                stats = await self.transport.all_group_stats(stream)
                chain += max((s.backlog for s in stats if not _shadow(s.group)), default=0)
            backlog = max(backlog, chain)
        return backlog

    def straight_models(self, chosen: tuple[str, ...] | None) -> tuple[str, ...]:
        """The models whose tensors streams a frame ingest made to `auto_fit` may go straight
        into, skipping preprocess (`IngestSettings.straight_to_tensors`): every model reading the
        frames stream, or the source's own `chosen` ones when all of them read it; none while
        the reading models have different inputs."""
        if self.auto_fit is None:
            return ()
        readers = reading_models(self.readers)
        if chosen is not None:
            if not set(chosen) <= set(readers):
                return ()
            readers = [model for model in readers if model in chosen]
        return tuple(readers)

    async def preprocess_done(self, keys: PipelineKeys, models: tuple[str, ...]) -> bool:
        """Whether the preprocess group of each of `models` in partition `keys` has taken and
        passed on every entry of the frames stream (none left unread or pending)."""
        groups = {s.group: s.backlog for s in await self._frames_groups(keys)}
        return all(groups.get(PipelineKeys.group("preprocess", model)) == 0 for model in models)

    async def _frames_backlog(self, keys: PipelineKeys) -> GroupStats:
        groups = await self._frames_groups(keys)
        if not groups:
            return GroupStats(
                keys.frames, "", lag=int(await self.client.xlen(keys.frames)), pending=0, consumers=0
            )
        return max(groups, key=lambda s: s.backlog)

    async def _frames_groups(self, keys: PipelineKeys) -> list[GroupStats]:
        """Every consumer group of `keys.frames`; partition 0's also tell which models read."""
        stats = await self.transport.all_group_stats(keys.frames)
        if keys.index == 0:
            self._note_readers([s.group for s in stats])
        return stats

    def _note_readers(self, groups: list[str]) -> None:
        """Work out ``frame_short_side_px: auto`` from the frames stream's consumer groups."""
        readers = tuple(sorted(groups))
        if readers != self.readers:
            self.readers = readers
            self.auto_short_side_px = auto_short_side(readers, self.repository)
            self.auto_fit = auto_fit(readers, self.repository)


def _shadow(group: str) -> bool:
    """A shadow version's group (`stream.stages.infer.shadow`): it compares a candidate and
    never holds sources back; what it has not read yet only waits in the tensors stream."""
    return group.startswith("shadow:")


def reading_models(groups: tuple[str, ...] | list[str]) -> list[str]:
    """The models whose preprocess group (``preprocess:<model>``) is among the frames stream's
    consumer `groups`, in their order."""
    parts = (group.partition(":") for group in groups)
    return [model for stage, _, model in parts if stage == "preprocess" and model]


def auto_short_side(groups: tuple[str, ...] | list[str], repository: ModelRepository) -> int | None:
    """The shorter side frames need for every model whose preprocess group reads the frames
    stream (``preprocess:<model>``); None (keep frames as they are) with no such group or with a
    model this process does not know."""
    needs = []
    for model in reading_models(groups):
        try:
            spec = repository.spec(model)
        except ModelError:
            return None
        needs.append(source_short_side(spec.input_hw, spec.resize, spec.resize_shorter))
    return max(needs) if needs else None


def auto_fit(groups: tuple[str, ...] | list[str], repository: ModelRepository) -> ModelInput | None:
    """The one model input (size and fitting rule) of every model whose preprocess group reads
    the frames stream, so ingest can make frames to exactly it; None when they differ, with no
    such group, or with a model this process does not know."""
    inputs = set()
    for model in reading_models(groups):
        try:
            inputs.add(model_input(repository.spec(model)))
        except ModelError:
            return None
    return inputs.pop() if len(inputs) == 1 else None
