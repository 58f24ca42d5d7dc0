"""The processes runner reads the results through a consumer group of its own.

Another reader in a group the run shared (``sink``, which any tool may read with) would take its
share of the results: the run's summary would miss those results and, when the other reader took
the end-of-stream, the run would wait for it until its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path

import pytest

from stream.adapters.redis.client import connect
from stream.adapters.redis.server import RedisServer
from stream.core.keys import PipelineKeys
from stream.core.sources.ids import source_id
from stream.readers.results import SINK_GROUP, ResultReader
from stream.runners.processes import run_processes
from tests.faults.conftest import MODEL, fault_settings
from tests.faults.frames import write_frame_folder
from tests.waiting import poll

pytestmark = [pytest.mark.faults, pytest.mark.slow]

FRAMES = 400


async def test_a_reader_in_group_sink_takes_nothing_from_the_run(
    redis_server: RedisServer, model_cache: Path, tmp_path: Path
) -> None:
    base = fault_settings(model_cache)
    pipeline = f"own-{secrets.token_hex(3)}"
    settings = base.model_copy(update={"streams": base.streams.model_copy(update={"pipeline": pipeline})})
    keys = PipelineKeys(pipeline)
    folder = write_frame_folder(tmp_path / "clip", FRAMES)
    source = source_id(str(folder))
    client = await connect(redis_server.url)
    other = await ResultReader(client, keys, group=SINK_GROUP).start()  # group "sink", consumer "sink"
    stop = asyncio.Event()

    async def compete() -> None:
        while not stop.is_set():
            await other.poll(block_ms=100)

    competitor = asyncio.create_task(compete())
    try:
        report = await asyncio.wait_for(
            run_processes(settings, redis_url=redis_server.url, sources=[str(folder)], models=[MODEL],
                          timeout_s=90),
            timeout=200,
        )  # fmt: skip
        [row] = report.rows
        assert (row.source, row.frames, row.results, row.error) == (source, FRAMES, FRAMES, None)
        # the other reader gets every result too: it reads all along, in its own group
        assert await poll(lambda: other.ledger.track(source, MODEL).results == FRAMES, timeout_s=10)
        groups = [g["name"].decode() for g in await client.xinfo_groups(keys.results)]
        assert groups == ["sink"], f"the run left its results group behind: {groups}"
    finally:
        stop.set()
        competitor.cancel()
        with contextlib.suppress(BaseException):
            await competitor
        await client.aclose()
