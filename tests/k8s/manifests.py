"""Helpers for the offline manifest tests: render overlays, walk pod templates, CRD -> JSON Schema."""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "K8S",
    "OVERLAYS",
    "by_kind",
    "crd_json_schema",
    "kubectl",
    "pod_templates",
    "render",
    "selects",
]

K8S = Path(__file__).resolve().parents[2] / "k8s"
OVERLAYS = ("dev", "prod")
Doc = dict[str, Any]


def kubectl() -> str | None:
    """Path to kubectl, or None when it is not installed."""
    return shutil.which("kubectl") or (shutil.which("/usr/bin/kubectl"))


def render(overlay: str, timeout_s: float = 60.0) -> list[Doc]:
    """`kubectl kustomize k8s/overlays/<overlay>` parsed into documents."""
    exe = kubectl()
    assert exe is not None
    out = subprocess.run(
        [exe, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def pod_templates(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(where, pod template) for every workload, KubeRay head and worker groups included."""
    for d in docs:
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
            yield name, d["spec"]["template"]
        elif d["kind"] in ("RayService", "RayCluster"):
            cluster = d["spec"]["rayClusterConfig"] if d["kind"] == "RayService" else d["spec"]
            yield f"{name}/head", cluster["headGroupSpec"]["template"]
            for group in cluster.get("workerGroupSpecs", []):
                yield f"{name}/{group['groupName']}", group["template"]


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels + matchExpressions) or plain map selects `labels`."""
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if not all(labels.get(k) == v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and labels.get(key) in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def _strict(node: Any) -> Any:
    """OpenAPI v3 (structural CRD schema) -> JSON Schema that rejects unknown fields."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    preserve = out.get("x-kubernetes-preserve-unknown-fields") is True
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not preserve
    ):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=8)
def crd_json_schema(crd_file: Path, version: str = "v1") -> Doc:
    """The JSON Schema of one served version of a CRD, unknown fields rejected.

    Objects with `properties` get `additionalProperties: false` unless the CRD marks them
    `x-kubernetes-preserve-unknown-fields`; free-form objects (the top-level `metadata`) stay open,
    as the API server validates those itself.
    """
    crd = yaml.load(crd_file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = _strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
            schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            return schema
    raise KeyError(f"{crd_file.name} has no version {version}")
