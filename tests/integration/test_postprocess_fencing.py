"""Partition ownership of postprocess on a real Redis (plain and Cluster): a replica that lost a
partition's lease writes nothing there any more (results, segments, acks, state), the new owner
resumes from the saved state (the open segment too) and gets what the old one held, and replicas
share partitions fairly. The segments stream is trimmed like the results."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from stream.adapters.redis.entries import Entry, Output
from stream.adapters.redis.fenced_commit import Fenced
from stream.adapters.redis.partitions import ensure_layout
from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import Message, decode_message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.messages import FRAME, SEGMENT
from stream.core.segments import SegmentBuilder
from stream.core.track_state import decode_open_segment
from stream.errors import LeaseLost
from stream.settings import Settings
from stream.stages.postprocess.stage import PostprocessStage

LABELS = [f"class-{i}" for i in range(5)]
MODEL = "m"
GROUP = PipelineKeys.group("postprocess", MODEL)
SOURCE = "cam-1"  # partition 1 of 3


@pytest.fixture(params=["plain", "cluster"])
def client(request):
    name = "redis_client" if request.param == "plain" else "cluster_client"
    return request.getfixturevalue(name)


def _settings() -> Settings:
    """Leases live claim_idle_ms: long enough for the steps of a test to stay within one on a busy
    machine (a replica whose loop stalls longer than that loses its partitions, by design)."""
    return Settings(streams={"pipeline": "fence", "partitions": 3, "claim_idle_ms": 3_000, "block_ms": 20})


async def _publish_scores(transport: StreamTransport, keys: PipelineKeys, seqs: range) -> None:
    eye = np.eye(len(LABELS), dtype=np.float32)
    outs = [
        Output(keys.for_source(SOURCE).scores(MODEL), encode_message(Message(
            {"kind": FRAME, "source": SOURCE, "seq": s, "model": MODEL}, eye[(s // 4) % len(LABELS)])))
        for s in seqs
    ]  # fmt: skip
    await transport.publish(outs)


async def _results(client, keys: PipelineKeys) -> list[dict]:
    rows = await client.xrange(keys.for_source(SOURCE).results)
    return [decode_message(f[FIELD.encode()]).meta for _, f in rows]


async def test_a_fenced_commit_writes_only_while_its_lease_holds(client) -> None:
    keys = PipelineKeys("fence", 3).partition(1)
    transport = StreamTransport(client, keys, stage="test")
    await transport.ensure_group(keys.scores(MODEL), GROUP)
    await transport.publish([Output(keys.scores(MODEL), b"x")])
    entry = (await transport.read(keys.scores(MODEL), GROUP, "old", count=1, block_ms=None))[0]
    lease, state = keys.owner_lease(GROUP), keys.group_state(GROUP)
    await client.set(lease, "new/1")
    stale = Fenced(lease, "old/1", state, {SOURCE: '{"v": 1}'})
    with pytest.raises(LeaseLost, match="owner:postprocess:m"):
        await transport.forward([Output(keys.results, b"r")], GROUP, [entry], [stale])
    assert await client.xlen(keys.results) == 0  # nothing of it: no output, no ack, no state
    assert (await transport.group_stats(keys.scores(MODEL), GROUP)).pending == 1
    assert await client.hgetall(state) == {}

    ids = await transport.forward(
        [Output(keys.results, b"r")], GROUP, [entry], [Fenced(lease, "new/1", state, {SOURCE: "s"})]
    )
    assert len(ids) == 1 and await client.xlen(keys.results) == 1
    assert (await transport.group_stats(keys.scores(MODEL), GROUP)).pending == 0
    assert await client.hgetall(state) == {SOURCE.encode(): b"s"}


async def test_a_replica_that_lost_its_partition_cannot_overwrite_the_new_owner(client) -> None:
    """Replica a reads frames of partition 1 and stalls; its lease expires and b takes the
    partition (loading the saved state, claiming what a held). a's late commit is refused whole;
    b produces every result once, continuing a's smoothing."""
    settings = _settings()
    keys = PipelineKeys("fence", 3)
    transport = StreamTransport(client, keys, stage="test")
    await ensure_layout(client, keys)
    a = PostprocessStage(settings, client, consumer="a", model=MODEL, labels=LABELS)
    await a.start()
    await a.maintain()  # takes every partition: the only member
    assert a.owned == [0, 1, 2]
    await _publish_scores(transport, keys, range(0, 6))
    first = await _handle_all(a)
    await a.commit(first)
    assert [r["seq"] for r in await _results(client, keys)] == list(range(6))
    saved = json.loads((await client.hget(keys.partition(1).group_state(GROUP), SOURCE)) or b"{}")
    assert saved["next_seq"] == 6 and saved["results"] == 6

    await _publish_scores(transport, keys, range(6, 12))
    stalled = await _handle_all(a)  # a handled 6..11 but has not committed yet
    assert len(stalled.outputs) >= 6
    await client.delete(keys.partition(1).owner_lease(GROUP))  # its lease expired while it stalled
    b = PostprocessStage(settings, client, consumer="b", model=MODEL, labels=LABELS)
    await b.start()
    assert await b.ownership.take(1)
    await b._load(1)  # what a new owner does on taking a partition

    await a.commit(stalled)  # refused: a no longer holds the lease
    assert 1 not in a.owned
    assert [r["seq"] for r in await _results(client, keys)] == list(range(6))
    assert json.loads(await client.hget(keys.partition(1).group_state(GROUP), SOURCE) or b"{}") == saved

    b.read_streams([keys.partition(1).scores(MODEL)])
    await b.commit(await _handle_all(b))
    results = await _results(client, keys)
    assert [r["seq"] for r in results] == list(range(12))  # each once
    reference = PostprocessStage(settings, client, consumer="ref", model=MODEL, labels=LABELS)
    smoother = reference._track(SOURCE, _entry(keys)).smoother
    expected = [smoother.update(np.eye(5, dtype=np.float32)[(s // 4) % 5]) for s in range(12)]
    assert [r["smoothed_label"] for r in results] == [LABELS[e.index] for e in expected]
    assert [r["smoothed_score"] for r in results] == [round(e.score, 5) for e in expected]
    # the segments a's refused commit closed are written by b, once, as an uninterrupted run has them
    builder = SegmentBuilder(SOURCE, MODEL)
    closed = [builder.frame(s, LABELS[e.index], e.score, None) for s, e in enumerate(expected)]
    want = [c.to_meta() for c in closed if c is not None]
    assert len(want) >= 2 and await _segments(client, keys) == want
    state = await client.hget(keys.partition(1).group_state(GROUP), SOURCE)
    assert decode_open_segment(state) == builder.open


async def test_a_replica_that_lost_its_partition_cannot_dead_letter_there(client) -> None:
    """Scores that do not validate are dead-lettered with a skip marker in the reorder buffer. A
    replica whose lease expired writes neither: the entry stays pending for the new owner, which
    dead-letters it itself and moves on at once instead of waiting `reorder_max_wait_ms` for a
    seq whose entry was acked behind its back."""
    # a wait for seq 3 would show as missing results
    settings = _settings().model_copy(update={"postprocess": _settings().postprocess.model_copy(
        update={"reorder_max_wait_ms": 60_000})})  # fmt: skip
    keys = PipelineKeys("fence", 3)
    transport = StreamTransport(client, keys, stage="test")
    await ensure_layout(client, keys)
    a = PostprocessStage(settings, client, consumer="a", model=MODEL, labels=LABELS)
    await a.start()
    await a.maintain()
    await _publish_scores(transport, keys, range(0, 3))
    await a.commit(await _handle_all(a))
    bad = Message({"kind": FRAME, "source": SOURCE, "seq": 3, "model": MODEL}, np.zeros(3, np.float32))
    await transport.publish([Output(keys.for_source(SOURCE).scores(MODEL), encode_message(bad))])
    await _publish_scores(transport, keys, range(4, 6))
    stalled = await _handle_all(a)
    assert len(stalled.dead) == 1
    await client.delete(keys.partition(1).owner_lease(GROUP))  # expired while a stalled

    await a.commit(stalled)  # refused whole: no result, no dead letter, no ack
    dead = keys.partition(1).dead
    assert await client.xlen(dead) == 0
    assert [r["seq"] for r in await _results(client, keys)] == [0, 1, 2]

    b = PostprocessStage(settings, client, consumer="b", model=MODEL, labels=LABELS)
    await b.start()
    assert await b.ownership.take(1)
    await b._load(1)
    b.read_streams([keys.partition(1).scores(MODEL)])
    await b.commit(await _handle_all(b))
    assert [r["seq"] for r in await _results(client, keys)] == [0, 1, 2, 4, 5]
    letters = await client.xrange(dead)
    assert len(letters) == 1 and b"expected float scores [5]" in letters[0][1][b"reason"]
    counted = await client.hgetall(keys.partition(1).counters)  # the console's per-stage count
    assert [int(v) for k, v in counted.items() if k.startswith(b"dead:")] == [1], counted
    saved = json.loads(await client.hget(keys.partition(1).group_state(GROUP), SOURCE) or b"{}")
    assert saved["next_seq"] == 6 and saved["skipped"] == 1
    assert (await transport.group_stats(keys.partition(1).scores(MODEL), GROUP)).pending == 0


async def test_replicas_share_partitions_fairly_and_a_silent_ones_are_taken_within_the_lease(client) -> None:
    settings = _settings()
    keys = PipelineKeys("fence", 3)
    await ensure_layout(client, keys)
    stages = [PostprocessStage(settings, client, consumer=c, model=MODEL, labels=LABELS) for c in "abc"]
    for s in stages:
        await s.start()
    await stages[0].maintain()
    assert stages[0].owned == [0, 1, 2]
    for s in stages[1:]:  # they join the members; nothing is free yet
        await s.maintain()
        assert s.owned == []
    stages[0]._next_ownership_s = 0.0
    await stages[0].maintain()  # three members: a keeps one and releases two at once
    assert len(stages[0].owned) == 1
    released = [k for k in range(3) if k not in stages[0].owned]
    assert [await client.exists(keys.partition(k).owner_lease(GROUP)) for k in released] == [0, 0]
    deadline = time.monotonic() + 10
    while sorted(len(s.owned) for s in stages) != [1, 1, 1]:
        assert time.monotonic() < deadline, [s.owned for s in stages]
        for s in stages:
            s._next_ownership_s = 0.0
            await s.maintain()
        await asyncio.sleep(0.02)
    assert sorted(k for s in stages for k in s.owned) == [0, 1, 2]

    silent = stages.pop(1)  # stops renewing (a SIGKILL): within the lease time its partition moves
    died = time.monotonic()
    while sorted(k for s in stages for k in s.owned) != [0, 1, 2]:
        assert time.monotonic() - died < 1.25 * settings.streams.claim_idle_ms / 1000 + 1, [
            s.owned for s in stages
        ]
        for s in stages:
            s._next_ownership_s = 0.0
            await s.maintain()
        await asyncio.sleep(0.05)
    assert sorted(len(s.owned) for s in stages) == [1, 2]
    assert silent.owned  # it still believes it owns one: its commits would be refused


async def test_the_segments_stream_is_trimmed_but_never_below_what_a_sink_still_needs(client) -> None:
    settings = Settings(streams={"pipeline": "trimseg", "partitions": 3, "max_len": 100})
    keys = PipelineKeys("trimseg", 3)
    await ensure_layout(client, keys)
    stage = PostprocessStage(settings, client, consumer="a", model=MODEL, labels=LABELS)
    await stage.start()
    stream = keys.partition(1).segments
    for i in range(300):
        meta = {"kind": SEGMENT, "id": f"{SOURCE}/{MODEL}/{i}", "source": SOURCE}
        await client.xadd(stream, {FIELD: encode_message(Message(meta=meta))})
    await client.xgroup_create(stream, "sinks", id="0")
    held = await client.xreadgroup("sinks", "s", {stream: ">"}, count=50)  # delivered, not acked
    await stage.maintain()
    assert await client.xlen(stream) == 300  # the sink still needs its oldest pending one
    read = [entry_id for entry_id, _ in held[0][1]]
    read += [
        entry_id for entry_id, _ in (await client.xreadgroup("sinks", "s", {stream: ">"}, count=150))[0][1]
    ]
    await client.xack(stream, "sinks", *read)
    stage._next_results_trim_s = 0.0  # the next maintenance trims again
    await stage.maintain()
    assert await client.xlen(stream) == 100  # streams.max_len kept, every one the sink has not read
    assert [e[0] for e in await client.xrange(stream, count=1)] == [
        e[0] for e in await client.xrange(stream, min=f"({read[-1].decode()}", count=1)
    ]


async def _segments(client, keys: PipelineKeys) -> list[dict]:
    rows = await client.xrange(keys.for_source(SOURCE).segments)
    return [decode_message(f[FIELD.encode()]).meta for _, f in rows]


async def _handle_all(stage: PostprocessStage):
    entries: list[Entry] = []
    for _ in range(5):
        entries += await stage.next_entries(100, 20)
    good, _ = stage.transport.decode(entries)
    return await stage.handle(good)


def _entry(keys: PipelineKeys) -> Entry:
    return Entry(keys.for_source(SOURCE).scores(MODEL), "0-1", None)
