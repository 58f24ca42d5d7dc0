"""Dead letters against a real redis-server and a real preprocess stage: `framestream dead list |
show | retry` (the real command line), trimming by age and count, and the listing across the
partitions of a Redis Cluster."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable

import numpy as np
import pytest

from stream.adapters.media.jpeg import encode_jpeg
from stream.adapters.metrics import metrics
from stream.adapters.redis.client import connect
from stream.adapters.redis.dead_letters import DeadLetters
from stream.adapters.redis.partitions import ensure_layout, recorded_keys
from stream.adapters.redis.server import LocalCluster, RedisServer
from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import Message, decode_message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.errors import UnknownDeadLetter
from stream.settings import Settings
from stream.stages import build_stage
from tests.waiting import until

MODEL = "mobilenet-v1-0.25-128-quant"
GROUP = PipelineKeys.group("preprocess", MODEL)
GARBAGE = b"\x80\x04garbage that is no framestream message" * 3


def frame(source: str, seq: int) -> bytes:
    rgb = np.tile(np.arange(64, dtype=np.uint8)[:, None, None], (1, 48, 3))
    meta = {"kind": "frame", "source": source, "seq": seq, "capture_ms": time.time() * 1000.0}
    meta["encoding"] = "jpeg"
    return encode_message(Message(meta=meta, array=np.frombuffer(encode_jpeg(rgb), np.uint8)))


def dead_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `framestream dead ...` command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "dead", *args, "--redis", url],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(dead_cli, url, *args)


def stage_settings(**dead_letters: object) -> Settings:
    return Settings(
        streams={"claim_idle_ms": 200, "block_ms": 50, "max_deliveries": 1, "drain_timeout_s": 5},
        dead_letters=dead_letters,
    )


@pytest.fixture
async def preprocess(redis_server: RedisServer, request: pytest.FixtureRequest) -> AsyncIterator:
    """Starts a real preprocess stage loop (model `MODEL`) on its own connection when called;
    settings from an indirect parameter when the test gives one. Stopped and drained at the end."""
    settings = getattr(request, "param", None) or stage_settings()
    client = await connect(redis_server.url)
    stage = build_stage("preprocess", settings, client, consumer="pre-1", model=MODEL)
    stop = asyncio.Event()
    started = False

    async def start() -> object:
        nonlocal started
        started = True
        tasks.append(asyncio.create_task(stage.run(stop)))
        return stage

    tasks: list[asyncio.Task[None]] = []
    yield start
    stop.set()
    if started:
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    await client.aclose()


async def tensors_of(client, keys: PipelineKeys) -> list[dict]:
    return [decode_message(f[FIELD.encode()]).meta for _, f in await client.xrange(keys.tensors(MODEL))]


async def test_dead_letters_are_listed_shown_retried_and_then_processed_by_the_stage(
    redis_server: RedisServer, redis_client, preprocess
) -> None:
    keys = PipelineKeys()
    await redis_client.xgroup_create(keys.frames, GROUP, id="0", mkstream=True)
    # a frame whose consumer died holding it (max_deliveries=1: the reclaim dead-letters it) ...
    await redis_client.xadd(keys.frames, {FIELD: frame("cam", 0)})
    assert await redis_client.xreadgroup(GROUP, "crashed", {keys.frames: ">"}, count=1)
    # ... and bytes that are no frame at all
    await redis_client.xadd(keys.frames, {FIELD: GARBAGE})
    counted = metrics.total("dead_letters", stage="preprocess")
    stage = await preprocess()
    await until(lambda: _equals(redis_client.xlen(keys.dead), 2), timeout_s=20, what="both dead-lettered")
    # both counted where the dashboard looks, the one the reclaim found too
    await until(lambda: _equals(_value(stage.dead_lettered), 2), timeout_s=20, what="both counted")
    assert metrics.total("dead_letters", stage="preprocess") - counted == 2

    listed = await run_cli(redis_server.url, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["reason"].split(":")[0].split(" ")[0]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"delivered", "undecodable"}, rows
    crashed, garbage = rows["delivered"], rows["undecodable"]
    assert (crashed["source"], crashed["seq"], crashed["stage"]) == ("cam", 0, "preprocess")
    assert (garbage["source"], garbage["seq"]) == (None, None)
    assert crashed["id"].startswith("0:") and 0 <= crashed["age_s"] < 60
    assert all(r["stream"] == keys.frames and r["group"] == GROUP and r["retryable"] for r in rows.values())

    table = await run_cli(redis_server.url, "list")  # a pipe: plain columns, nothing cut
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["id", "stage", "reason", "source", "seq", "age"]
    assert len(lines) == 2 and crashed["id"] in table.stdout and garbage["id"] in table.stdout

    shown = await run_cli(redis_server.url, "show", garbage["id"])
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["payload"]["bytes"] == len(GARBAGE) and "undecodable" in detail["payload"]
    assert detail["original_id"] and detail["deliveries"] == 1
    shown = json.loads((await run_cli(redis_server.url, "show", crashed["id"])).stdout)
    assert shown["payload"]["message"]["meta"]["source"] == "cam"
    assert shown["payload"]["message"]["dtype"] == "uint8"

    # retried: back on the frames stream, handled by the real stage, gone from the dead letters
    retried = await run_cli(redis_server.url, "retry", crashed["id"])
    assert retried.returncode == 0, retried.stderr
    assert f"retried {crashed['id']} -> {keys.frames}" in retried.stdout

    async def has_tensor() -> bool:
        return any((t["source"], t["seq"]) == ("cam", 0) for t in await tensors_of(redis_client, keys))

    await until(has_tensor, timeout_s=20, what="the retried frame's tensor")
    with pytest.raises(UnknownDeadLetter):
        await DeadLetters(redis_client, keys).get(crashed["id"])
    again = await run_cli(redis_server.url, "retry", crashed["id"])
    assert again.returncode == 1 and "no dead letter" in again.stderr

    # a bad one retried is dead-lettered again, with its reason, once: no loop
    assert (await run_cli(redis_server.url, "retry", "--all")).returncode == 0
    dead = DeadLetters(redis_client, keys)

    async def dead_again() -> bool:
        refs = [r.ref for r in await dead.newest(limit=10)]
        return len(refs) == 1 and refs != [garbage["id"]] and await _settled(redis_client, keys, 0, 0)

    await until(dead_again, timeout_s=20, what="the retried garbage dead-lettered again")
    (letter,) = await dead.newest(limit=10)
    assert letter.reason.startswith("undecodable")
    assert letter.stage == "preprocess" and letter.payload_bytes == len(GARBAGE)


async def _value(value: int) -> int:
    return value


async def _equals(value: Awaitable[int], want: int) -> bool:
    return await value == want


async def _settled(client, keys: PipelineKeys, dead_lettered: int, want: int) -> bool:
    """The stage has dead-lettered `want` entries in all and holds nothing."""
    stats = await StreamTransport(client, keys, stage="test").group_stats(keys.frames, GROUP)
    return dead_lettered >= want and stats.backlog == 0


async def test_cli_errors_say_what_to_do(redis_server: RedisServer, redis_client) -> None:
    missing = await run_cli(redis_server.url, "show", "0:123-0")
    assert missing.returncode == 1 and "no dead letter '0:123-0'" in missing.stderr
    malformed = await run_cli(redis_server.url, "show", "nonsense")
    assert malformed.returncode == 2 and "not a dead letter id" in malformed.stderr
    both = await run_cli(redis_server.url, "retry", "0:123-0", "--all")
    assert both.returncode == 2 and "give one ID, or --all" in both.stderr
    empty = await run_cli(redis_server.url, "list")
    assert empty.returncode == 0 and empty.stdout.strip() == "no dead letters"


async def test_a_letter_without_its_payload_is_not_retried_and_an_older_letter_is_read_alike(
    redis_client,
) -> None:
    keys = PipelineKeys()
    entry_id = (await redis_client.xadd(keys.dead, {
        "stage": "infer", "reason": "entry was deleted before it was processed",
        "stream": keys.scores(MODEL), "group": "infer:x", "id": "1-0", "deliveries": 1,
    })).decode()  # fmt: skip
    dead = DeadLetters(redis_client, keys)
    (outcome,) = await dead.retry_all()
    assert outcome.error is not None and "kept no payload" in outcome.error
    assert await redis_client.xlen(keys.dead) == 1 and await redis_client.xlen(keys.scores(MODEL)) == 0
    letter = await dead.get(entry_id)  # a bare entry id names it when one partition has it
    assert letter.payload_bytes is None and letter.summary(time.time() * 1000)["retryable"] is False

    # a letter written before letters recorded their size: read the same way, retried the same way
    old_frame = frame("old", 3)
    older = (await redis_client.xadd(keys.dead, {
        "stage": "preprocess", "reason": "undecodable", "stream": keys.frames, "group": GROUP, "id": "2-0",
        "deliveries": 1, FIELD: old_frame,
    })).decode()  # fmt: skip
    letter = await dead.get(f"0:{older}")
    assert (letter.payload_bytes, letter.source, letter.seq) == (len(old_frame), "old", 3)
    outcome = await dead.retry(f"0:{older}")
    (entry,) = await redis_client.xrange(keys.frames)
    assert entry[0].decode() == outcome.new_id and decode_message(entry[1][FIELD.encode()]).meta["seq"] == 3


async def test_dead_letters_are_trimmed_by_age_and_count_but_never_what_a_group_has_not_acked(
    redis_client,
) -> None:
    keys = PipelineKeys()
    dead = DeadLetters(redis_client, keys)
    now_ms = time.time() * 1000
    old_ms = int(now_ms - 2 * 3600 * 1000)
    for i in range(5):
        await redis_client.xadd(keys.dead, {"stage": "infer", "reason": "old"}, id=f"{old_ms}-{i}")
    for _ in range(30):
        await redis_client.xadd(keys.dead, {"stage": "infer", "reason": "new"})
    assert await dead.trim(max_len=20, max_age_s=3600, now_ms=now_ms) == 15
    kept = await redis_client.xrange(keys.dead)
    assert len(kept) == 20 and {f[b"reason"] for _, f in kept} == {b"new"}
    # an operator's group reading the dead letters: what it holds unacked survives any trim
    await redis_client.xgroup_create(keys.dead, "audit", id="0")
    held = await redis_client.xreadgroup("audit", "tool", {keys.dead: ">"}, count=3)
    held_ids = [i for i, _ in held[0][1]]
    await dead.trim(max_len=1, max_age_s=0.001, now_ms=now_ms + 10_000)
    assert [i for i, _ in (await redis_client.xrange(keys.dead))[:3]] == held_ids


@pytest.mark.parametrize("preprocess", [stage_settings(max_len=5)], indirect=True)
async def test_a_running_stage_keeps_its_dead_letters_within_max_len(redis_client, preprocess) -> None:
    keys = PipelineKeys()
    await redis_client.xgroup_create(keys.frames, GROUP, id="0", mkstream=True)
    for _ in range(40):
        await redis_client.xadd(keys.frames, {FIELD: GARBAGE})
    stage = await preprocess()
    await until(
        lambda: _settled(redis_client, keys, stage.dead_lettered, 40),
        timeout_s=20,
        what="all 40 dead-lettered",
    )
    await until(
        lambda: _at_most(redis_client.xlen(keys.dead), 5), timeout_s=20, what="the dead letters trimmed to 5"
    )


async def _at_most(value: Awaitable[int], most: int) -> bool:
    return await value <= most


async def test_listing_and_retry_span_the_partitions_of_a_redis_cluster(
    redis_cluster: LocalCluster, cluster_client
) -> None:
    keys = PipelineKeys("p", 3)
    await ensure_layout(cluster_client, keys)
    transport = StreamTransport(cluster_client, keys, stage="preprocess")
    for part in keys.all_partitions:
        await transport.ensure_group(part.frames, GROUP)
        await cluster_client.xadd(part.frames, {FIELD: GARBAGE + str(part.index).encode()})
        entries = await transport.read(part.frames, GROUP, "c", count=10, block_ms=None)
        good, bad = transport.decode(entries)
        assert not good and len(bad) == 1
        await transport.dead_letter(bad, GROUP)

    listed = await run_cli(redis_cluster.url, "list", "--json")  # the CLI finds the 3 partitions itself
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(r["partition"] for r in rows) == [0, 1, 2]
    assert all(r["stream"] == keys.partition(r["partition"]).frames for r in rows)

    dead = DeadLetters(cluster_client, await recorded_keys(cluster_client, "p"))
    (third,) = [r for r in rows if r["partition"] == 2]
    outcome = await dead.retry(third["id"])  # one script on partition 2's slot
    assert outcome.stream == keys.partition(2).frames
    newest = await cluster_client.xrevrange(keys.partition(2).frames, count=1)
    assert newest[0][0].decode() == outcome.new_id and newest[0][1][FIELD.encode()] == GARBAGE + b"2"
    assert await dead.count() == 2
    assert await dead.trim(max_len=1, max_age_s=3600) == 0  # one letter per partition: nothing to do
