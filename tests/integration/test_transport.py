"""The delivery rules, against a real redis-server."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import numpy as np
import pytest

from stream.adapters.redis.client import connect
from stream.adapters.redis.entries import Output, text
from stream.adapters.redis.server import RedisServer
from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import Message, decode_message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from tests.faults.aof import rewrite_aof
from tests.waiting import poll

KEYS = PipelineKeys("t")
IN, OUT, GROUP = KEYS.frames, KEYS.tensors("m"), "work"


def _frame(seq: int) -> bytes:
    return encode_message(Message({"source": "s", "seq": seq}, np.full((2, 2, 3), seq % 256, np.uint8)))


async def _produce(transport: StreamTransport, n: int, bad: set[int] = frozenset()) -> None:
    outputs = [Output(IN, b"garbage" if i in bad else _frame(i)) for i in range(n)]
    for start in range(0, n, 200):
        await transport.publish(outputs[start : start + 200])


async def _consume_all(
    transport: StreamTransport, consumer: str, *, expect: int, fail=lambda m: False
) -> int:
    """A minimal stage loop: reclaim, read, decode, forward. Returns how many it forwarded.

    A message for which `fail` is true "crashes" the consumer: it restarts under the same name
    and first takes back what it held (`recover_own`), as a stage does.
    """
    forwarded = 0
    restarted = False
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        out_len = await transport.client.xlen(OUT)
        dead_len = await transport.client.xlen(KEYS.dead)
        if out_len + dead_len >= expect:
            return forwarded
        assert asyncio.get_running_loop().time() < deadline, f"stuck at {out_len}+{dead_len}/{expect}"
        entries = await transport.recover_own(IN, GROUP, consumer) if restarted else []
        restarted = False
        entries += await transport.reclaim(IN, GROUP, consumer)
        entries += await transport.read(IN, GROUP, consumer, count=50, block_ms=20)
        good, bad = transport.decode(entries)
        await transport.dead_letter(bad, GROUP)
        ok = [(e, m) for e, m in good if not fail(m)]
        restarted = len(ok) < len(good)
        await transport.forward([Output(OUT, e.data) for e, _ in ok], GROUP, [e for e, _ in ok])
        forwarded += len(ok)


async def _output_seqs(client) -> list[int]:
    rows = await client.xrange(OUT)
    return [decode_message(f[FIELD.encode()]).meta["seq"] for _, f in rows]


@pytest.fixture
async def transport(redis_client):
    t = StreamTransport(redis_client, KEYS, stage="test", max_deliveries=3, claim_idle_ms=100)
    await t.ensure_group(IN, GROUP)
    return t


async def test_entries_of_a_consumer_that_died_are_reclaimed_by_another(transport):
    await _produce(transport, 1000)
    held = await transport.read(IN, GROUP, "doomed", count=300, block_ms=None)
    assert len(held) == 300  # read, never acked: the consumer "dies" here

    await _consume_all(transport, "survivor", expect=1000)

    seqs = await _output_seqs(transport.client)
    assert sorted(set(seqs)) == list(range(1000)), "every entry must be processed"
    duplicates = sum(c - 1 for c in Counter(seqs).values())
    assert duplicates == 0  # forward is atomic, so a reclaim never duplicates an output
    info = await transport.group_stats(IN, GROUP)
    assert info.pending == 0 and info.lag == 0


async def _silent(transport: StreamTransport, consumer: str) -> None:
    """Wait until `consumer` has not talked to Redis for `claim_idle_ms` (so nor touched its entries)."""

    async def silent() -> bool:
        infos = await transport.client.xinfo_consumers(IN, GROUP)
        return any(text(c["name"]) == consumer and int(c["idle"]) >= transport.claim_idle_ms for c in infos)

    assert await poll(silent, timeout_s=30, every_s=0.02), f"{consumer} never fell silent"


async def _held_idle(transport: StreamTransport, consumer: str, n: int) -> None:
    """Wait until `n` entries `consumer` holds have been idle for `claim_idle_ms`."""

    async def idle() -> bool:
        rows = await transport.client.xpending_range(
            IN, GROUP, min="-", max="+", count=n, consumername=consumer, idle=transport.claim_idle_ms
        )
        return len(rows) >= n

    assert await poll(idle, timeout_s=30, every_s=0.02), f"{consumer}'s entries never idle"


async def test_reclaimed_entries_carry_their_delivery_count(transport):
    await _produce(transport, 5)
    await transport.read(IN, GROUP, "a", count=5, block_ms=None)
    await _silent(transport, "a")
    reclaimed = await transport.reclaim(IN, GROUP, "b")
    assert [e.deliveries for e in reclaimed] == [2] * 5
    assert [e.deliveries for e in await transport.recover_own(IN, GROUP, "b")] == [3] * 5


async def test_a_live_consumer_keeps_its_entries_while_it_keeps_reading(redis_client):
    """Only silent consumers lose entries: a slow one that still reads is not a dead one."""
    # claim_idle_ms far above the few ms between the slow consumer's read and the reclaims below
    transport = StreamTransport(redis_client, KEYS, stage="test", claim_idle_ms=1_000)
    await transport.ensure_group(IN, GROUP)
    await _produce(transport, 10)
    held = await transport.read(IN, GROUP, "slow", count=5, block_ms=None)
    await _held_idle(transport, "slow", 5)  # its held entries are now older than claim_idle_ms...
    await transport.read(IN, GROUP, "slow", count=1, block_ms=None)  # ...but it is alive
    assert await transport.reclaim(IN, GROUP, "other") == []
    assert await transport.reclaim(IN, GROUP, "slow") == [], "a consumer must not reclaim from itself"
    await _silent(transport, "slow")  # now it has been silent for claim_idle_ms
    assert [e.id for e in await transport.reclaim(IN, GROUP, "other")][:5] == [e.id for e in held]


async def test_malformed_entries_are_dead_lettered_with_a_reason(transport):
    bad = {3, 99, 100, 250, 400, 401, 402, 700, 998, 999}
    await _produce(transport, 1000, bad=bad)
    await _consume_all(transport, "c", expect=1000)

    assert len(await _output_seqs(transport.client)) == 990
    dead = await transport.client.xrange(KEYS.dead)
    assert len(dead) == 10
    for _, fields in dead:
        assert fields[b"stage"] == b"test"
        assert fields[b"reason"].startswith(b"undecodable: bad magic")
        assert fields[b"stream"] == IN.encode()
        assert fields[FIELD.encode()] == b"garbage"
    assert (await transport.group_stats(IN, GROUP)).pending == 0
    assert await transport.client.hget(KEYS.counters, "dead:test") == b"10"  # the console's count


async def test_poison_entry_is_dead_lettered_after_max_deliveries_not_before(transport):
    await _produce(transport, 20)
    attempts: Counter[int] = Counter()

    def fail(message) -> bool:
        seq = message.meta["seq"]
        if seq == 7:
            attempts[seq] += 1
            return True
        return False

    await _consume_all(transport, "c", expect=20, fail=fail)

    assert attempts[7] == transport.max_deliveries  # tried exactly max_deliveries times
    dead = await transport.client.xrange(KEYS.dead)
    assert len(dead) == 1
    assert b"max_deliveries=3" in dead[0][1][b"reason"]
    assert int(dead[0][1][b"deliveries"]) == 4
    assert await transport.client.hget(KEYS.counters, "dead:test") == b"1"
    assert sorted(await _output_seqs(transport.client)) == [s for s in range(20) if s != 7]


async def _slow_and_fast_groups(transport) -> list[str]:
    """500 entries; group 'fast' acks all; 'slow' holds 100 delivered-unacked. Returns held ids."""
    await transport.ensure_group(IN, "fast")
    await _produce(transport, 500)
    fast = await transport.read(IN, "fast", "f", count=500, block_ms=None)
    await transport.forward([], "fast", fast)
    await transport.ensure_group(IN, "slow")
    slow = await transport.read(IN, "slow", "s", count=150, block_ms=None)
    await transport.forward([], "slow", slow[:50])
    return [e.id for e in slow[50:]]


async def test_safe_trim_never_deletes_unacked_entries_but_maxlen_does(redis_client):
    transport = StreamTransport(redis_client, KEYS, stage="test")
    held = await _slow_and_fast_groups(transport)

    deleted = await transport.trim(IN)
    assert deleted == 50  # only what every group acked and read
    pending = await transport.read_own_pending(IN, "slow", "s", count=1000)
    assert [e.id for e in pending] == held
    assert all(e.data is not None for e in pending), "a safe trim deleted an unacked entry"
    # the 350 entries 'slow' has not read yet are still there too
    unread = await transport.read(IN, "slow", "s", count=1000, block_ms=None)
    assert len(unread) == 350

    # Negative control: the plain MAXLEN trim loses the held entries on this very server.
    await redis_client.delete(IN)
    held = await _slow_and_fast_groups(transport)
    await redis_client.xtrim(IN, maxlen=10, approximate=False)
    pending = await transport.read_own_pending(IN, "slow", "s", count=1000)
    assert [e.id for e in pending] == held
    assert all(e.data is None for e in pending), "MAXLEN should have deleted the held entries"
    good, bad = transport.decode(pending)
    assert not good and all("deleted" in letter.reason for letter in bad)


async def test_trim_keeps_the_newest_entries_when_asked(redis_client):
    transport = StreamTransport(redis_client, KEYS, stage="test")
    await transport.ensure_group(IN, "g")
    await _produce(transport, 100)
    entries = await transport.read(IN, "g", "c", count=100, block_ms=None)
    await transport.forward([], "g", entries)
    assert await transport.trim(IN, keep=30) == 70
    assert await redis_client.xlen(IN) == 30


async def test_group_stats_report_lag_and_pending(transport):
    await _produce(transport, 40)
    await transport.read(IN, GROUP, "c", count=15, block_ms=None)
    stats = await transport.group_stats(IN, GROUP)
    assert (stats.lag, stats.pending, stats.backlog) == (25, 15, 40)


async def test_forward_is_atomic_with_the_ack(transport):
    await _produce(transport, 3)
    entries = await transport.read(IN, GROUP, "c", count=3, block_ms=None)
    ids = await transport.forward([Output(OUT, b"x"), Output(OUT, b"y")], GROUP, entries)
    assert len(ids) == 2
    assert (await transport.group_stats(IN, GROUP)).pending == 0
    assert await transport.client.xlen(OUT) == 2


async def _read_and_ack(transport: StreamTransport, n: int) -> None:
    entries = await transport.read(IN, "g", "c", count=n, block_ms=None)
    assert len(entries) == n
    await transport.forward([], "g", entries)


@pytest.fixture
async def aof_transport(tmp_path) -> AsyncIterator[tuple[RedisServer, StreamTransport]]:
    """A private redis-server with AOF on, and a transport on it with a group "g" on `IN`."""
    server = RedisServer(aof=True, data_dir=tmp_path).start()
    transport = StreamTransport(await connect(server.url), KEYS, stage="test")
    # every write reaches the AOF before its reply: with everysec, a busy disk lets Redis hold
    # writes back for up to 2 s, and the kill -9 would lose reads these tests count on
    await transport.client.config_set("appendfsync", "always")
    await transport.ensure_group(IN, "g")
    try:
        yield server, transport
    finally:
        await transport.client.aclose()
        server.close()


async def _kill_and_restart(server: RedisServer, transport: StreamTransport) -> None:
    """`kill -9` redis-server, start it again from its AOF and reconnect `transport`."""
    await transport.client.aclose()
    server.kill()
    server.start()
    transport.client = await connect(server.url)


async def test_a_read_counter_lost_in_an_aof_restart_is_repaired_once_the_group_caught_up(aof_transport):
    server, transport = aof_transport
    await _produce(transport, 10)
    await _read_and_ack(transport, 10)
    await rewrite_aof(transport.client)  # the AOF's base now records 10 entries read
    await _produce(transport, 10)
    await _read_and_ack(transport, 10)  # logged as XCLAIM ... LASTID: no read counter
    await _kill_and_restart(server, transport)
    client = transport.client
    stale = await transport.group_stats(IN, "g")
    if stale.lag == 0:
        pytest.skip("this redis-server keeps a group's read counter across an AOF restart")
    assert stale.lag == 10  # nothing is unread, yet Redis reports the 10 reads it forgot

    await _produce(transport, 5)
    cursor = (await client.xinfo_groups(IN))[0]["last-delivered-id"]
    assert not await transport.repair_lag(IN, "g")  # 5 unread: the true lag is unknown here
    assert (await client.xinfo_groups(IN))[0]["last-delivered-id"] == cursor
    assert (await transport.group_stats(IN, "g")).lag == 15  # 5 unread + the 10 forgotten

    await _read_and_ack(transport, 5)
    assert await transport.repair_lag(IN, "g")
    assert (await transport.group_stats(IN, "g")).lag == 0
    assert (await client.xinfo_groups(IN))[0]["last-delivered-id"] != cursor  # nothing re-read
    await _produce(transport, 3)
    assert (await transport.group_stats(IN, "g")).lag == 3  # and it counts right from then on
    assert not await transport.repair_lag(IN, "g")


async def test_repair_lag_leaves_missing_streams_and_right_counters_alone(transport):
    assert not await transport.repair_lag("t:no-such-stream", "g")
    await _produce(transport, 2)
    assert not await transport.repair_lag(IN, "no-such-group")
    await transport.forward([], GROUP, await transport.read(IN, GROUP, "c", count=2, block_ms=None))
    assert not await transport.repair_lag(IN, GROUP)  # caught up with a right counter: left alone


async def test_group_stats_count_the_unread_entries_when_redis_cannot_tell_the_lag(aof_transport):
    server, transport = aof_transport
    await _produce(transport, 20)
    await transport.read(IN, "g", "c", count=15, block_ms=None)
    await _kill_and_restart(server, transport)  # the reads were logged as XCLAIM ... LASTID
    if (await transport.client.xinfo_groups(IN))[0]["lag"] is not None:
        pytest.skip("this redis-server knows the lag after an AOF restart")
    stats = await transport.group_stats(IN, "g")
    assert (stats.lag, stats.pending) == (5, 15)
