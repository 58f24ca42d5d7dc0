"""Every object validates offline: core kinds against the Kubernetes schemas (strict), KubeRay
kinds against the v1.7.0 CRDs with unknown fields rejected."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.k8s.manifests import crd_json_schema

Docs = dict[str, list[dict[str, Any]]]
K8S_VERSION = "1.30.0"
CRD_KINDS = {"RayService": "ray.io_rayservices.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
NO_SCHEMA_HERE = {"PodMonitor"}  # monitoring.coreos.com: checked by hand in test_references.py


@functools.lru_cache(maxsize=4)
def _validator(crds: Path, kind: str) -> jsonschema.protocols.Validator:
    schema = crd_json_schema(crds / CRD_KINDS[kind])
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_core_objects_validate_strictly_against_kubernetes_schemas(rendered: Docs) -> None:
    checked = 0
    for overlay, docs in rendered.items():
        for doc in docs:
            if doc["kind"] in CRD_KINDS or doc["kind"] in NO_SCHEMA_HERE:
                continue
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{overlay} {doc['kind']}/{doc['metadata']['name']}: {e.message} at {e.path}")
            checked += 1
    assert checked >= 2 * 10


def test_strict_core_validation_rejects_a_misspelled_field(rendered: Docs) -> None:
    sts = copy.deepcopy(next(d for d in rendered["dev"] if d["kind"] == "StatefulSet"))
    sts["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = sts["spec"]["template"]["spec"][
        "containers"
    ][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)


def test_kuberay_objects_validate_against_the_v1_7_crds(rendered: Docs, kuberay_crds: Path) -> None:
    checked = 0
    for overlay, docs in rendered.items():
        for doc in docs:
            if doc["kind"] not in CRD_KINDS:
                continue
            errors = sorted(_validator(kuberay_crds, doc["kind"]).iter_errors(doc), key=str)
            assert not errors, f"{overlay} {doc['kind']}: " + "; ".join(
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
            )
            checked += 1
    assert checked == 2


@pytest.mark.parametrize(
    ("path", "typo"),
    [
        (["spec", "rayClusterConfig", "workerGroupSpecs", 0], "maxReplica"),
        (["spec", "rayClusterConfig"], "enableInTreeAutoscale"),
        (["spec", "rayClusterConfig", "headGroupSpec", "template", "spec", "containers", 0], "envfrom"),
    ],
)
def test_a_misspelled_kuberay_field_fails_validation(
    rendered: Docs, kuberay_crds: Path, path: list[Any], typo: str
) -> None:
    svc = copy.deepcopy(next(d for d in rendered["prod"] if d["kind"] == "RayService"))
    node = svc
    for key in path:
        node = node[key]
    node[typo] = 3
    errors = list(_validator(kuberay_crds, "RayService").iter_errors(svc))
    assert errors, typo
    assert any(typo in e.message and "Additional properties" in e.message for e in errors), [
        e.message for e in errors
    ]


def test_rayservice_passes_the_operators_own_admission_rules(rendered: Docs) -> None:
    """Rules KubeRay's controller enforces beyond the CRD schema (utils/validation.go)."""
    for overlay, docs in rendered.items():
        (svc,) = [d for d in docs if d["kind"] == "RayService"]
        name = svc["metadata"]["name"]
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 40, name
        cluster = svc["spec"]["rayClusterConfig"]
        assert cluster["autoscalerOptions"]["version"] == "v2"
        head_env = {e["name"] for e in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
        assert "RAY_enable_autoscaler_v2" not in head_env, "set autoscalerOptions.version only"
        assert not {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD"} & head_env, "would turn on GCS fault tolerance"
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            assert group["template"]["spec"].get("restartPolicy", "Never") == "Never", overlay
            assert not group.get("suspend"), "suspended groups are refused with autoscaling"
