"""streams.replica_acks against real redis-servers: WAIT counts the replicas holding the write it
follows (plain primary + replica, and a Redis Cluster), a shortfall is counted and the write
stands, and what a master killed (-9) in the middle of a live stream loses with 0 and with 1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from redis.crc import key_slot

from stream.adapters.metrics import metrics
from stream.adapters.redis.client import connect, refresh_cluster_view
from stream.adapters.redis.entries import Output
from stream.adapters.redis.fenced_commit import Fenced
from stream.adapters.redis.outage import REDIS_TRANSIENT
from stream.adapters.redis.server import LocalCluster, RedisServer
from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import Message, decode_message, encode_message
from stream.core.keys import PipelineKeys
from stream.errors import ConfigError, LeaseLost
from stream.settings import Settings
from stream.stages import build_stage
from tests.faults.checker import Outcome, check
from tests.waiting import wait_until

SOURCE = "cam-live"
_PIXELS = np.zeros((128, 128, 3), np.uint8)  # a v1-sized frame: 49 KB per entry
_ACK_TIMEOUT_MS = 2_000
"""How long WAIT gives the replica: a live one acknowledges well within it on a busy machine
(with 300 ms a write to a live replica came up short once in a full run), and a stopped one
costs a test only this long."""


def _frame(seq: int) -> bytes:
    return encode_message(Message({"source": SOURCE, "seq": seq}, _PIXELS))


@contextlib.contextmanager
def _stopped(node: RedisServer) -> Iterator[None]:
    """SIGSTOP `node` (it holds its socket open but acknowledges nothing), SIGCONT after."""
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(node.process.pid, signal.SIGCONT)


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    with RedisServer() as primary, RedisServer() as replica:
        with redis.Redis(port=replica.port) as r:
            r.replicaof("127.0.0.1", primary.port)

            def linked() -> bool:
                return r.info("replication").get("master_link_status") == "up"

            wait_until(linked, timeout_s=10, what="replica link up")
        yield primary, replica


async def _publish_one(transport: StreamTransport, stream: str, seq: int) -> bool:
    """Publish one frame; True when it came back with `replica_acks` replicas holding it."""
    before = transport.replica_shortfalls
    await transport.publish([Output(stream, _frame(seq))])
    return transport.replica_shortfalls == before


async def test_plain_wait_counts_the_replica_holding_the_write_and_a_shortfall_is_counted_not_raised(
    primary_and_replica: tuple[RedisServer, RedisServer],
):
    primary, replica = primary_and_replica
    keys = PipelineKeys("acks")
    client = await connect(primary.url)
    transport = StreamTransport(
        client, keys, stage="ingest", replica_acks=1, replica_ack_timeout_ms=_ACK_TIMEOUT_MS
    )
    counted = metrics.total("replica_shortfalls", stage="ingest")
    try:
        assert await _publish_one(transport, keys.frames, 0)
        with _stopped(replica):
            start = time.monotonic()
            # WAIT sent on any connection but the one that wrote would answer 1 at once here
            assert not await _publish_one(transport, keys.frames, 1)
            assert time.monotonic() - start >= _ACK_TIMEOUT_MS / 1000
        assert transport.replica_shortfalls == 1
        assert metrics.total("replica_shortfalls", stage="ingest") == counted + 1
        assert await client.xlen(keys.frames) == 2  # the short write stands
        assert await _publish_one(transport, keys.frames, 2)  # the replica caught up
    finally:
        await client.aclose()


async def test_replica_acks_0_never_waits(primary_and_replica: tuple[RedisServer, RedisServer]):
    primary, replica = primary_and_replica
    keys = PipelineKeys("acks")
    client = await connect(primary.url)
    transport = StreamTransport(client, keys, stage="ingest")
    try:
        with _stopped(replica):
            start = time.monotonic()
            await transport.publish([Output(keys.frames, _frame(0))])
            assert time.monotonic() - start < 0.2
    finally:
        await client.aclose()


def _replica_of(cluster: LocalCluster, master: RedisServer) -> RedisServer | None:
    """A running replica in sync with `master`, if it has one."""
    with redis.Redis(port=master.port) as r:
        info = r.info("replication")
    for key, row in info.items():
        if key.startswith("slave") and isinstance(row, dict) and row.get("state") == "online":
            return next((n for n in cluster.nodes if n.port == int(row["port"]) and n.process), None)
    return None


async def test_cluster_wait_goes_to_the_partition_master_that_took_the_write(
    redis_cluster: LocalCluster, cluster_client
):
    # a pipeline whose partition's master still has a replica (an earlier test may have killed one)
    for name in (f"acks{i}" for i in range(64)):
        keys = PipelineKeys(name)
        master = redis_cluster.master_for_slot(key_slot(keys.frames.encode()))
        replica = _replica_of(redis_cluster, master)
        if replica is not None:
            break
    else:
        pytest.skip("no master of the session cluster has a live replica")
    transport = StreamTransport(
        cluster_client, keys, stage="ingest", replica_acks=1, replica_ack_timeout_ms=_ACK_TIMEOUT_MS
    )
    assert await _publish_one(transport, keys.frames, 0)
    with _stopped(replica):
        assert not await _publish_one(transport, keys.frames, 1)
    assert await _publish_one(transport, keys.frames, 2)
    await transport.ensure_group(keys.frames, "g")
    entries = await transport.read(keys.frames, "g", "c", count=10, block_ms=None)
    # forward waits too: its transaction (outputs + acks) runs on the same partition master
    with _stopped(replica):
        await transport.forward([Output(keys.scores("m"), b"x")], "g", entries)
    assert transport.replica_shortfalls == 2


def test_replica_acks_on_a_client_without_the_hook_says_what_to_do():
    class _NoHook:
        def pipeline(self, transaction: bool = True) -> object:
            return object()

    with pytest.raises(ConfigError, match="replica_acks"):
        StreamTransport(_NoHook(), PipelineKeys("acks"), stage="ingest", replica_acks=1)  # type: ignore[arg-type]


# --- a master killed in the middle of a live stream -------------------------------------------

_MIN_AFTER_FAILOVER = 50


async def _read_back(client, stream: str) -> dict[int, str]:
    """seq -> entry id of every frame the stream holds now."""
    held: dict[int, str] = {}
    async with asyncio.timeout(30):
        while True:
            try:
                await refresh_cluster_view(client)
                rows = await client.xrange(stream)
                break
            except REDIS_TRANSIENT:
                await asyncio.sleep(0.2)
    for entry_id, fields in rows:
        seq = int(decode_message(fields[b"d"]).meta["seq"])
        held[seq] = entry_id.decode()
    return held


_KILL_AT = 300
_LAG_FROM = 280
_LAG_BYTES = 20 * len(_frame(0))


async def _live_camera_through_a_master_kill(replica_acks: int, lagging: bool) -> tuple[Outcome, dict]:
    """Publish frames of a live source as fast as the partition takes them (as ingest does: a
    frame that cannot be written is dropped, a live camera cannot send it again); SIGKILL the
    partition's master at frame 300, racing the publishes; go on until frames flow again on its
    promoted replica. Then check which acknowledged frames the stream still holds.

    `lagging`: the replica is stopped (SIGSTOP) from frame 280 and resumed right after the kill,
    as a replica behind on a slow link is; the kill waits (past frame 300) until the master holds
    20 frames' worth of replication stream it could not even hand to the kernel (its replica
    client's output buffer): what the socket buffers took still reaches the replica after the
    kill, that buffer does not."""
    with LocalCluster(masters=3, replicas=1) as cluster:
        client = await connect(cluster.url)
        keys = PipelineKeys("live")
        transport = StreamTransport(
            client, keys, stage="ingest", replica_acks=replica_acks, replica_ack_timeout_ms=100
        )
        victim = cluster.master_for_slot(key_slot(keys.frames.encode()))
        replica = _replica_of(cluster, victim)
        assert replica is not None and replica.process is not None
        replica_pid = replica.process.pid

        def kill_then_resume_replica() -> None:
            victim.kill()
            os.kill(replica_pid, signal.SIGCONT)

        def replica_acks_writes() -> bool:
            """The master's replica acknowledges a write within the publishes' own timeout: a
            fresh cluster's replica can still be loading its first sync, and frames published
            then would count as short of replicas before any fault."""
            with redis.Redis(port=victim.port) as r:
                r.set(f"{{{keys.tag}}}:probe", "1")
                return int(r.execute_command("WAIT", 1, 100)) >= 1

        wait_until(replica_acks_writes, timeout_s=30, what="the replica acknowledging writes")

        def stuck_on_master() -> int:
            """Bytes of replication stream waiting in the master for its stopped replica."""
            with redis.Redis(port=victim.port, decode_responses=True) as r:
                return sum(int(c["omem"]) for c in r.client_list(_type="replica"))

        acked: list[int] = []  # publish returned (with replica_acks replicas, when > 0)
        short: list[int] = []  # publish returned, fewer replicas than asked
        dropped: list[int] = []  # publish failed: the camera's frame is gone, never acknowledged
        kill: asyncio.Future[None] | None = None
        killed_at = 0
        dead_from: int | None = None  # first frame published after the master was surely dead
        seq = 0
        deadline = time.monotonic() + 120
        try:
            while (
                dead_from is None or len([s for s in acked + short if s >= dead_from]) < _MIN_AFTER_FAILOVER
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"frames did not flow again after the kill at {killed_at}")
                if lagging and seq == _LAG_FROM:
                    os.kill(replica_pid, signal.SIGSTOP)
                    # each write now waits out the timeout: keep that short, or filling the
                    # socket buffers (MBs) takes minutes
                    transport.replica_ack_timeout_ms = 5
                if kill is None and seq >= _KILL_AT and (not lagging or stuck_on_master() >= _LAG_BYTES):
                    killed_at = seq
                    # in a thread: races the publishes
                    kill = asyncio.ensure_future(asyncio.to_thread(kill_then_resume_replica))
                if dead_from is None and kill is not None and kill.done():
                    dead_from = seq
                try:
                    (acked if await _publish_one(transport, keys.frames, seq) else short).append(seq)
                except REDIS_TRANSIENT:
                    dropped.append(seq)
                    await asyncio.sleep(0.05)
                    with contextlib.suppress(*REDIS_TRANSIENT):
                        await refresh_cluster_view(client)
                seq += 1
            assert kill is not None
            await kill
            held = await _read_back(client, keys.frames)
            name = f"replica_acks={replica_acks}, master kill -9, lagging={lagging}"
            outcome = check(name, [(SOURCE, s) for s in acked], [(SOURCE, s) for s in held])
            # the checker can see loss: delete one acknowledged frame it found, check again
            victim_seq = next(s for s in acked if s in held)
            await client.xdel(keys.frames, held[victim_seq])
            held_after = await _read_back(client, keys.frames)
            control = check("control: one acknowledged frame deleted", [(SOURCE, s) for s in acked],
                            [(SOURCE, s) for s in held_after])  # fmt: skip
            figures = {
                "replica_acks": replica_acks,
                "replica_lagging": lagging,
                "published": seq,
                "acknowledged": len(acked),
                "acknowledged_lost": outcome.lost,
                "acknowledged_lost_before_kill": len([s for s in acked if s < killed_at and s not in held]),
                "short_of_replicas": len(short),
                "short_lost": len([s for s in short if s not in held]),
                "dropped_by_camera": len(dropped),
                "acknowledged_before_kill": len([s for s in acked if s < killed_at]),
                "published_while_lagging": killed_at - _LAG_FROM if lagging else 0,
                "in_flight_during_kill": (dead_from or seq) - killed_at,
                "control_lost": control.lost,
                "promoted": cluster.master_for_slot(key_slot(keys.frames.encode())).port != victim.port,
            }
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(replica_pid, signal.SIGCONT)
            await client.aclose()
    return outcome, figures


@pytest.mark.slow
@pytest.mark.parametrize("lagging", [False, True], ids=["replica-in-sync", "replica-lagging"])
@pytest.mark.parametrize("replica_acks", [0, 1])
async def test_live_source_master_kill_loses_no_acknowledged_frame_with_replica_acks_1(
    replica_acks: int, lagging: bool
):
    try:
        outcome, figures = await _live_camera_through_a_master_kill(replica_acks, lagging)
    except ConfigError as e:
        pytest.skip(f"no local Redis Cluster: {e}")
    print(f"\nlive source, master kill -9: {figures}")
    assert figures["promoted"], "the master's replica did not take over: no failover was tested"
    assert figures["acknowledged_before_kill"] >= _LAG_FROM, "the kill came before the stream ran"
    assert figures["control_lost"] == outcome.lost + 1, "the checker did not see a deleted frame"
    if replica_acks == 1:
        # every frame acknowledged with one replica holding it survives its master's death
        assert outcome.lost == 0, figures
        if lagging:  # the frames the stopped replica could not acknowledge were reported short
            assert figures["short_of_replicas"] >= figures["published_while_lagging"], figures
    elif lagging:
        # with 0, what only the master held is gone with it: the loss replica_acks=1 prevents
        assert outcome.lost >= 1, figures
    # with 0 and the replica in sync, loss is possible but not certain: reported, not asserted


async def test_env_setting_reaches_the_stages_transports(
    primary_and_replica: tuple[RedisServer, RedisServer], monkeypatch: pytest.MonkeyPatch, tmp_path
):
    primary, _ = primary_and_replica
    monkeypatch.setenv("FRAMESTREAM_STREAMS__REPLICA_ACKS", "1")
    monkeypatch.setenv("FRAMESTREAM_STREAMS__REPLICA_ACK_TIMEOUT_MS", "250")
    settings = Settings(models={"cache_dir": tmp_path})
    client = await connect(primary.url)
    try:
        for name in ("ingest", "preprocess"):
            stage = build_stage(
                name,
                settings,
                client,
                consumer=f"{name}-0",
                model=None if name == "ingest" else "mobilenet-v1-0.25-128-quant",
            )
            assert (stage.transport.replica_acks, stage.transport.replica_ack_timeout_ms) == (1, 250), name
    finally:
        await client.aclose()


async def test_a_fenced_forward_waits_for_replicas_too_and_is_still_fenced(
    primary_and_replica: tuple[RedisServer, RedisServer],
):
    """Postprocess commits through the fenced script: with replica_acks it runs in a transaction so
    WAIT follows it on its own connection, and a commit without the lease still writes nothing."""
    primary, replica = primary_and_replica
    keys = PipelineKeys("fenced-acks")
    client = await connect(primary.url)
    transport = StreamTransport(
        client, keys, stage="postprocess", replica_acks=1, replica_ack_timeout_ms=_ACK_TIMEOUT_MS
    )
    lease, state_key = f"{keys.prefix}:owner", f"{keys.prefix}:state"  # the partition's hash tag
    try:
        await client.set(lease, "me")
        await transport.ensure_group(keys.frames, "g")
        for seq in range(3):
            await client.xadd(keys.frames, {"f": _frame(seq)})
        entries = await transport.read(keys.frames, "g", "c", count=10, block_ms=None)
        fence = Fenced(lease, "me", state_key, {"cam": "1"})
        await transport.forward([Output(keys.results, b"r0")], "g", entries[:1], fenced=[fence])
        assert transport.replica_shortfalls == 0
        with _stopped(replica):
            await transport.forward([Output(keys.results, b"r1")], "g", entries[1:2], fenced=[fence])
        assert transport.replica_shortfalls == 1  # WAIT ran on the script's connection
        assert await client.hget(state_key, "cam") == b"1"
        with pytest.raises(LeaseLost):
            await transport.forward(
                [Output(keys.results, b"r2")],
                "g",
                entries[2:],
                fenced=[Fenced(lease, "other", state_key, {"cam": "2"})],
            )
        assert await client.xlen(keys.results) == 2
        assert await client.hget(state_key, "cam") == b"1"
    finally:
        await client.aclose()
