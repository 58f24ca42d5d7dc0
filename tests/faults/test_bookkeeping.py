"""The suite's own bookkeeping (no Ray): recovery time, the report table, and the lag guard the
transport needs after an external trim (without it the stale lag stalls ingest forever)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.adapters.redis.streams import StreamTransport
from stream.core.keys import PipelineKeys
from tests.faults.report import load_rows, render_table
from tests.faults.scenario import recoveries_s, recovery_s
from tests.faults.sink import Arrival, FaultSink

pytestmark = pytest.mark.faults


def _sink_with(arrivals: list[tuple[int, float, float]]) -> FaultSink:
    sink = FaultSink(client=None, keys=PipelineKeys("p"), group="g")  # type: ignore[arg-type]
    sink.arrivals = [Arrival("s", seq, 5.0, ingest, seen, seen) for seq, ingest, seen in arrivals]
    return sink


def test_recovery_is_the_wait_until_every_frame_ingested_before_the_fault_came_out() -> None:
    # frames ingested at 0..900 ms; the fault at 1000 ms; the last old frame comes out at 4500 ms
    sink = _sink_with(
        [(i, i * 100.0, 1200.0 if i < 9 else 4500.0) for i in range(10)] + [(10, 2000.0, 2100.0)]
    )
    assert recovery_s([1000.0], sink) == 3.5
    assert recovery_s([], sink) == 0.0
    # a duplicate arriving later does not stretch it: the first copy counts
    sink.arrivals.append(Arrival("s", 9, 5.0, 900.0, 9000.0, 9000.0))
    assert recovery_s([1000.0], sink) == 3.5


def test_recovery_also_waits_for_new_frames_to_flow_again() -> None:
    # everything old was out by 1100 ms, but the first frame ingested after the fault (a stalled
    # ingest) came out only at 8000 ms
    sink = _sink_with([(0, 500.0, 1100.0), (1, 7000.0, 8000.0)])
    assert recoveries_s([1000.0], sink) == [7.0]


def test_the_report_orders_scenarios_and_renders_every_column(tmp_path: Path) -> None:
    rows = [
        {"scenario": "2 SIGKILL Infer", "frames": 6000, "lost": 0, "duplicates": 3, "dead_lettered": 0,
         "pending": 0, "recovery_s": 4.25, "note": "Ray; 3 kills"},
        {"scenario": "1c control: MAXLEN trim", "frames": 2000, "lost": 352, "duplicates": 0,
         "dead_lettered": 0, "pending": 0, "recovery_s": None, "note": "negative control", "control": True},
        {"scenario": "1 no fault", "frames": 10000, "lost": 0, "duplicates": 0, "dead_lettered": 0,
         "pending": 0, "recovery_s": None, "note": "Ray"},
    ]  # fmt: skip
    for i, row in enumerate(rows):
        (tmp_path / f"{i}.json").write_text(json.dumps(row))
    table = render_table(load_rows(tmp_path)).splitlines()
    assert table[0].startswith("| scenario | frames | lost | duplicates | dead-lettered | pending | recovery")
    assert [line.split("|")[1].strip() for line in table[2:]] == [
        "1 no fault",
        "1c control: MAXLEN trim",
        "2 SIGKILL Infer",
    ]
    assert "| 4.2 s |" in table[4] or "| 4.3 s |" in table[4]
    assert "| 352 |" in table[3]


async def test_group_lag_never_exceeds_the_stream_after_an_external_trim(redis_client) -> None:
    """Redis 7.0 keeps counting entries an XTRIM removed unread in XINFO's lag (added - read); the
    transport caps it at the stream length, or a stage waiting on the lag would wait forever."""
    keys = PipelineKeys("lagtrim")
    stream = keys.frames
    await redis_client.xgroup_create(stream, "g", id="$", mkstream=True)
    for _ in range(50):
        await redis_client.xadd(stream, {"d": b"x"})
    await redis_client.xreadgroup("g", "c", {stream: ">"}, count=10)
    await redis_client.xtrim(stream, maxlen=0, approximate=False)
    stats = await StreamTransport(redis_client, keys, stage="t").group_stats(stream, "g")
    assert stats.lag <= await redis_client.xlen(stream) == 0
    assert stats.pending == 10
