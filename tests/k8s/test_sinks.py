"""The RayService deploys the Sinks deployment (idle without sinks), autoscaled on sink backlog;
the pipeline ConfigMap's commented example is a valid sink; sink secrets come from a Secret."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from stream.settings import Settings
from tests.k8s.manifests import K8S, by_kind, pod_templates

Docs = dict[str, list[dict[str, Any]]]
EXAMPLE_PREFIX = "# FRAMESTREAM_SINKS="


def test_the_rayservice_deploys_sinks_autoscaled_on_their_backlog(rendered: Docs) -> None:
    for overlay, docs in rendered.items():
        (svc,) = by_kind(docs, "RayService")
        (app,) = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]
        assert "sinks" in app["args"]["stages"], overlay
        (sinks,) = [d for d in app["deployments"] if d["name"] == "Sinks"]
        scaling = sinks["autoscaling_config"]
        assert scaling["policy"]["policy_function"] == "deployments.serve.policy:BacklogPolicy", overlay
        assert scaling["min_replicas"] == 1 and scaling["max_replicas"] >= 2, overlay


def test_every_pod_reads_the_sinks_secret_optionally(rendered: Docs) -> None:
    """A sink's `secret_env` names a key of the Secret framestream-sinks, which every Ray pod
    reads as environment when it exists (the Sinks replicas may run on any of them)."""
    for overlay, docs in rendered.items():
        templates = [t for where, t in pod_templates(docs) if where.startswith("RayService/")]
        assert templates, overlay
        for template in templates:
            for container in template["spec"]["containers"]:
                refs = [s["secretRef"] for s in container.get("envFrom", []) if "secretRef" in s]
                assert {"name": "framestream-sinks", "optional": True} in refs, (overlay, container["name"])


def test_the_configmap_example_sink_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = (K8S / "base" / "pipeline.env").read_text().splitlines()
    (example,) = [line for line in lines if line.startswith(EXAMPLE_PREFIX)]
    monkeypatch.setenv("FRAMESTREAM_SINKS", example.removeprefix(EXAMPLE_PREFIX))
    (sink,) = Settings().sinks
    assert sink.secret_env and sink.secret is None  # the secret comes from the Secret, not the ConfigMap
    assert json.loads(example.removeprefix(EXAMPLE_PREFIX))[0]["name"] == sink.name
