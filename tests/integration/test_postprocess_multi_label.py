"""A multi-label model's results on a real Redis: each result lists every label above the
threshold, its smoothed set follows each label's EMA, and a change of that set is an event."""

from __future__ import annotations

import numpy as np

from stream.adapters.redis.entries import Entry, Output
from stream.adapters.redis.partitions import ensure_layout
from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import Message, decode_message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.messages import FRAME, LABEL_CHANGE, RESULT
from stream.settings import Settings
from stream.stages.postprocess.stage import PostprocessStage

LABELS = ["red", "green", "blue", "grey"]
MODEL = "colours"
SOURCE = "cam-ml"


async def _handle_all(stage: PostprocessStage, expect: int) -> None:
    entries: list[Entry] = []
    for _ in range(20):
        entries += await stage.next_entries(100, 20)
        if len(entries) >= expect:
            break
    good, _ = stage.transport.decode(entries)
    await stage.commit(await stage.handle(good))


async def test_multi_label_results_smoothed_sets_and_set_change_events(redis_client) -> None:
    settings = Settings(
        streams={"pipeline": "ml", "partitions": 1, "claim_idle_ms": 3_000, "block_ms": 20},
        postprocess={"ema_alpha": 0.3, "hysteresis_frames": 2},
    )
    keys = PipelineKeys("ml", 1)
    transport = StreamTransport(redis_client, keys, stage="test")
    await ensure_layout(redis_client, keys)
    stage = PostprocessStage(settings, redis_client, consumer="a", model=MODEL, labels=LABELS, threshold=0.5)
    await stage.start()
    await stage.maintain()

    yellow = np.array([0.9, 0.8, 0.1, 0.2], np.float32)  # red and green on
    blue = np.array([0.1, 0.1, 0.95, 0.2], np.float32)
    frames = [yellow] * 6 + [blue] * 8
    stream = keys.for_source(SOURCE).scores(MODEL)
    await transport.publish(
        [
            Output(
                stream,
                encode_message(Message({"kind": FRAME, "source": SOURCE, "seq": i, "model": MODEL}, p)),
            )
            for i, p in enumerate(frames)
        ]
    )
    await _handle_all(stage, len(frames))

    rows = [decode_message(f[FIELD.encode()]).meta for _, f in await redis_client.xrange(keys.results)]
    results = [r for r in rows if r["kind"] == RESULT]
    assert [r["seq"] for r in results] == list(range(len(frames)))
    assert [[n for n, _ in r["labels"]] for r in results] == [["red", "green"]] * 6 + [["blue"]] * 8
    smoothed = [[n for n, _ in r["smoothed_labels"]] for r in results]
    assert smoothed[0] == ["red", "green"] and smoothed[-1] == ["blue"]
    # the EMA (weight 0.3 on the newest frame) keeps red and green one blue frame longer
    assert smoothed[6] == ["red", "green"] and smoothed[7] == ["blue"]

    events = [decode_message(f[FIELD.encode()]).meta for _, f in await redis_client.xrange(keys.events)]
    sets = [e for e in events if e["kind"] == LABEL_CHANGE and "labels" in e]
    assert sets[0]["labels"] == ["red", "green"] and sets[0]["previous_labels"] == []
    assert sets[-1]["labels"] == ["blue"]
    # one event per change of the smoothed set, no more
    changes = sum(1 for a, b in zip([[]] + smoothed, smoothed, strict=False) if a != b)
    assert len(sets) == changes
