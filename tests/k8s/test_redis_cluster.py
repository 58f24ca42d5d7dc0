"""The prod overlay runs Redis as a Redis Cluster (six pods, a forming Job, partitions, the cluster
client, replica acks) and the dev overlay keeps one plain Redis; the shipped cluster container
and Job, booted on six local redis-servers, form a cluster that framestream uses, and the Job
run again leaves it alone."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from stream.adapters.redis.client import connect, is_cluster
from stream.adapters.redis.entries import Output
from stream.adapters.redis.server import find_free_cluster_port, stop_redis_process
from stream.adapters.redis.streams import StreamTransport
from stream.core.keys import PipelineKeys
from stream.settings import Settings
from tests.k8s.manifests import by_kind
from tests.k8s.shipped_redis import PASSWORD, ShippedRedis
from tests.waiting import wait_until

Docs = dict[str, list[dict[str, Any]]]
JOB = "framestream-redis-cluster-init"


def _pipeline_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (cm,) = [
        d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("framestream-pipeline")
    ]
    return dict(cm["data"])


def _redis_files(docs: list[dict[str, Any]]) -> dict[str, str]:
    return next(d for d in by_kind(docs, "ConfigMap") if "redis.conf" in d.get("data", {}))["data"]


def _directives(text: str) -> dict[str, str]:
    return {
        line.split()[0]: line.split(None, 1)[1] if " " in line.strip() else ""
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    }


def test_prod_runs_a_six_pod_redis_cluster_formed_by_a_job(rendered: Docs) -> None:
    docs = rendered["prod"]
    (sts,) = by_kind(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 6 and sts["spec"]["volumeClaimTemplates"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert {p["containerPort"] for p in c["ports"]} == {6379, 16379}
    script = c["args"][0]
    assert (
        "masterauth" in script
        and "requirepass" in script
        and "include /etc/redis/redis-cluster.conf" in script
    )
    cluster = _directives(_redis_files(docs)["redis-cluster.conf"])
    assert cluster["cluster-enabled"] == "yes" and cluster["cluster-preferred-endpoint-type"] == "hostname"
    (job,) = [j for j in by_kind(docs, "Job") if j["metadata"]["name"] == JOB]
    (jc,) = job["spec"]["template"]["spec"]["containers"]
    assert jc["image"] == c["image"]
    assert "redis-cli --cluster create" in jc["args"][0] and "--cluster-replicas" in jc["args"][0]
    nodes = next(e["value"] for e in jc["env"] if e["name"] == "REDIS_NODES").split()
    assert nodes == [f"framestream-redis-{i}.framestream-redis:6379" for i in range(6)]
    password = next(e for e in jc["env"] if e["name"] == "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]
    assert password == next(e for e in c["env"] if e["name"] == "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]


def test_prod_pipeline_uses_the_cluster_with_one_partition_per_master(
    rendered: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _pipeline_env(rendered["prod"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.redis.cluster is True and settings.redis.url == "redis://framestream-redis:6379"
    assert settings.streams.partitions == 3 and settings.streams.replica_acks == 1
    # `redis-cli --cluster create` gives three masters slots 0-5460, 5461-10922, 10923-16383
    keys = PipelineKeys(settings.streams.pipeline, settings.streams.partitions)
    masters = {key_slot(k.frames.encode()) * 3 // 16384 for k in keys.all_partitions}
    assert masters == {0, 1, 2}


def test_dev_keeps_one_plain_redis(rendered: Docs) -> None:
    docs = rendered["dev"]
    (sts,) = by_kind(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    assert not by_kind(docs, "Job")
    assert set(_redis_files(docs)) == {"redis.conf"}
    assert "cluster" not in sts["spec"]["template"]["spec"]["containers"][0]["args"][0]
    env = _pipeline_env(docs)
    assert not {"FRAMESTREAM_REDIS__CLUSTER", "FRAMESTREAM_STREAMS__PARTITIONS"} & set(env)


# --- the shipped cluster, booted -----------------------------------------------------------------


def _cluster_info(port: int) -> dict[str, str]:
    with redis.Redis(port=port, password=PASSWORD, decode_responses=True, socket_timeout=2) as r:
        return {k: str(v) for k, v in r.cluster("INFO").items()}


def _formed(ports: list[int]) -> bool:
    try:
        for port in ports:
            info = _cluster_info(port)
            if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != "6":
                return False
            with redis.Redis(port=port, password=PASSWORD, decode_responses=True) as r:
                repl = r.info("replication")
            if repl["role"] == "slave" and repl.get("master_link_status") != "up":
                return False
    except (redis.ConnectionError, redis.ResponseError):
        return False
    return True


class _Job:
    """The init Job's container, run here against `ports` on loopback."""

    def __init__(self, docs: list[dict[str, Any]], ports: list[int]) -> None:
        (job,) = [j for j in by_kind(docs, "Job") if j["metadata"]["name"] == JOB]
        (self.container,) = job["spec"]["template"]["spec"]["containers"]
        self.env = {
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "REDIS_PASSWORD": PASSWORD,
            "REPLICAS_PER_MASTER": next(
                e["value"] for e in self.container["env"] if e["name"] == "REPLICAS_PER_MASTER"
            ),
            "REDIS_NODES": " ".join(f"127.0.0.1:{p}" for p in ports),
        }

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.container["command"], *self.container["args"]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def shipped_cluster(rendered: Docs, tmp_path: Path) -> Iterator[list[ShippedRedis]]:
    if not (shutil.which("redis-server") and shutil.which("redis-cli") and shutil.which("getent")):
        pytest.skip("redis-server, redis-cli or getent not on PATH")
    ports: list[int] = []
    for _ in range(6):
        ports.append(find_free_cluster_port(ports))
    nodes = [ShippedRedis(rendered["prod"], tmp_path / f"pod-{p}", port=p) for p in ports]
    procs = [n.start() for n in nodes]
    try:
        for node, proc in zip(nodes, procs, strict=True):
            wait_until(
                lambda n=node, p=proc: n.probe("readinessProbe") == 0 or p.poll() is not None,
                timeout_s=20,
                what="readiness",
            )
            assert proc.poll() is None, f"redis-server on {node.port} exited with {proc.returncode}"
        yield nodes
    finally:  # never raises, never leaves one running (a loaded machine once took > 15 s here)
        for node, proc in zip(nodes, procs, strict=True):
            stop_redis_process(proc, port=node.port, password=PASSWORD)


@pytest.mark.slow
def test_shipped_cluster_forms_once_and_framestream_runs_on_it(
    rendered: Docs, shipped_cluster: list[ShippedRedis]
):
    ports = [n.port for n in shipped_cluster]
    with redis.Redis(port=ports[0], password=PASSWORD) as r:
        assert r.info("cluster")["cluster_enabled"] == 1
    assert _cluster_info(ports[0])["cluster_state"] == "fail"  # not formed yet
    with redis.Redis(port=ports[0]) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    job = _Job(rendered["prod"], ports)
    first = job.run()
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    wait_until(
        lambda: _formed(ports), timeout_s=60, what="cluster formed with every replica in sync"
    )  # masterauth works
    roles = []
    for port in ports:
        with redis.Redis(port=port, password=PASSWORD, decode_responses=True) as r:
            roles.append(r.info("replication")["role"])
            assert r.config_get("appendonly")["appendonly"] == "yes"
    assert sorted(roles) == ["master"] * 3 + ["slave"] * 3
    ids = {p: redis.Redis(port=p, password=PASSWORD, decode_responses=True).cluster("MYID") for p in ports}

    again = job.run()  # a re-applied Job: must not touch a formed cluster
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    assert _formed(ports)
    assert ids == {
        p: redis.Redis(port=p, password=PASSWORD, decode_responses=True).cluster("MYID") for p in ports
    }

    async def use() -> int:
        client = await connect(f"redis://127.0.0.1:{ports[3]}", password=PASSWORD, cluster=True)
        try:
            assert is_cluster(client)
            keys = PipelineKeys("p", 3)
            transport = StreamTransport(
                client, keys, stage="ingest", replica_acks=1, replica_ack_timeout_ms=2_000
            )
            for part in keys.all_partitions:
                await transport.publish([Output(part.frames, b"frame")])
            return transport.replica_shortfalls
        finally:
            await client.aclose()

    assert asyncio.run(use()) == 0  # every partition's write reached its master's replica
