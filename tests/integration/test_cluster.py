"""Redis Cluster mode against a real cluster (3 masters + 3 replicas, `LocalCluster`)."""

from __future__ import annotations

import pytest

from stream.adapters.redis_client import connect, is_cluster
from stream.adapters.redis_server import LocalCluster, RedisServer
from stream.adapters.redis_streams import Output, StreamTransport
from stream.core.keys import PipelineKeys
from stream.errors import TransportError


async def test_any_node_url_opens_a_cluster_client_that_follows_redirections(redis_cluster: LocalCluster):
    keys = PipelineKeys("anynode")
    for node in redis_cluster.nodes:
        if node.process is None:
            continue
        client = await connect(node.url)
        try:
            assert is_cluster(client)
            await client.xadd(keys.frames, {"d": b"x"})  # its slot is served by one master only
        finally:
            await client.aclose()
    client = await connect(redis_cluster.url)
    assert await client.xlen(keys.frames) >= 1
    await client.aclose()


async def test_plain_redis_stays_a_plain_client_and_forcing_cluster_on_it_says_why(redis_server: RedisServer):
    client = await connect(redis_server.url)
    assert not is_cluster(client)
    await client.aclose()
    with pytest.raises(TransportError, match="not in cluster mode"):
        await connect(redis_server.url, cluster=True)


async def test_forward_is_one_transaction_on_the_partition_slot(cluster_client):
    """Outputs + acks in one MULTI/EXEC on a cluster: the input is acked exactly when the output exists."""
    keys = PipelineKeys("fwd")
    transport = StreamTransport(cluster_client, keys, stage="test", claim_idle_ms=100)
    await transport.ensure_group(keys.frames, "work")
    await transport.publish([Output(keys.frames, f"{i}".encode()) for i in range(50)])
    entries = await transport.read(keys.frames, "work", "c", count=100, block_ms=100)
    assert len(entries) == 50
    await transport.forward([Output(keys.tensors("m"), e.data or b"") for e in entries], "work", entries)
    assert await cluster_client.xlen(keys.tensors("m")) == 50
    assert (await transport.group_stats(keys.frames, "work")).backlog == 0
