"""`ResultReader` on a real redis-server: its own group, a group Redis lost, a server that stops
answering, results of other sources, reading by cursor, segments to their own file; and both
runners' summaries of the same results."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream.adapters.redis.client import connect
from stream.adapters.redis.server import RedisServer
from stream.core.codec import Message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.messages import EOS, RESULT, SEGMENT
from stream.readers.results import JsonlSink, ResultReader

KEYS = PipelineKeys("collector")
MODEL = "m"


def result(source: str, seq: int) -> dict[bytes | str, bytes]:
    meta = {"kind": RESULT, "source": source, "seq": seq, "model": MODEL, "latency_ms": 1.0}
    return {FIELD: encode_message(Message(meta=meta))}


def eos(source: str, frames: int) -> dict[bytes | str, bytes]:
    meta = {"kind": EOS, "source": source, "model": MODEL, "frames": frames, "skipped": 0}
    return {FIELD: encode_message(Message(meta=meta))}


async def publish(client: aioredis.Redis, source: str, seqs: range, *, end: int | None = None) -> None:
    for seq in seqs:
        await client.xadd(KEYS.results, result(source, seq))  # type: ignore[arg-type]
    if end is not None:
        await client.xadd(KEYS.results, eos(source, end))  # type: ignore[arg-type]


async def drain(collector: ResultReader) -> None:
    while await collector.poll(block_ms=10):
        pass


@pytest.fixture
async def client(redis_client: aioredis.Redis) -> AsyncIterator[aioredis.Redis]:
    yield redis_client


async def test_two_collectors_in_their_own_groups_each_get_every_result_and_the_end(
    client: aioredis.Redis,
) -> None:
    a = await ResultReader(client, KEYS, group="sink:a").start()
    b = await ResultReader(client, KEYS, group="sink:b").start()
    await publish(client, "s", range(50), end=50)
    for collector in (a, b):
        await drain(collector)
        assert collector.ledger.complete({("s", MODEL)})
        assert collector.ledger.track("s", MODEL).results == 50


async def test_a_group_redis_lost_is_made_again_and_nothing_is_skipped_or_counted_twice(
    client: aioredis.Redis,
) -> None:
    """Redis came back without the group (no persistence, or an AOF from before it existed)."""
    collector = await ResultReader(client, KEYS, group="sink:lost").start()
    await publish(client, "s", range(20))
    await drain(collector)
    await client.xgroup_destroy(KEYS.results, "sink:lost")
    await publish(client, "s", range(20, 40), end=40)  # written while the group was missing
    await drain(collector)  # NOGROUP: made again at 0
    await drain(collector)
    track = collector.ledger.track("s", MODEL)
    assert collector.regroups == 1
    assert track.results == 40 and collector.ledger.complete({("s", MODEL)})
    assert track.duplicates == 0  # re-reading 0..19 is not a duplicate
    await publish(client, "s", range(5, 7))  # a real duplicate still counts
    await drain(collector)
    assert track.duplicates == 2


async def test_only_the_given_sources_are_tracked_and_written(client: aioredis.Redis, tmp_path) -> None:
    sink = JsonlSink(tmp_path / "r.jsonl")
    collector = await ResultReader(client, KEYS, group="sink:mine", sink=sink, sources=["mine"]).start()
    await publish(client, "other", range(10), end=10)
    await publish(client, "mine", range(3), end=3)
    await drain(collector)
    sink.close()
    assert set(collector.ledger.tracks) == {("mine", MODEL)}
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 3


async def test_segments_go_to_their_own_file_once_each_and_are_counted(
    client: aioredis.Redis, tmp_path
) -> None:
    """What `framestream run --segments` writes: each closed segment once (one written again, as a
    commit retried after a lost reply would, is not repeated), none in the results file."""
    keys = PipelineKeys("segreader", 2)
    results, segments = JsonlSink(tmp_path / "r.jsonl"), JsonlSink(tmp_path / "s.jsonl")
    reader = await ResultReader(client, keys, sink=results, segments=segments, sources=["cam"]).start()
    home = keys.for_source("cam")
    for seq in range(4):
        meta = {"kind": RESULT, "source": "cam", "seq": seq, "model": MODEL, "latency_ms": 1.0}
        await client.xadd(home.results, {FIELD: encode_message(Message(meta=meta))})  # type: ignore[dict-item]
    for first, last in ((0, 1), (2, 3), (2, 3)):
        meta = {"kind": SEGMENT, "id": f"cam/{MODEL}/{first}", "source": "cam", "model": MODEL,
                "first_seq": first, "last_seq": last, "closed_by": "label_change", "open": False}  # fmt: skip
        await client.xadd(home.segments, {FIELD: encode_message(Message(meta=meta))})  # type: ignore[dict-item]
    other = {"kind": SEGMENT, "id": f"other/{MODEL}/0", "source": "other", "model": MODEL}
    await client.xadd(keys.for_source("other").segments, {FIELD: encode_message(Message(meta=other))})  # type: ignore[dict-item]
    while await reader.poll(block_ms=10):
        pass
    results.close()
    segments.close()
    written = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [(s["id"], s["first_seq"], s["last_seq"]) for s in written] == [
        (f"cam/{MODEL}/0", 0, 1), (f"cam/{MODEL}/2", 2, 3)
    ]  # fmt: skip
    assert reader.segments_written == 2
    assert [json.loads(line)["seq"] for line in (tmp_path / "r.jsonl").read_text().splitlines()] == [
        0,
        1,
        2,
        3,
    ]


async def test_a_server_that_stops_answering_is_a_timeout_not_a_hang() -> None:
    """SIGSTOP keeps the connection open but nobody answers. Without a bound the read waits forever
    on redis-py < 8 (no default socket timeout; 8.x gives up after 5 s): the collector's own bound
    answers well before that."""
    with RedisServer() as server:
        assert server.process is not None
        client = await connect(server.url)
        try:
            collector = await ResultReader(client, KEYS, group="sink:stall", reply_timeout_s=0.5).start()
            await publish(client, "s", range(3))
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(RedisTimeoutError):
                    await asyncio.wait_for(collector.poll(block_ms=100), timeout=30)
                assert time.monotonic() - started < 4
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            await publish(client, "s", range(3, 5), end=5)
            await drain(collector)  # on a fresh connection, own pending first
            await drain(collector)
            assert collector.ledger.track("s", MODEL).results == 5
            assert collector.ledger.complete({("s", MODEL)})
        finally:
            await client.aclose()


async def test_by_cursor_it_takes_nothing_away_and_starts_at_the_end(client: aioredis.Redis) -> None:
    await publish(client, "old", range(5), end=5)  # an earlier run's results: not ours
    group = await ResultReader(client, KEYS, group="sink:g").start()
    cursor = await ResultReader(client, KEYS).start()
    await publish(client, "s", range(30), end=30)
    await publish(client, "s", range(10, 12))  # two duplicates the pipeline made
    for reader in (group, cursor):
        await drain(reader)
        assert set(reader.ledger.tracks) == {("s", MODEL)}
        track = reader.ledger.track("s", MODEL)
        assert (track.results, track.duplicates, track.complete) == (30, 2, True)


async def test_both_runners_report_the_same_latency_percentiles(client: aioredis.Redis) -> None:
    """A reader in a group and one by cursor read the same results, and a run's report per track
    (`run_processes`) and its summary print the same p50 / p99 / max: one reader, one ledger, one
    percentile definition."""
    from stream.runners.drive import DriveOptions, _Results, _summary
    from stream.runners.processes import RunReport, _fill

    latencies = [float(v) for v in range(1, 101)]  # 1..100 ms: nearest-rank p99 is 99, max 100
    group = await ResultReader(client, KEYS, group="sink:run").start()
    cursor = _Results(await ResultReader(client, KEYS).start())
    for seq, ms in enumerate(latencies):
        meta = {"kind": RESULT, "source": "s", "seq": seq, "model": MODEL, "latency_ms": ms}
        await client.xadd(KEYS.results, {FIELD: encode_message(Message(meta=meta))})  # type: ignore[dict-item]
    await client.xadd(KEYS.results, eos("s", 100))  # type: ignore[arg-type]
    await drain(group)
    while await cursor.poll(block_ms=10):
        pass
    report = RunReport()
    _fill(report, group.ledger, [("s", MODEL)])
    options = DriveOptions(models=[MODEL], synthetic=[])
    summary = await _summary(client, KEYS, options, cursor, [("s", MODEL)], {}, 0, 0.0, False)
    processes = (report.p50_ms, report.p99_ms, report.max_ms)
    ray = (summary.p50_ms, summary.p99_ms, summary.max_ms)
    assert processes == ray
    assert processes == pytest.approx((50.0, 99.0, 100.0), rel=0.011)
    assert report.rows[0].results == summary.results == 100


async def test_the_ray_runners_summary_counts_every_source_that_played(client: aioredis.Redis) -> None:
    """A source added over HTTP while `framestream run` plays its own counts in the summary too,
    and frames published before the run (an earlier run's) do not."""
    from stream.readers.watch import read_counters
    from stream.runners.drive import DriveOptions, _Results, _summary

    await client.hset(KEYS.counters, "published:cli", 7)  # an earlier run of the same source
    first = await read_counters(client, KEYS)
    reader = _Results(await ResultReader(client, KEYS).start())
    await client.hincrby(KEYS.counters, "published:cli", 3)
    await client.hincrby(KEYS.counters, "published:api", 2)
    await publish(client, "cli", range(3), end=3)
    await publish(client, "api", range(2), end=2)
    while await reader.poll(block_ms=10):
        pass
    options = DriveOptions(models=[MODEL], synthetic=[])
    summary = await _summary(client, KEYS, options, reader, [("cli", MODEL)], first, 0, 0.0, False)
    assert set(summary.per_source) == {"cli", "api"}
    assert (summary.published, summary.results) == (5, 5)
    assert summary.per_source["api"]["published"] == summary.per_source["api"]["results"] == 2


@pytest.mark.slow
async def test_the_readers_memory_stays_flat_however_many_results_it_reads(client: aioredis.Redis) -> None:
    """A camera left running for days: the reader keeps counts and histograms, not every result
    (an earlier reader kept ~300 bytes a frame and grew without bound)."""
    import tracemalloc

    reader = await ResultReader(client, KEYS).start()

    async def feed(first: int, n: int) -> None:
        for chunk in range(first, first + n, 1000):
            async with client.pipeline(transaction=False) as pipe:
                for seq in range(chunk, chunk + 1000):
                    pipe.xadd(KEYS.results, result("cam", seq), maxlen=5000)  # type: ignore[arg-type]
                await pipe.execute()
            while await reader.poll(block_ms=10, count=1000):
                pass

    await feed(0, 10_000)  # warm: every structure has its steady size
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        await feed(10_000, 20_000)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert reader.ledger.track("cam", MODEL).results == 30_000
    assert grown < 20_000 * 20, f"grew {grown} bytes over 20,000 results"  # < 20 bytes a result
