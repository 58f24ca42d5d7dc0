"""The mqtt and postgres sink kinds in a real pipeline (processes runner, real redis-server) with
their real servers failing mid-run:

- Mosquitto is restarted while results flow: a persistent QoS 1 subscriber (`clean_session` false)
  ends with every result, in order per source (repeats allowed, none missing);
- the sinks process is killed (SIGKILL) in the middle of a batch's transaction and PostgreSQL is
  restarted: once a new sinks process has taken the killed one's entries back, the results table
  holds exactly one row per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from stream.adapters.redis.client import connect
from stream.adapters.redis.server import RedisServer
from stream.adapters.redis.sink_backlog import sink_backlog
from stream.core.keys import PipelineKeys
from stream.core.sources.ids import source_id
from stream.readers.watch import read_counters
from stream.runners.processes import StageProcess, _write_config, run_processes, sink_secrets
from stream.settings import Settings
from stream.sinks.settings import SinkSettings
from stream.waiting import cancel_and_wait
from tests.faults.conftest import MODEL, fault_settings
from tests.faults.frames import write_frame_folder
from tests.servers import MosquittoServer, PostgresServer
from tests.waiting import until

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _settings(model_cache: Path, **sink: Any) -> Settings:
    base = fault_settings(model_cache)
    streams = base.streams.model_copy(update={"pipeline": f"sk{secrets.token_hex(3)}"})
    fields = {"max_items": 25, "max_wait_ms": 50, "backoff_initial_s": 0.1, "backoff_max_s": 1.0,
              "max_attempts": 1000, **sink}  # fmt: skip
    return base.model_copy(update={"streams": streams, "sinks": [SinkSettings(**fields)]})


class PersistentSubscriber:
    """A QoS 1 MQTT client with a fixed id and `clean_session` false that records every message
    and reconnects (without subscribing again: the broker keeps its session) after a drop."""

    def __init__(self, broker: MosquittoServer, topic: str) -> None:
        self.broker, self.topic = broker, topic
        self.identifier = f"sub-{secrets.token_hex(4)}"
        self.payloads: list[dict[str, Any]] = []
        self.connections = 0

    async def run(self) -> None:
        while True:
            client = aiomqtt.Client(
                "127.0.0.1",
                self.broker.port,
                username=self.broker.username,
                password=self.broker.password,
                identifier=self.identifier,
                clean_session=False,
            )
            try:
                async with client:
                    if self.connections == 0:
                        await client.subscribe(self.topic, qos=1)
                    self.connections += 1
                    async for message in client.messages:
                        self.payloads.append(json.loads(bytes(message.payload)))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)  # the broker is down: try again (a real client's backoff)

    def first_arrivals(self, source: str) -> list[int]:
        return list(dict.fromkeys(p["seq"] for p in self.payloads if p["source"] == source))


@contextlib.asynccontextmanager
async def _running(coroutine: Any) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.create_task(coroutine)
    try:
        yield task
    finally:
        await cancel_and_wait([task])


async def test_every_result_reaches_a_persistent_subscriber_across_a_broker_restart(
    redis_server: RedisServer, mosquitto_server: MosquittoServer, model_cache: Path, tmp_path: Path
) -> None:
    frames = 400
    folder = write_frame_folder(tmp_path / "clip", frames)
    source = source_id(str(folder))
    broker = mosquitto_server
    settings = _settings(model_cache, name="mq", kind="mqtt", url=broker.url, secret=broker.password)
    keys = PipelineKeys(settings.streams.pipeline)
    client = await connect(redis_server.url)
    subscriber = PersistentSubscriber(broker, f"framestream/{source}/+")

    async def restart_broker_mid_run() -> None:
        await until(lambda: len(subscriber.payloads) >= 50, timeout_s=180, what="the first results")
        await asyncio.to_thread(broker.stop)
        # down until the sink has felt it: a send failed and is being retried
        await until(
            lambda: _counter(client, keys, "sink:mq:retries"), timeout_s=60, what="a failed send retried"
        )
        await asyncio.to_thread(broker.start)

    try:
        async with _running(subscriber.run()), _running(restart_broker_mid_run()) as restarting:
            await until(lambda: subscriber.connections, timeout_s=30, what="the subscriber connected")
            report = await asyncio.wait_for(
                run_processes(settings, redis_url=redis_server.url, sources=[str(folder)],
                              models=[MODEL], timeout_s=180),
                timeout=300,
            )  # fmt: skip
            assert restarting.done() and restarting.exception() is None, "the broker was not restarted"
            # the run ended once the sink's backlog was 0: the broker has confirmed every result
            await until(
                lambda: len(subscriber.first_arrivals(source)) >= frames, timeout_s=60, what="every result"
            )
    finally:
        if broker.process is None:
            broker.start()
        await client.aclose()
    [row] = report.rows
    assert (row.frames, row.results) == (frames, frames)
    assert subscriber.connections >= 2  # it was cut off by the restart and came back
    assert subscriber.first_arrivals(source) == list(range(frames))
    assert report.sinks["mq"]["dead_letters"] == 0


async def _counter(client: Any, keys: PipelineKeys, name: str) -> int:
    return int((await read_counters(client, keys)).get(name, 0))


def _sinks_process(settings: Settings, redis_url: str, config_dir: Path, consumer: str) -> StageProcess:
    config = _write_config(settings, config_dir)  # the file the processes runner gives its stages
    return StageProcess("sinks", None, redis_url, config, consumer, secrets=sink_secrets(settings))


async def test_exactly_one_row_per_frame_after_the_sinks_process_is_killed_mid_batch_and_postgres_restarts(
    redis_server: RedisServer, postgres_server: PostgresServer, model_cache: Path, tmp_path: Path
) -> None:
    frames, blocked_seq = 400, 130
    folder = write_frame_folder(tmp_path / "clip", frames)
    source = source_id(str(folder))
    pg = postgres_server
    prefix = f"e{secrets.token_hex(3)}_"
    settings = _settings(
        model_cache, name="pg", kind="postgres", dsn=pg.dsn, secret=pg.password, table_prefix=prefix
    )
    sink = settings.sinks[0]
    table = f"{prefix}results"
    keys = PipelineKeys(settings.streams.pipeline)
    client = await connect(redis_server.url)
    config_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    first = _sinks_process(settings, redis_server.url, config_dir, "sinks-first")
    second: StageProcess | None = None
    blocker = None
    run: asyncio.Task[Any] | None = None
    try:
        # the sinks process made its groups (so it sees every result) and its tables
        await until(lambda: _group_exists(client, keys.results, sink.group), timeout_s=60, what="its group")
        with pg.connect() as conn:
            await until(
                lambda: conn.execute("SELECT to_regclass(%s)", [table]).fetchone()[0],  # type: ignore[index]
                timeout_s=60,
                what="its tables",
            )
        # another session holds an uncommitted row of one frame: the batch that carries that frame
        # writes the frames before it in its transaction, then waits for the row's lock
        blocker = pg.connect()
        blocker.execute("BEGIN")
        blocker.execute(
            f'INSERT INTO "{table}" (key, source, body) VALUES (%s, %s, %s::jsonb)',  # type: ignore[arg-type]
            [f"{source}/{MODEL}/{blocked_seq}", source, '{"seq": -1}'],
        )
        pipeline_only = settings.model_copy(update={"sinks": []})
        run = asyncio.create_task(
            run_processes(pipeline_only, redis_url=redis_server.url, sources=[str(folder)],
                          models=[MODEL], timeout_s=180)
        )  # fmt: skip
        with pg.connect() as watcher:
            await until(
                lambda: _waiting_on_lock(watcher, "pg"), timeout_s=180, what="a batch blocked mid-transaction"
            )
            visible = [r[0] for r in watcher.execute(f'SELECT seq FROM "{table}" ORDER BY seq').fetchall()]
        # the batches before were committed; nothing of the blocked one is visible before its COMMIT
        assert visible == list(range(len(visible))) and len(visible) <= blocked_seq
        first.kill()  # SIGKILL, mid-batch: its transaction never commits
        blocker.close()
        blocker = None
        await asyncio.to_thread(pg.restart)
        second = _sinks_process(settings, redis_server.url, config_dir, "sinks-second")
        report = await asyncio.wait_for(run, timeout=300)
        [row] = report.rows
        assert (row.frames, row.results) == (frames, frames)
        await until(
            lambda: _backlog_is_zero(client, keys, sink), timeout_s=120, what="the sink's backlog at 0"
        )
    finally:
        if run is not None and not run.done():
            run.cancel()  # a failed check above: stop the pipeline too
            with contextlib.suppress(BaseException):
                await run
        if blocker is not None:
            blocker.close()
        for process in (first, second):
            if process is not None:
                process.terminate()
                process.wait(30)
        await client.aclose()
    with pg.connect() as conn:
        rows = conn.execute(f'SELECT key, seq, source FROM "{table}" ORDER BY seq').fetchall()
    assert [r[1] for r in rows] == list(range(frames))  # every frame, once: no row twice, none missing
    assert len({r[0] for r in rows}) == frames and {r[2] for r in rows} == {source}


async def _group_exists(client: Any, stream: str, group: str) -> bool:
    with contextlib.suppress(Exception):
        return any(g["name"] in (group, group.encode()) for g in await client.xinfo_groups(stream))
    return False


def _waiting_on_lock(conn: Any, sink_name: str) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
        [f"framestream sink {sink_name}"],
    ).fetchone()
    return bool(found and found[0])


async def _backlog_is_zero(client: Any, keys: PipelineKeys, sink: SinkSettings) -> bool:
    return await sink_backlog(client, keys, sink) == 0
