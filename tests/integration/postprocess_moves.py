"""A pipeline of real stage processes (``framestream stage``, as the processes runner starts them)
whose postprocess replicas come and go while three sources play: the scenario of
test_postprocess_state.

`play` runs one pipeline over P = 3 partitions (one source in each) and returns, per source, each
seq's first (smoothed label, smoothed score) at the sink, the end-of-stream counters, the closed
segments (every entry of the segments streams) and the number of results at each fault. With
`faults`, postprocess goes 1 -> 3 replicas, one of them is SIGKILLed, another stopped (SIGTERM)
and one is left: every partition changes owner at least twice mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from stream.adapters.redis.client import connect
from stream.adapters.redis.source_registry import SourceSpec, add_source
from stream.core.keys import PipelineKeys, partition_of
from stream.readers.results import ResultReader, decode_fields
from stream.runners.processes import StageProcess, _write_config, create_groups
from stream.settings import Settings
from tests.clips import SCENE_PHOTOS, read_photo, scene_frames, write_clip

V1 = "mobilenet-v1-0.25-128-quant"
SOURCES = ["cam-3", "cam-1", "cam-0"]  # crc32 % 3: partitions 0, 1, 2
FRAMES_PER_SCENE = 40
GROUP = PipelineKeys.group("postprocess", V1)


def make_clip(path: Path, images: Path) -> Path:
    """Six photo scenes of 40 frames each at 25 fps: the content, and so the label, changes."""
    frames = []
    for photo in SCENE_PHOTOS:
        frames += scene_frames(read_photo(images / photo), FRAMES_PER_SCENE, (320, 240))
    return write_clip(path, frames)


def scenario_settings(tmp: Path, weights: Path, pipeline: str, *, save_state: bool = True) -> Settings:
    """Infer one frame per request: a batch's composition changes the quantized scores by a step,
    and both runs must see the same scores for their smoothing to be comparable."""
    return Settings(
        streams={"pipeline": pipeline, "partitions": 3, "claim_idle_ms": 1_000, "block_ms": 50,
                 "drain_timeout_s": 5},
        infer={"max_batch_size": 1, "max_wait_ms": 0, "inflight": 2, "batch_tuning": False},
        postprocess={"reorder_max_wait_ms": 10_000, "hysteresis_frames": 3, "save_state": save_state},
        models={"weights_dir": weights, "cache_dir": tmp / "cache"},
    )  # fmt: skip


@dataclass
class Played:
    labels: dict[str, dict[int, tuple[str, float | None]]] = field(default_factory=dict)
    eos: dict[str, dict[str, Any]] = field(default_factory=dict)
    segments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per source, every entry of its partition's segments stream, in stream order."""
    faults_at: dict[str, int] = field(default_factory=dict)
    """Results at the sink when each fault came."""
    owners_seen: list[dict[int, str]] = field(default_factory=list)
    duplicates: int = 0
    frames: int = 0
    orphaned_s: float | None = None
    """Seconds from the SIGKILL until the killed replica's partition had a live owner again."""


class _Run:
    def __init__(self, url: str, settings: Settings, tmp: Path, played: Played) -> None:
        self.url, self.settings, self.tmp, self.played = url, settings, tmp, played
        tmp.mkdir(parents=True, exist_ok=True)
        self.keys = PipelineKeys(settings.streams.pipeline, settings.streams.partitions)
        self.procs: dict[str, StageProcess] = {}
        self.client: aioredis.Redis
        self.reader: ResultReader

    def _record(self, meta: Any, first: bool) -> None:
        source = str(meta["source"])
        if meta.get("kind") == "eos":
            self.played.eos[source] = dict(meta)
        elif first:
            value = (meta["smoothed_label"], meta["smoothed_score"])
            self.played.labels.setdefault(source, {})[int(meta["seq"])] = value

    def start(self, stage: str, consumer: str) -> StageProcess:
        config = self.tmp / "settings.yaml"
        if not config.exists():
            _write_config(self.settings, self.tmp)
        proc = StageProcess(stage, None if stage == "ingest" else V1, self.url, config, consumer)
        self.procs[consumer] = proc
        return proc

    @property
    def results(self) -> int:
        return self.reader.ledger.total().results

    async def until(self, what: str, cond: Callable[[], Awaitable[bool]], timeout_s: float = 60) -> None:
        """Keep reading results until `cond()`; fail naming `what` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not await cond():
            await self.reader.poll(block_ms=20)
            for name, proc in self.procs.items():
                code = proc.process.poll()
                assert code is None or name.startswith("pp-"), f"{name} exited with {code}"
            assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s ({self.results} results)"

    async def owners(self) -> dict[int, str]:
        """Partition -> the consumer holding its postprocess lease."""
        out = {}
        for k in self.keys.all_partitions:
            raw = await self.client.get(k.owner_lease(GROUP))
            if raw is not None:
                out[k.index] = raw.decode().split("/")[0]
        return out

    async def ready(self, *consumers: str) -> bool:
        return all([await self.client.hexists(self.keys.stage_ready, c) for c in consumers])

    def finished(self) -> bool:
        pairs = {(s, V1) for s in SOURCES}
        return self.reader.ledger.complete(pairs)


async def play(url: str, settings: Settings, tmp: Path, clip: Path, *, faults: bool) -> Played:
    assert sorted(partition_of(s, 3) for s in SOURCES) == [0, 1, 2]
    played = Played()
    run = _Run(url, settings, tmp, played)
    run.client = await connect(url)
    try:
        await create_groups(run.client, run.keys, [V1])
        run.reader = await ResultReader(
            run.client, run.keys, group="sink:check", start_id="0", on_result=run._record
        ).start()
        for stage in ("preprocess", "infer", "ingest"):
            run.start(stage, f"{stage}-0")
        run.start("postprocess", "pp-a")
        await run.until("stages ready", lambda: run.ready("preprocess-0", "infer-0", "ingest-0", "pp-a"), 120)
        await run.until("pp-a owns every partition", lambda: _owned_by(run, {"pp-a": 3}))
        for source in SOURCES:
            await add_source(run.client, run.keys, source, SourceSpec(uri=str(clip), realtime=True))
        if faults:
            await _faults(run, played)
        await run.until("every source complete", _async(run.finished), 120)
        played.duplicates = run.reader.ledger.total().duplicates
        for k in run.keys.all_partitions:  # written with the eos that closed the last: all there
            for _id, fields in await run.client.xrange(k.segments):
                meta = decode_fields(fields)
                assert meta is not None, fields
                played.segments.setdefault(str(meta["source"]), []).append(meta)
        played.frames = sum(int(e["frames"]) for e in played.eos.values())
        return played
    finally:
        for proc in run.procs.values():
            proc.terminate()
        for proc in run.procs.values():
            proc.wait(15)
        with contextlib.suppress(Exception):
            await run.reader.close()
        await run.client.aclose()


async def _faults(run: _Run, played: Played) -> None:
    """1 -> 3 replicas, SIGKILL one, SIGTERM another: 1 left."""
    await run.until("first results", _async(lambda: run.results >= 60))
    played.faults_at["scale to 3"] = run.results
    run.start("postprocess", "pp-b")
    run.start("postprocess", "pp-c")
    await run.until("one partition each", lambda: _owned_by(run, {"pp-a": 1, "pp-b": 1, "pp-c": 1}))
    played.owners_seen.append(await run.owners())
    await run.until("more results", _async(lambda: run.results >= played.faults_at["scale to 3"] + 150))
    played.faults_at["SIGKILL pp-b"] = run.results
    killed = time.monotonic()
    run.procs["pp-b"].process.kill()
    run.procs["pp-b"].process.wait()
    await run.until(
        "pp-b's partition taken over", lambda: _owned_by(run, {"pp-a": None, "pp-c": None}, total=3)
    )
    played.orphaned_s = time.monotonic() - killed
    played.owners_seen.append(await run.owners())
    await run.until("more results", _async(lambda: run.results >= played.faults_at["SIGKILL pp-b"] + 150))
    played.faults_at["SIGTERM pp-c"] = run.results
    run.procs["pp-c"].terminate()
    await run.until("pp-a owns everything again", lambda: _owned_by(run, {"pp-a": 3}))
    played.owners_seen.append(await run.owners())


async def _owned_by(run: _Run, counts: dict[str, int | None], total: int | None = None) -> bool:
    """Owners hold exactly `counts` partitions each (None: any number), and nobody else any;
    with `total`, that many partitions are owned."""
    owners = await run.owners()
    held = {c: sum(1 for o in owners.values() if o == c) for c in set(owners.values())}
    if set(held) - set(counts):
        return False
    if total is not None and len(owners) != total:
        return False
    return all(n is None or held.get(c, 0) == n for c, n in counts.items())


def _async(cond: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return cond()

    return check


async def play_sync(*args: Any, **kwargs: Any) -> Played:
    return await asyncio.wait_for(play(*args, **kwargs), 300)
