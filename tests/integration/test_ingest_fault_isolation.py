"""One source that cannot be played, whatever the file system or decoder says about it, fails
alone: its status is ``failed`` with the reason and an event says so, while the ingest loop and
every other source keep playing (real redis-server, real decoding with PyAV). In the other
stages, an exception that belongs to one entry makes that entry a dead letter; the loop goes on."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.adapters.media.video import Frame, register_source_kind, write_demo_clip
from stream.adapters.redis.dead_letters import DeadLetters
from stream.adapters.redis.entries import Entry
from stream.adapters.redis.server import RedisServer
from stream.adapters.redis.source_registry import SourceStatus, add_source, list_sources
from stream.adapters.redis.streams import connect
from stream.core.codec import Message, decode_message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.settings import load_settings
from stream.stages.base import ConsumerStage, Handled
from stream.stages.ingest.stage import IngestStage
from tests.waiting import poll

KEYS = PipelineKeys()
GOOD = ("good-0", "good-1", "good-2")


class _VanishingDevice:
    """A source whose device goes away after a few frames: the read raises ENODEV, as a
    capture card or a disk that is unplugged does."""

    live = False

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.left = 5

    def read(self) -> Frame | None:
        if self.left == 0:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        self.left -= 1
        return Frame(rgb=np.zeros((48, 64, 3), np.uint8), pts_ms=float(5 - self.left) * 40.0)

    def close(self) -> None:
        pass


def _denied(rest: str) -> Any:
    # the tests run as root, for whom chmod 000 denies nothing: the error a plugin opening a file
    # without the right gets, raised as the OS raises it
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), rest)


def _broken_plugin(rest: str) -> Any:
    raise RuntimeError(f"plugin bug on {rest}")


@pytest.fixture
def bad_sources(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Source id -> (uri, a part of the reason its status must give)."""
    clip = write_demo_clip(tmp_path / "whole.mp4", frames=30, size=(160, 120))
    data = clip.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(64 * 1024))
    (tmp_path / "empty-dir").mkdir()
    os.mkfifo(tmp_path / "fifo.mp4")  # no writer ever: a plain open would block for good
    os.mkfifo(tmp_path / "fifo.jpg")
    unreadable = tmp_path / "unreadable.mp4"
    unreadable.write_bytes(data)
    unreadable.chmod(0)
    register_source_kind("vanishing", _VanishingDevice)
    register_source_kind("denied", _denied)
    register_source_kind("broken", _broken_plugin)
    return {
        "too-long": (str(tmp_path / ("A" * 256)), "too long"),
        "too-long-video": (str(tmp_path / ("A" * 300)) + ".mp4", "too long"),
        "directory": (str(tmp_path / "empty-dir"), "no image files"),
        "fifo": (str(tmp_path / "fifo.mp4"), "not a regular file"),
        "fifo-image": (str(tmp_path / "fifo.jpg"), "no image files"),
        "truncated": (str(tmp_path / "truncated.mp4"), "truncated.mp4"),
        "garbage": (str(tmp_path / "garbage.mp4"), "garbage.mp4"),
        "vanished": ("vanishing:card0", "No such device"),
        "denied": (f"denied:{unreadable}", "Permission denied"),
        "plugin-bug": ("broken:x", "RuntimeError: plugin bug on x"),
    }


@pytest.fixture
async def ingest(
    redis_server: RedisServer, redis_client: Any
) -> AsyncIterator[tuple[IngestStage, asyncio.Task]]:
    # no stage reads the frames here: a high-water mark this high never holds the sources back
    settings = load_settings(ingest={"high_water": 1_000_000})
    client = await connect(redis_server.url)
    stage = IngestStage(settings, client, consumer="ingest-0", scan_interval_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    yield stage, task
    stop.set()
    await asyncio.wait_for(task, 30)
    await client.aclose()


async def _sources(client: Any) -> dict[str, SourceStatus]:
    return {s.source_id: s for s in await list_sources(client, KEYS)}


async def _failed_events(client: Any) -> dict[str, str]:
    metas = [decode_message(f[FIELD.encode()]).meta for _, f in await client.xrange(KEYS.events)]
    return {m["source"]: m.get("reason") or "" for m in metas if m.get("status") == "failed"}


async def test_each_bad_source_fails_alone_and_the_good_ones_keep_playing(
    redis_client: Any,
    ingest: tuple[IngestStage, asyncio.Task],
    bad_sources: dict[str, tuple[str, str]],
    tmp_path: Path,
) -> None:
    stage, task = ingest
    clip = write_demo_clip(tmp_path / "good.mp4", frames=50, size=(160, 120))
    for source in GOOD:  # played at the clip's own pace, over and over
        await add_source(redis_client, KEYS, source, {"uri": str(clip), "loop": True, "realtime": True})

    async def good_playing(at_least: dict[str, int]) -> bool:
        sources = await _sources(redis_client)
        return all(
            s in sources and sources[s].status == "playing" and sources[s].frames >= at_least.get(s, 1)
            for s in GOOD
        )

    assert await poll(lambda: good_playing({}), timeout_s=30), "the good sources never played"
    for source, (uri, _) in bad_sources.items():
        await add_source(redis_client, KEYS, source, {"uri": uri})

    async def all_bad_failed() -> bool:
        sources = await _sources(redis_client)
        return all(s in sources and sources[s].status == "failed" for s in bad_sources)

    assert await poll(all_bad_failed, timeout_s=60), {
        s: (v.status, v.reason) for s, v in (await _sources(redis_client)).items()
    }
    sources = await _sources(redis_client)
    events = await _failed_events(redis_client)
    for source, (_, expected) in bad_sources.items():
        assert expected in (sources[source].reason or ""), (source, sources[source].reason)
        assert expected in events.get(source, ""), (source, events.get(source))
    assert len(sources["too-long"].reason or "") < 1000  # the 256-character name is cut short

    # the loop lived through all of it, and the good sources play on at their pace
    assert not task.done()
    frames_then = {s: sources[s].frames for s in GOOD}
    more = {s: n + 25 for s, n in frames_then.items()}  # one more second of the 25 fps clip each
    assert await poll(lambda: good_playing(more), timeout_s=30), "the good sources stopped"
    assert not task.done() and stage.processed > 0


class _ChokesOnOne(ConsumerStage):
    """Acks every frame but the one whose seq is 3, on which its handler raises (a bug that
    belongs to that entry)."""

    name = "choosy"

    async def handle(self, items: list[tuple[Entry, Message]]) -> Handled:
        for _, message in items:
            if message.meta["seq"] == 3:
                raise ValueError("cannot handle seq 3")
        return Handled(acks=[entry for entry, _ in items])


async def test_an_exception_for_one_entry_dead_letters_that_entry_and_the_loop_goes_on(
    redis_server: RedisServer, redis_client: Any
) -> None:
    settings = load_settings()
    client = await connect(redis_server.url)
    stage = _ChokesOnOne(settings, client, consumer="c0", stream_of=lambda k: k.frames, group="choosy")
    await stage.start()
    for seq in range(8):
        await redis_client.xadd(
            KEYS.frames, {FIELD: encode_message(Message(meta={"source": "s", "seq": seq}))}
        )
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    assert await poll(lambda: stage.processed >= 8, timeout_s=20), stage.processed
    assert not task.done()
    letters = await DeadLetters(redis_client, KEYS).newest(limit=10)
    assert [(r.stage, r.reason) for r in letters] == [
        ("choosy", "choosy failed: ValueError: cannot handle seq 3")
    ]
    pending = await redis_client.xpending(KEYS.frames, "choosy")
    assert pending["pending"] == 0  # the other seven were acked
    stop.set()
    await asyncio.wait_for(task, 30)
    await client.aclose()
