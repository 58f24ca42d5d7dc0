"""`loadtest replay`: publish replay files as M concurrent sources into a pipeline, open-loop.

Frames are published when the schedule says, whatever the pipeline is doing: when the pipeline
falls behind, frames queue in Redis and latency (measured from each frame's *due* time, which
is what ``capture_ms`` carries) rises; when publishing itself falls behind, the next frames go
out at once and their lateness is in the latency too. Nothing waits for a result before
sending the next frame, so there is no coordinated omission.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.collector import Collector, count_dead_letters, count_drops
from loadtest.replayfile import ReplayFile
from loadtest.schedule import Pace, Scheduler, pass_offsets_ms, source_slots
from loadtest.summary import summarize_run
from stream.adapters.redis.entries import Output, last_id
from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import Message, encode_message
from stream.core.keys import PipelineKeys
from stream.core.latency import LatencyHistogram
from stream.core.messages import EOS, FRAME

__all__ = ["Clip", "ReplayPlan", "Replayer", "SendLog", "load_clip", "run_replay"]

Progress = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True)
class Clip:
    """A replay file loaded into memory, ready to publish."""

    path: Path
    payloads: list[np.ndarray]
    encodings: list[str]
    labels: list[str | None]
    timestamps_ms: list[float]

    def __len__(self) -> int:
        return len(self.payloads)


def load_clip(path: str | Path) -> Clip:
    """Read every frame of a replay file (CRC-checked) into memory."""
    with ReplayFile(path) as rf:
        frames = list(rf)
    if not frames:
        raise ValueError(f"{path}: the replay file holds no frames")
    return Clip(
        Path(path),
        [f.payload() for f in frames],
        [f.encoding for f in frames],
        [f.label for f in frames],
        [f.timestamp_ms for f in frames],
    )


@dataclass(frozen=True)
class ReplayPlan:
    """Who plays what how fast: `sources` concurrent sources, source i playing clip i % len(clips).

    `duration_s` loops the clips until then; otherwise each source plays `loops` passes.
    `stagger` spreads the sources' start over one frame interval so they do not fire together.
    """

    sources: int = 1
    pace: Pace = field(default_factory=Pace)
    duration_s: float | None = None
    loops: int = 1
    stagger: bool = True
    source_prefix: str = field(default_factory=lambda: f"lt-{secrets.token_hex(3)}")
    lead_ms: float = 100.0

    def __post_init__(self) -> None:
        if self.sources < 1:
            raise ValueError(f"sources must be >= 1, got {self.sources}")

    def source_names(self) -> list[str]:
        return [f"{self.source_prefix}-{i}" for i in range(self.sources)]


@dataclass
class SendLog:
    """What was published: frames per source, each frame's due time (epoch ms), how late sends were."""

    start_epoch_ms: float
    sent: dict[str, int]
    due_epoch_ms: list[float] = field(default_factory=list)
    send_lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    finished_monotonic: float | None = None

    @property
    def total(self) -> int:
        return sum(self.sent.values())


class Replayer:
    """Publishes the plan's schedule through `transport` onto the frames stream."""

    def __init__(
        self,
        transport: StreamTransport,
        keys: PipelineKeys,
        plan: ReplayPlan,
        clips: Sequence[Clip],
        *,
        batch: int = 64,
    ) -> None:
        if not clips:
            raise ValueError("need at least one clip to replay")
        self.transport = transport
        self.keys = keys
        self.plan = plan
        self.clips = list(clips)
        self.batch = batch
        self.names = plan.source_names()
        self.log = SendLog(0.0, {n: 0 for n in self.names})

    def clip_of(self, source_index: int) -> Clip:
        return self.clips[source_index % len(self.clips)]

    def _scheduler(self) -> Scheduler:
        iters = []
        for i in range(self.plan.sources):
            clip = self.clip_of(i)
            phase_ms = 0.0
            if self.plan.stagger and self.plan.pace.mode != "max":
                _, period = pass_offsets_ms(clip.timestamps_ms, self.plan.pace)
                phase_ms = (period / len(clip)) * i / self.plan.sources
            iters.append(
                source_slots(
                    clip.timestamps_ms,
                    self.plan.pace,
                    source=i,
                    duration_s=self.plan.duration_s,
                    loops=self.plan.loops,
                    phase_ms=phase_ms,
                )
            )
        return Scheduler(iters)

    def _frame(self, source: int, seq: int, frame: int, due_epoch_ms: float, now_ms: float) -> bytes:
        clip = self.clip_of(source)
        meta = {
            "kind": FRAME,
            "source": self.names[source],
            "seq": seq,
            "capture_ms": due_epoch_ms,
            "ingest_ms": now_ms,
            "encoding": clip.encodings[frame],
            "label": clip.labels[frame],
            "stamps": {"ingest": [due_epoch_ms, now_ms]},
        }
        return encode_message(Message(meta, clip.payloads[frame]))

    async def run(self, progress: Progress | None = None, progress_every_s: float = 0.5) -> SendLog:
        """Publish every scheduled frame, then an end-of-stream marker per source."""
        scheduler = self._scheduler()
        lead_s = self.plan.lead_ms / 1000.0
        t0 = time.monotonic() + lead_s
        self.log.start_epoch_ms = time.time() * 1000.0 + self.plan.lead_ms
        next_report = 0.0
        while not scheduler.done:
            now_ms = (time.monotonic() - t0) * 1000.0
            due = scheduler.take_due(now_ms, self.batch)
            if not due:
                nxt = scheduler.next_due_ms()
                assert nxt is not None
                await asyncio.sleep(min(max(nxt - now_ms, 0.0) / 1000.0, 0.05))
            else:
                epoch_now = time.time() * 1000.0
                outputs = []
                for slot in due:
                    due_epoch = self.log.start_epoch_ms + slot.due_ms
                    outputs.append(
                        Output(
                            self.keys.for_source(self.names[slot.source]).frames,
                            self._frame(slot.source, slot.seq, slot.frame, due_epoch, epoch_now),
                        )
                    )
                    self.log.due_epoch_ms.append(due_epoch)
                    self.log.send_lag.record(max(0.0, now_ms - slot.due_ms))
                await self.transport.publish(outputs)
                for slot in due:
                    self.log.sent[self.names[slot.source]] += 1
            if progress is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + progress_every_s
                progress({"sent": self.log.total, "elapsed_s": max(0.0, time.monotonic() - t0)})
        eos = [
            Output(
                self.keys.for_source(n).frames, encode_message(Message({"kind": EOS, "source": n, "seq": c}))
            )
            for n, c in self.log.sent.items()
        ]
        await self.transport.publish(eos)
        self.log.finished_monotonic = time.monotonic()
        return self.log


async def run_replay(
    client: Any,
    keys: PipelineKeys,
    clips: Sequence[Clip],
    plan: ReplayPlan,
    *,
    model: str | None = None,
    settle_s: float = 5.0,
    hard_timeout_s: float = 120.0,
    slo: Mapping[str, float | None] | None = None,
    config: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Replay `clips` per `plan` into the pipeline at `client`, collect, and summarise.

    After the last send, results are awaited until every frame has one, or none arrived for
    `settle_s`, or `hard_timeout_s` passed; frames still without a result then count as missing.
    """
    transport = StreamTransport(client, keys, stage="loadtest")
    replayer = Replayer(transport, keys, plan, clips)
    names = replayer.names
    dead_start = {k.dead: await last_id(client, k.dead) for k in keys.all_partitions}
    index = {n: i for i, n in enumerate(names)}

    def truth(source: str, seq: int) -> str | None:
        clip = replayer.clip_of(index[source])
        return clip.labels[seq % len(clip)]

    collector = Collector(client, keys, names, "$", model=model, truth=truth)
    await collector.reader.start()  # every partition's results from now on

    def report(state: Mapping[str, Any]) -> None:
        if progress is not None:
            progress({**state, "results": collector.distinct, "expected": None})

    send = asyncio.create_task(replayer.run(report))

    def expected() -> int | None:
        if send.done():
            return 0 if send.exception() else replayer.log.total
        return None

    collect = asyncio.create_task(
        collector.run_until(send.done, expected=expected, settle_s=settle_s, hard_s=hard_timeout_s)
    )
    while not collect.done():
        await asyncio.wait([collect], timeout=0.5)
        if progress is not None and send.done():
            progress(
                {
                    "sent": replayer.log.total,
                    "results": collector.distinct,
                    "expected": replayer.log.total,
                    "settling": True,
                }
            )
    await collect
    log = await send
    dead, dead_unknown = await count_dead_letters(client, keys, names, start_ids=dead_start)
    dropped = await count_drops(client, keys, names)
    run_config = {
        "sources": plan.sources,
        "source_prefix": plan.source_prefix,
        "pace": plan.pace.describe(),
        "duration_s": plan.duration_s,
        "loops": plan.loops,
        "clips": [str(c.path) for c in clips],
        "frames_stream": keys.frames,
        "model": model,
        **(config or {}),
    }
    summary = summarize_run(
        config=run_config,
        sent=log.sent,
        sent_due_ms=log.due_epoch_ms,
        start_ms=log.start_epoch_ms,
        received=collector.rows,
        dead_lettered=dead,
        dropped=dropped,
        slo=slo,
    )
    summary["send"] = {"lag": log.send_lag.summary(), "eos_results": sorted(collector.eos)}
    summary["delivery"]["dead_unattributed"] = dead_unknown
    summary["delivery"]["undecodable_results"] = collector.undecodable
    return summary
