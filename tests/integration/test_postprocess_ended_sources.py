"""An ended source's saved postprocess state on a real Redis: after its end-of-stream the
partition's state hash keeps only its next seq (a few bytes, not the smoother's ~5.4 KB), and a
re-added source continues its seq on another replica without waiting for seqs that never come."""

from __future__ import annotations

import numpy as np

from stream.adapters.redis.entries import Entry, Output
from stream.adapters.redis.partitions import ensure_layout
from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import Message, decode_message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.messages import EOS, FRAME
from stream.settings import Settings
from stream.stages.postprocess.stage import PostprocessStage

LABELS = [f"class-{i}" for i in range(1000)]
MODEL = "m"
GROUP = PipelineKeys.group("postprocess", MODEL)
SOURCE = "cam-1"


def _settings() -> Settings:
    """A reorder wait far longer than the test: a source waiting for a seq shows as no results."""
    return Settings(
        streams={"pipeline": "ended", "partitions": 3, "claim_idle_ms": 3_000, "block_ms": 20},
        postprocess={"reorder_max_wait_ms": 60_000},
    )


async def _publish(transport: StreamTransport, keys: PipelineKeys, messages: list[Message]) -> None:
    stream = keys.for_source(SOURCE).scores(MODEL)
    await transport.publish([Output(stream, encode_message(m)) for m in messages])


def _frames(seqs: range) -> list[Message]:
    probs = np.full(len(LABELS), 0.5 / (len(LABELS) - 1), dtype=np.float32)
    probs[7] = 0.5
    return [Message({"kind": FRAME, "source": SOURCE, "seq": s, "model": MODEL}, probs) for s in seqs]


def _eos(seq: int, first_seq: int) -> Message:
    return Message({"kind": EOS, "source": SOURCE, "seq": seq, "first_seq": first_seq})


async def _handle_and_commit(stage: PostprocessStage) -> None:
    entries: list[Entry] = []
    for _ in range(5):
        entries += await stage.next_entries(100, 20)
    good, _ = stage.transport.decode(entries)
    await stage.commit(await stage.handle(good))


async def _results(client, keys: PipelineKeys) -> list[dict]:
    rows = await client.xrange(keys.for_source(SOURCE).results)
    return [decode_message(f[FIELD.encode()]).meta for _, f in rows]


async def test_an_ended_source_keeps_only_its_next_seq_and_a_re_added_one_continues(redis_client) -> None:
    client = redis_client
    settings = _settings()
    keys = PipelineKeys("ended", 3)
    transport = StreamTransport(client, keys, stage="test")
    await ensure_layout(client, keys)
    state = keys.for_source(SOURCE).group_state(GROUP)
    a = PostprocessStage(settings, client, consumer="a", model=MODEL, labels=LABELS)
    await a.start()
    await a.maintain()

    await _publish(transport, keys, _frames(range(0, 10)))
    await _handle_and_commit(a)
    playing = len(await client.hget(state, SOURCE) or b"")
    assert playing > 5_000  # the smoother's 1,000 averages

    await _publish(transport, keys, [_eos(10, 0)])
    await _handle_and_commit(a)
    ended = await client.hget(state, SOURCE)
    assert ended == b"11"  # the seq a re-added source continues from, nothing more
    print(f"state of one source: {playing} bytes while playing, {len(ended)} after its end-of-stream")

    # the partition moves to b (a stalled past its lease), which loads the compact state; a stalled
    # reads no more: its reads in flight end first, or one sent late would take b's new entries
    assert await a.reader.finish() == []
    await client.delete(keys.for_source(SOURCE).owner_lease(GROUP))
    b = PostprocessStage(settings, client, consumer="b", model=MODEL, labels=LABELS)
    await b.start()
    k = keys.of_key(state).index
    assert await b.ownership.take(k)
    await b._load(k)
    b.read_streams([keys.partition(k).scores(MODEL)])
    await _publish(transport, keys, [*_frames(range(11, 14)), _eos(14, 11)])
    await _handle_and_commit(b)

    results = await _results(client, keys)
    assert [r["seq"] for r in results if r["kind"] == "result"] == [*range(10), 11, 12, 13]
    ends = [r for r in results if r["kind"] == EOS]
    assert [(e["frames"], e["results"], e["gaps"]) for e in ends] == [(10, 10, 0), (3, 3, 0)]
    assert await client.hget(state, SOURCE) == b"15"
