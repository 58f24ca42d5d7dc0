"""The harness's own contract, without building a cluster: where it cannot build hosts it says
why (so the suite skips with that reason), and it reads the prod overlay's groups as KubeRay would
start them."""

from __future__ import annotations

import json

import pytest

from tests.hosts import netns
from tests.hosts.cluster import gcs_fault_tolerant, groups, scaled_serve_config, start_args
from tests.hosts.conftest import CPU_SCALE, REPLICAS


def test_without_root_the_reason_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    reason = netns.netns_unavailable_reason()
    assert reason is not None and "root" in reason


def test_hosts_start_with_the_prod_groups_parameters_scaled(prod_rayservice: dict) -> None:
    head, workers = groups(prod_rayservice, CPU_SCALE)
    by_name = {g.name: g for g in workers}
    assert head.num_cpus == 0  # the head runs no replicas, as in the overlay
    assert set(by_name) == {"cpu", "inference"}
    assert by_name["inference"].resources == {"inference": 1000.0}
    assert by_name["inference"].labels == {"framestream.io/pool": "inference"}
    assert (by_name["cpu"].num_cpus, by_name["inference"].num_cpus) == (1.0, 2.0)  # 4 and 8 CPUs / 4
    args = start_args(by_name["inference"])
    assert json.loads(args[args.index("--resources") + 1]) == {"inference": 1000.0}
    assert args[args.index("--metrics-export-port") + 1] == "8080"
    assert gcs_fault_tolerant(prod_rayservice)


def test_the_cluster_app_fixes_the_count_of_every_prod_deployment(prod_rayservice: dict) -> None:
    """A deployment left out of REPLICAS would run at its autoscaling minimum, unseen by the
    tests that compare the replicas running before and after a fault."""
    (app,) = scaled_serve_config(prod_rayservice, CPU_SCALE)["applications"]
    assert set(REPLICAS) == {d["name"] for d in app["deployments"]}
