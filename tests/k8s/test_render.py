"""Both overlays render, hold every object the deployment needs, and differ where they should."""

from __future__ import annotations

import re
from typing import Any

from tests.k8s.manifests import by_kind, pod_templates

Docs = dict[str, list[dict[str, Any]]]
EXPECTED = {
    ("Namespace", None),
    ("RayService", "framestream"),
    ("StatefulSet", "framestream-redis"),
    ("Service", "framestream-redis"),
    ("NetworkPolicy", "framestream-redis-from-ray"),
    ("PodMonitor", "framestream-ray"),
    ("ConfigMap", "framestream-grafana-dashboard"),
    ("PodDisruptionBudget", "framestream-redis"),
    ("PodDisruptionBudget", "framestream-ray-head"),
    ("PodDisruptionBudget", "framestream-ray-worker-cpu"),
    ("PodDisruptionBudget", "framestream-ray-worker-inference"),
}
_PINNED = re.compile(r"^[^:@]+(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$")


def _names(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


def test_both_overlays_render_every_object(rendered: Docs) -> None:
    for overlay, docs in rendered.items():
        names = _names(docs)
        for kind, name in EXPECTED:
            assert any(k == kind and (name is None or n == name) for k, n in names), (overlay, kind, name)
        assert any(k == "ConfigMap" and n.startswith("framestream-pipeline-") for k, n in names), overlay
        namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
        assert namespaces == {by_kind(docs, "Namespace")[0]["metadata"]["name"]}, (overlay, namespaces)


def test_every_image_is_pinned_by_tag(rendered: Docs) -> None:
    for overlay, docs in rendered.items():
        for where, template in pod_templates(docs):
            for c in template["spec"].get("containers", []) + template["spec"].get("initContainers", []):
                image = c["image"]
                assert _PINNED.match(image) and (":" in image.split("/")[-1] or "@" in image), (where, image)
                assert not image.endswith(":latest"), (overlay, where, image)


def test_ray_cluster_has_head_cpu_and_inference_pools_with_autoscaling(rendered: Docs) -> None:
    for overlay, docs in rendered.items():
        (svc,) = by_kind(docs, "RayService")
        cluster = svc["spec"]["rayClusterConfig"]
        assert cluster["enableInTreeAutoscaling"] is True
        assert cluster["rayVersion"] == "2.60.0"
        groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
        assert set(groups) == {"cpu", "inference"}, overlay
        for name, g in groups.items():
            assert 1 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], (overlay, name)
        for where, template in pod_templates([svc]):
            for c in template["spec"]["containers"]:
                res = c["resources"]
                assert set(res) == {"requests", "limits"}, where
                assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"])


def _group(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (svc,) = by_kind(docs, "RayService")
    return next(g for g in svc["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == name)


def test_dev_is_one_small_pod_per_pool_and_prod_spreads_more(rendered: Docs) -> None:
    dev, prod = rendered["dev"], rendered["prod"]
    for name in ("cpu", "inference"):
        assert _group(dev, name)["maxReplicas"] == 1
        assert _group(prod, name)["minReplicas"] >= 2
        assert _group(prod, name)["maxReplicas"] > _group(dev, name)["maxReplicas"]
        prod_spec = _group(prod, name)["template"]["spec"]
        assert "podAntiAffinity" in prod_spec["affinity"], name
        assert "affinity" not in _group(dev, name)["template"]["spec"]
    (dev_redis,) = by_kind(dev, "StatefulSet")
    assert dev_redis["spec"]["replicas"] == 1
    dev_mem = _group(dev, "inference")["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    prod_mem = _group(prod, "inference")["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert _bytes(prod_mem) > 2 * _bytes(dev_mem)


def _bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity)
