"""serveConfigV2 is generated from deployments/serve/serve_config.yaml, is a valid Serve config whose
import paths resolve in the package, and fits the Ray cluster it is deployed on."""

from __future__ import annotations

import importlib
import importlib.util
import json
from functools import cache
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.k8s.manifests import K8S, by_kind, pod_templates

Docs = dict[str, list[dict[str, Any]]]
SOURCE = K8S.parent / "deployments" / "serve" / "serve_config.yaml"
MISSING = f"{SOURCE} is missing: the RayService's serveConfigV2 is generated from it"


@cache
def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve_graceful_shutdown_s() -> float | None:
    """The longest `graceful_shutdown_timeout_s` of any deployment in the Serve config, if set."""
    assert SOURCE.is_file(), MISSING
    config = yaml.safe_load(SOURCE.read_text())
    values = [
        float(d["graceful_shutdown_timeout_s"])
        for app in config.get("applications", [])
        for d in app.get("deployments", [])
        if "graceful_shutdown_timeout_s" in d
    ]
    return max(values, default=None)


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    assert SOURCE.is_file(), MISSING  # a shipped file: its absence is a failure, not a skip
    return yaml.safe_load(SOURCE.read_text())


def _embedded(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (svc,) = by_kind(docs, "RayService")
    return yaml.safe_load(svc["spec"]["serveConfigV2"])


def _resolve(path: str) -> Any:
    module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def test_committed_patches_equal_a_fresh_generation(source: dict[str, Any]) -> None:
    gen = _generator()
    for overlay in gen.OVERLAYS:
        path = gen.target(overlay)
        assert path.is_file(), f"{path} missing: run `python k8s/generate.py`"
        assert path.read_text() == gen.render_patch(overlay), f"{path} is stale: run `python k8s/generate.py`"
    assert gen.main(["--check"]) == 0


def test_rendered_serve_config_is_the_source_plus_only_cluster_deltas(
    rendered: Docs, source: dict[str, Any]
) -> None:
    overrides = yaml.safe_load((K8S / "serve-overrides.yaml").read_text())
    allowed = {"ray_actor_options", "autoscaling_config", "num_replicas"}
    for section in overrides.values():
        for app in (section or {}).get("applications", {}).values():
            for name, delta in app.get("deployments", {}).items():
                assert set(delta) <= allowed, (name, delta)
    for overlay, docs in rendered.items():
        embedded = _embedded(docs)
        assert embedded == _generator().serve_config(overlay)
        assert {k: v for k, v in embedded.items() if k != "applications"} == {
            k: v for k, v in source.items() if k != "applications"
        }
        for got, want in zip(embedded["applications"], source["applications"], strict=True):
            assert {k: v for k, v in got.items() if k != "deployments"} == {
                k: v for k, v in want.items() if k != "deployments"
            }, overlay
            assert [d["name"] for d in got["deployments"]] == [d["name"] for d in want["deployments"]]


def test_embedded_config_is_a_valid_serve_config(rendered: Docs, source: dict[str, Any]) -> None:
    from ray.serve.schema import ServeDeploySchema

    from deployments.serve.app import DEPLOYMENT_NAMES, AppArgs

    for overlay, docs in rendered.items():
        config = ServeDeploySchema.model_validate(_embedded(docs))
        for app in config.applications:
            AppArgs.model_validate(app.args)
            names = {d.name for d in app.deployments}
            assert names <= set(DEPLOYMENT_NAMES.values()), (overlay, names)


def test_import_paths_resolve_to_real_objects(rendered: Docs, source: dict[str, Any]) -> None:
    from ray.serve import Application

    for overlay, docs in rendered.items():
        for app in _embedded(docs)["applications"]:
            target = _resolve(app["import_path"])
            assert isinstance(target, Application) or callable(target), app["import_path"]
            for d in app.get("deployments", []):
                policy = d.get("autoscaling_config", {}).get("policy", {}).get("policy_function")
                if policy:
                    assert callable(_resolve(policy)), (overlay, d["name"], policy)


def test_redis_url_comes_from_the_pod_environment(rendered: Docs, source: dict[str, Any]) -> None:
    """The Serve config must not carry its own Redis URL: it would override the ConfigMap's."""
    for overlay, docs in rendered.items():
        text = json.dumps(_embedded(docs))
        assert "redis://" not in text and "rediss://" not in text, overlay
        for app in _embedded(docs)["applications"]:
            env_vars = app.get("runtime_env", {}).get("env_vars", {})
            assert not {k for k in env_vars if k.startswith("FRAMESTREAM_REDIS__")}, overlay
            assert "url" not in app.get("args", {}).get("settings", {}).get("redis", {}), overlay


def test_every_replica_serve_may_ask_for_fits_the_cluster_at_full_size(
    rendered: Docs, source: dict[str, Any]
) -> None:
    for overlay, docs in rendered.items():
        (svc,) = by_kind(docs, "RayService")
        cluster = svc["spec"]["rayClusterConfig"]
        pools: dict[str, dict[str, float]] = {}
        for group in cluster["workerGroupSpecs"]:
            (container,) = group["template"]["spec"]["containers"]
            cpus = _cpus(container["resources"]["limits"]["cpu"]) * group["maxReplicas"]
            custom = json.loads(json.loads(group["rayStartParams"].get("resources", '"{}"')))
            pools[group["groupName"]] = {"CPU": cpus, **dict.fromkeys(custom, 1.0)}
        demand = {name: 0.0 for name in pools}
        for app in _embedded(docs)["applications"]:
            for d in app["deployments"]:
                opts = d.get("ray_actor_options", {})
                replicas = d.get("autoscaling_config", {}).get("max_replicas", d.get("num_replicas", 1))
                wanted = set(opts.get("resources", {}))
                fits = [name for name, pool in pools.items() if wanted <= set(pool)]
                assert fits, (overlay, d["name"], wanted)
                pool = "inference" if "inference" in wanted else "cpu"
                demand[pool] += replicas * float(opts.get("num_cpus", 1))
        for name, cpus in demand.items():
            assert cpus <= pools[name]["CPU"], (overlay, name, cpus, pools[name]["CPU"])
        head = cluster["headGroupSpec"]["rayStartParams"]
        assert head["num-cpus"] == "0", "no replica lands on the head"
        assert all(t["spec"]["containers"] for _, t in pod_templates([svc]))


def _cpus(value: str | int) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_placement_on_inference_hosts_is_in_the_serve_config_for_every_runner(
    rendered: Docs, source: dict[str, Any]
) -> None:
    """Infer and Classifier ask for the `inference` resource in deployments/serve/serve_config.yaml
    itself (so `framestream run --address`, the tests and KubeRay place them alike), the local
    single node offers it, and the Kubernetes overrides do not carry placement on their own."""
    from deployments.serve.config import LOCAL_NODE_RESOURCES

    def wanted(config: dict[str, Any]) -> dict[str, set[str]]:
        return {
            d["name"]: set(d.get("ray_actor_options", {}).get("resources", {}))
            for d in config["applications"][0]["deployments"]
        }

    assert {n for n, r in wanted(source).items() if "inference" in r} == {"Infer", "Classifier"}
    assert "inference" in LOCAL_NODE_RESOURCES
    overrides = yaml.safe_load((K8S / "serve-overrides.yaml").read_text())
    for section in overrides.values():
        for app in (section or {}).get("applications", {}).values():
            for name, delta in app.get("deployments", {}).items():
                assert "resources" not in delta.get("ray_actor_options", {}), name
    for overlay, docs in rendered.items():
        assert wanted(_embedded(docs)) == wanted(source), overlay


def test_every_head_runs_serve_with_the_local_runs_environment(rendered: Docs) -> None:
    """The RayService's head sets the same Ray variables (`RAY_HEAD_ENV`: the Serve controller's
    loop period) as `framestream run`'s local Ray, and the namespace cluster starts its head with
    them, so every runner measures and runs the same controller."""
    from deployments.serve.config import RAY_HEAD_ENV
    from tests.hosts.cluster import groups

    assert RAY_HEAD_ENV
    for overlay, docs in rendered.items():
        (svc,) = by_kind(docs, "RayService")
        head, _ = groups(svc, 1.0)
        assert {k: head.env.get(k) for k in RAY_HEAD_ENV} == RAY_HEAD_ENV, overlay
