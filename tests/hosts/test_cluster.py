"""The cluster as a user would check it: the prod pools are there, each replica runs where its
pool says, and frames played into Redis come out once each."""

from __future__ import annotations

import pytest

from tests.faults.scenario import Harness
from tests.hosts.conftest import HOSTS, ClusterStack

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def test_nodes_start_with_their_groups_parameters(cluster_stack: ClusterStack) -> None:
    cluster = cluster_stack.cluster
    nodes = {n["ip"]: n for n in cluster.ray_nodes() if n["alive"]}
    by_host = {name: nodes.get(node.host.address) for name, node in cluster.nodes.items()}
    assert all(by_host.values()), f"hosts without a live Ray node: {by_host}"
    assert len(by_host) == 1 + sum(HOSTS.values())
    head = by_host["head"]
    assert head is not None and head["resources"].get("CPU", 0) == 0  # the head runs no replicas
    for name, node in cluster.nodes.items():
        seen = by_host[name]
        assert seen is not None
        for key, value in node.group.resources.items():
            assert seen["resources"].get(key) == value, (name, key)
        for key, value in node.group.labels.items():
            assert seen["labels"].get(key) == value, (name, key)
    inference = [n for n in cluster.nodes.values() if n.group.name == "inference"]
    assert inference and all(n.group.resources.get("inference") for n in inference)


def test_infer_runs_only_on_inference_hosts(cluster_stack: ClusterStack) -> None:
    placement = cluster_stack.app.placement()
    for deployment in ("Infer", "Classifier"):
        hosts = placement[deployment]
        assert hosts and all(h.startswith("inference") for h in hosts), (deployment, placement)
    assert not any("head" in hosts for hosts in placement.values()), placement


def test_other_stages_prefer_the_cpu_hosts(cluster_stack: ClusterStack) -> None:
    """The deployments without `inference` ask for framestream.io/pool=cpu with a fallback to
    anywhere; the cpu host has room for all of them here (shares 0.575 of its 1 CPU), so that is
    where they run. (Where it has none, they run elsewhere: test_host_loss kills it.)"""
    placement = cluster_stack.app.placement()
    cpu_hosts = {name for name, node in cluster_stack.cluster.nodes.items() if node.group.name == "cpu"}
    for deployment in ("Ingest", "Preprocess", "Postprocess", "Ingress"):
        hosts = placement[deployment]
        assert hosts and set(hosts) <= cpu_hosts, (deployment, placement)


async def test_frames_flow_across_hosts(cluster_harness: Harness, cluster_stack: ClusterStack) -> None:
    frames = 600
    replay = await cluster_harness.replay("c0-flow", frames)
    finished = await cluster_harness.follow(replay, timeout_s=180)
    pending = await cluster_harness.settle(replay)
    outcome = await cluster_harness.outcome(
        "c0 cluster baseline",
        replay,
        pending=pending,
        note=f"no fault; {cluster_stack.app.placement_text()}; {frames} frames",
    )
    await cluster_harness.record(outcome, replay, runner="ray-cluster")
    await cluster_harness.close(replay)
    assert finished, f"{replay.sink.distinct}/{frames} results after 180 s"
    assert (outcome.lost, outcome.duplicates, outcome.pending) == (0, 0, 0), outcome
