"""Redis Cluster mode against a real cluster (3 masters + 3 replicas, `LocalCluster`)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot
from rich.console import Console

from stream.adapters.media.video import write_demo_clip
from stream.adapters.redis.client import connect, is_cluster
from stream.adapters.redis.entries import Output
from stream.adapters.redis.server import LocalCluster, RedisServer
from stream.adapters.redis.streams import StreamTransport
from stream.core.keys import PipelineKeys
from stream.errors import TransportError
from stream.runners.drive import DriveOptions, drive
from stream.settings import Settings

V1 = "mobilenet-v1-0.25-128-quant"


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


@pytest.fixture
def no_info_user(redis_cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    """An ACL user on every node of the cluster that may not run INFO (as in managed Redis
    offerings): a client cannot ask the server whether it is a cluster, `redis.cluster` says so."""
    user, password = "no-info", "no-info-password"
    live = [n for n in redis_cluster.nodes if n.process is not None]
    for node in live:
        with redis.Redis(host=node.bind, port=node.port) as admin:
            admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
                              commands=["+@all", "-info"], reset=True)  # fmt: skip
    yield user, password
    for node in live:
        with redis.Redis(host=node.bind, port=node.port) as admin:
            admin.acl_deluser(user)


async def test_the_ray_driver_honours_redis_cluster(redis_cluster: LocalCluster, no_info_user) -> None:
    """`framestream run` (Ray) drives the run through a client made from the settings: with
    ``redis.cluster: true`` a cluster client, also where the server cannot be asked."""
    user, password = no_info_user
    settings = Settings(
        redis={"url": redis_cluster.url, "username": user, "password": password, "cluster": True},
        streams={"pipeline": "fleet", "partitions": 3},  # partitions on 3 different masters
    )
    options = DriveOptions(models=[V1], synthetic=[])
    out = io.StringIO()
    stop = asyncio.Event()
    stop.set()  # no source: the run would go on until stopped

    played = await drive(options, settings, redis_cluster.url, [], Console(file=out, width=120), stop=stop)

    assert (played.summary.published, played.summary.results) == (0, 0)


def _run_cli(url: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "stream.cli", "run", "--runner", "processes", "--redis", url, *args]
    return subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _results(path: Path) -> dict[str, list[int]]:
    """Source -> seqs of the results in the JSONL file, which the run may be appending to: only
    complete lines count (the last one may be half written)."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for line in path.read_text().split("\n")[:-1] if path.exists() else []:
        row = json.loads(line)
        seqs[row["source"]].append(row["seq"])
    return seqs


@pytest.mark.slow
def test_framestream_run_on_a_replica_node_of_a_cluster(
    redis_cluster: LocalCluster, shared_dir: Path, tmp_path: Path
):
    """`framestream run --redis redis://<any cluster node>`, a replica too (it answers MOVED)."""
    clip = write_demo_clip(tmp_path / "demo.mp4", frames=60)
    results = tmp_path / "results.jsonl"
    replica = redis_cluster.nodes[-1]  # `--cluster create` makes the last nodes replicas
    env = {
        "FRAMESTREAM_MODELS__WEIGHTS_DIR": str(shared_dir / "models"),
        "FRAMESTREAM_STREAMS__PIPELINE": "onenode",
    }
    args = ["--source", str(clip), "--model", V1, "--results", str(results), "--json"]
    proc = _run_cli(replica.url, args, env)
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err[-3000:]
    assert sorted(_results(results)["demo"]) == list(range(60))
    assert json.loads(out)["results"] == 60


@pytest.mark.slow
def test_kill_9_of_the_master_mid_run_replica_promoted_no_frame_lost_run_ends_by_itself(
    shared_dir: Path, tmp_path: Path
):
    """P = 1 (the whole pipeline on one slot): SIGKILL the master serving it while frames flow; its
    replica takes over, every stage and the runner ride it out, and every frame of the file
    sources gets its result (duplicates, if the last writes were not replicated, are counted in
    the run's table and removed at the sink)."""
    frames = 600
    clips = [write_demo_clip(tmp_path / f"demo{i}.mp4", frames=frames) for i in range(2)]
    results = tmp_path / "results.jsonl"
    env = {
        "FRAMESTREAM_MODELS__WEIGHTS_DIR": str(shared_dir / "models"),
        "FRAMESTREAM_STREAMS__PIPELINE": "failover",
    }
    args = [a for c in clips for a in ("--source", str(c))] + ["--model", V1, "--results", str(results)]
    with LocalCluster(masters=3, replicas=1) as cluster:
        slot = key_slot(PipelineKeys("failover").frames.encode())
        master = cluster.master_for_slot(slot)
        proc = _run_cli(cluster.url, [*args, "--json", "--timeout", "150"], env)
        try:
            deadline = time.monotonic() + 120
            while sum(len(s) for s in _results(results).values()) < 150:  # mid-stream: results flowing
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
                time.sleep(0.05)
            master.kill()
            killed_at = sum(len(s) for s in _results(results).values())
            out, err = proc.communicate(timeout=170)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert cluster.master_for_slot(slot).port != master.port  # the replica was promoted
    assert proc.returncode == 0, err[-4000:]
    assert killed_at < 2 * frames, "the kill came after the run had finished: nothing was tested"
    seqs = _results(results)
    for i in range(2):
        assert sorted(seqs[f"demo{i}"]) == list(range(frames)), f"source {i}: frames lost"
    summary = json.loads(out)  # --json: the summary alone on stdout
    assert summary["results"] == 2 * frames and summary["failed"] == [], summary
