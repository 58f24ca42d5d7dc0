"""Fixtures of the cluster suite: one multi-host cluster (`tests.hosts.cluster`) with the prod
overlay's Serve application deployed, for the whole package; a per-test fault `Harness` on it.

The suite skips, with the reason, where it cannot build hosts (not root, no network namespaces)
or render the overlay (no kubectl). Everything it starts is stopped in the fixture's finalizer,
and `tests.hosts.netns.Network` also cleans up at exit and on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream.core.keys import PipelineKeys
from stream.settings import Settings
from tests.faults.conftest import CLAIM_IDLE_MS, MODEL, fault_settings
from tests.faults.scenario import OUT_ENV, ROOT, Harness, settled_harness
from tests.hosts.cluster import Cluster, ClusterApp, gcs_fault_tolerant, groups, scaled_serve_config
from tests.hosts.netns import netns_unavailable_reason

CPU_SCALE = 0.25
"""prod pods have 4 (cpu) and 8 (inference) CPUs: 1 and 2 here, with the Serve shares scaled alike."""
HOSTS = {"cpu": 1, "inference": 2}
"""Worker hosts per group: two inference hosts, so Infer has somewhere to go when one is lost."""
REPLICAS = {
    "Ingest": 1,
    "Preprocess": 2,
    "Infer": 2,
    "Postprocess": 1,
    "Sinks": 1,
    "Classifier": 1,
    "Ingress": 1,
}
"""Fixed counts (autoscaling off) for every deployment of the prod config, as in the fault suite;
Sinks, Classifier and Ingress at one each, to fit 2 cores."""


@dataclass
class ClusterStack:
    cluster: Cluster
    app: ClusterApp
    settings: Settings
    keys: PipelineKeys
    model: str


@pytest.fixture(scope="package")
def prod_rayservice() -> dict:
    from tests.k8s.manifests import by_kind, kubectl, render

    if kubectl() is None:
        pytest.skip("kubectl is not installed: cannot render the prod overlay the cluster mirrors")
    (rayservice,) = by_kind(render("prod"), "RayService")
    return rayservice


@pytest.fixture(scope="package")
def cluster_stack(prod_rayservice: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterStack]:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(f"cannot build cluster hosts here: {reason}")
    pytest.importorskip("ray")
    from stream.zoo.repository import load_spec
    from stream.zoo.store import locate_model

    cache = tmp_path_factory.mktemp("cluster-models")
    locate_model(load_spec(MODEL), weights_dir=None, cache_dir=cache, allow_synthetic=True)
    settings = fault_settings(cache)
    head, workers = groups(prod_rayservice, CPU_SCALE)
    cluster = Cluster(
        head, {g.name: g for g in workers}, HOSTS, gcs_fault_tolerance=gcs_fault_tolerant(prod_rayservice)
    )
    try:
        cluster.start()
        assert cluster.redis is not None
        app = ClusterApp(
            cluster,
            settings,
            cluster.redis.url,
            MODEL,
            REPLICAS,
            base=scaled_serve_config(prod_rayservice, CPU_SCALE),
        )
        app.deploy(8000, timeout_s=300)
        yield ClusterStack(cluster, app, settings, PipelineKeys(settings.streams.pipeline), MODEL)
    finally:
        cluster.close()


@pytest.fixture
async def cluster_harness(
    cluster_stack: ClusterStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Harness]:
    """A client on the cluster's Redis (over the bridge), once every replica runs and nothing is
    pending. Outcomes go to ``out/cluster/`` unless $FRAMESTREAM_FAULTS_OUT says otherwise."""
    monkeypatch.setenv(OUT_ENV, os.environ.get(OUT_ENV) or str(ROOT / "out" / "cluster"))
    cluster_stack.app.wait_replicas(timeout_s=180)
    assert cluster_stack.cluster.redis is not None
    async with settled_harness(
        cluster_stack.cluster.redis.url, cluster_stack.keys, cluster_stack.model, tmp_path, CLAIM_IDLE_MS
    ) as h:
        yield h
