"""Cross-references hold in both rendered overlays: selectors, env sources, the Redis URL, the
metrics port, and the graceful-shutdown budget."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from stream.settings import Settings
from tests.k8s.manifests import by_kind, pod_templates, selects

Docs = dict[str, list[dict[str, Any]]]
Doc = dict[str, Any]
# Secrets the prod overlay expects to exist already (created by the operator, see its kustomization).
EXTERNAL_SECRETS = {"prod": {"framestream-redis-auth": {"password", "api-admin-tokens"}}, "dev": {}}
SERVE_DEFAULT_GRACEFUL_SHUTDOWN_S = 20.0


def _labels(template: Doc) -> dict[str, str]:
    return template.get("metadata", {}).get("labels", {})


def _containers(template: Doc) -> list[Doc]:
    return template["spec"].get("containers", []) + template["spec"].get("initContainers", [])


def _pipeline_env(docs: list[Doc]) -> dict[str, str]:
    (cm,) = [
        d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("framestream-pipeline")
    ]
    return cm["data"]


def _pods_selected(docs: list[Doc], selector: Doc) -> list[str]:
    return [where for where, t in pod_templates(docs) if selects(selector, _labels(t))]


def test_services_select_existing_pods_and_named_ports(rendered: Docs) -> None:
    for overlay, docs in rendered.items():
        for svc in by_kind(docs, "Service"):
            selector = svc["spec"]["selector"]
            matched = [t for _, t in pod_templates(docs) if selects(selector, _labels(t))]
            assert matched, (overlay, svc["metadata"]["name"])
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                for t in matched:
                    ports = [p for c in _containers(t) for p in c.get("ports", [])]
                    assert any(p.get("name") == target or p["containerPort"] == target for p in ports), (
                        overlay,
                        svc["metadata"]["name"],
                        target,
                    )


def _references(template: Doc) -> list[tuple[str, str, str | None]]:
    """(kind, name, key or None) of every ConfigMap/Secret a pod template reads."""
    refs: list[tuple[str, str, str | None]] = []
    kinds = {
        "configMapKeyRef": "ConfigMap",
        "secretKeyRef": "Secret",
        "configMapRef": "ConfigMap",
        "secretRef": "Secret",
    }
    for c in _containers(template):
        for env in c.get("env", []):
            for field, ref in env.get("valueFrom", {}).items():
                if field in kinds:  # an optional key may be absent (it then sets nothing)
                    refs.append((kinds[field], ref["name"], None if ref.get("optional") else ref["key"]))
        for src in c.get("envFrom", []):  # an optional source may be absent (it then sets nothing)
            refs += [
                (kinds[field], ref["name"], None)
                for field, ref in src.items()
                if field in kinds and not ref.get("optional")
            ]
    for vol in template["spec"].get("volumes", []):
        if "configMap" in vol:
            refs.append(("ConfigMap", vol["configMap"]["name"], None))
        if "secret" in vol:
            refs.append(("Secret", vol["secret"]["secretName"], None))
    return refs


def test_every_configmap_and_secret_reference_exists_with_its_key(rendered: Docs) -> None:
    for overlay, docs in rendered.items():
        data = {
            (d["kind"], d["metadata"]["name"]): set(d.get("data", {})) | set(d.get("stringData", {}))
            for d in docs
            if d["kind"] in ("ConfigMap", "Secret")
        }
        for name, keys in EXTERNAL_SECRETS[overlay].items():
            data.setdefault(("Secret", name), keys)
        count = 0
        for where, template in pod_templates(docs):
            for kind, name, key in _references(template):
                assert (kind, name) in data, (overlay, where, kind, name)
                assert key is None or key in data[(kind, name)], (overlay, where, kind, name, key)
                count += 1
        assert count >= 8, overlay


def test_dev_generates_the_secret_prod_expects(rendered: Docs) -> None:
    """The name/key contract of the externally created prod Secret is the one dev generates."""
    names = {d["metadata"]["name"] for d in by_kind(rendered["dev"], "Secret")}
    for name, keys in EXTERNAL_SECRETS["prod"].items():
        (secret,) = [d for d in by_kind(rendered["dev"], "Secret") if d["metadata"]["name"].startswith(name)]
        assert keys <= set(secret["data"]), names
        assert not [d for d in by_kind(rendered["prod"], "Secret") if d["metadata"]["name"].startswith(name)]


def test_pipeline_configmap_names_real_settings_with_valid_values(
    rendered: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    for overlay, docs in rendered.items():
        env = _pipeline_env(docs)
        for key in env:
            assert key.startswith("FRAMESTREAM_"), key
            section, _, field = key.removeprefix("FRAMESTREAM_").lower().partition("__")
            assert section in Settings.model_fields, key
            model = Settings.model_fields[section].annotation
            assert field in model.model_fields, key  # type: ignore[union-attr]
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.redis.url == env["FRAMESTREAM_REDIS__URL"], overlay
        assert str(settings.models.cache_dir) == env["FRAMESTREAM_MODELS__CACHE_DIR"]


def test_redis_url_points_at_the_redis_service_and_password_comes_from_its_secret(rendered: Docs) -> None:
    for overlay, docs in rendered.items():
        url = urlsplit(_pipeline_env(docs)["FRAMESTREAM_REDIS__URL"])
        assert url.scheme == "redis" and url.password is None, "no password in the ConfigMap"
        host = url.hostname or ""
        ns = by_kind(docs, "Namespace")[0]["metadata"]["name"]
        svc_name = host.split(".")[0]
        assert host in (
            svc_name,
            f"{svc_name}.{ns}",
            f"{svc_name}.{ns}.svc",
            f"{svc_name}.{ns}.svc.cluster.local",
        )
        (svc,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == svc_name]
        assert any(p["port"] == (url.port or 6379) for p in svc["spec"]["ports"]), overlay
        (sts,) = by_kind(docs, "StatefulSet")
        assert selects(svc["spec"]["selector"], _labels(sts["spec"]["template"])), overlay
        assert sts["spec"]["serviceName"] == svc_name and svc["spec"]["clusterIP"] == "None"

        (redis,) = sts["spec"]["template"]["spec"]["containers"]
        server_ref = next(e for e in redis["env"] if e["name"] == "REDIS_PASSWORD")["valueFrom"][
            "secretKeyRef"
        ]
        for where, template in pod_templates(by_kind(docs, "RayService")):
            for c in template["spec"]["containers"]:
                client = next(e for e in c["env"] if e["name"] == "FRAMESTREAM_REDIS__PASSWORD")
                assert client["valueFrom"]["secretKeyRef"] == server_ref, (overlay, where)


def test_api_tokens_come_from_the_secret_and_the_dev_token_is_valid(rendered: Docs) -> None:
    """Every Ray container gets the HTTP API's admin tokens from the Secret (required: the API
    is never open on a cluster), read tokens optionally; the dev token passes the settings' rules."""
    import base64

    for overlay, docs in rendered.items():
        for where, template in pod_templates(by_kind(docs, "RayService")):
            for c in template["spec"]["containers"]:
                env = {e["name"]: e for e in c["env"]}
                admin = env["FRAMESTREAM_API__ADMIN_TOKENS"]["valueFrom"]["secretKeyRef"]
                assert admin["name"].startswith("framestream-redis-auth") and not admin.get("optional")
                read = env["FRAMESTREAM_API__READ_TOKENS"]["valueFrom"]["secretKeyRef"]
                assert read["optional"] is True, (overlay, where)
    (secret,) = [d for d in by_kind(rendered["dev"], "Secret") if "api-admin-tokens" in d.get("data", {})]
    token = base64.b64decode(secret["data"]["api-admin-tokens"]).decode()
    assert Settings(api={"admin_tokens": token}).api.enabled


def test_redis_is_durable_capped_probed_and_on_a_volume(rendered: Docs) -> None:
    for overlay, docs in rendered.items():
        (sts,) = by_kind(docs, "StatefulSet")
        conf = next(d for d in by_kind(docs, "ConfigMap") if "redis.conf" in d.get("data", {}))
        directives = {
            line.split()[0]: line.split(None, 1)[1]
            for line in conf["data"]["redis.conf"].splitlines()
            if line.strip() and not line.startswith("#")
        }
        assert directives["appendonly"] == "yes" and directives["appendfsync"] == "everysec"
        assert directives["maxmemory-policy"] == "noeviction" and directives["dir"] == "/data"
        (c,) = sts["spec"]["template"]["spec"]["containers"]
        assert c["image"].startswith("redis:7.")
        assert "readinessProbe" in c and "livenessProbe" in c
        assert "requirepass" in c["args"][0] and "REDIS_PASSWORD" not in " ".join(c.get("command", []))
        maxmemory = next(e["value"] for e in c["env"] if e["name"] == "REDIS_MAXMEMORY")
        limit = _quantity(c["resources"]["limits"]["memory"])
        assert _quantity(maxmemory) <= 0.75 * limit, (overlay, maxmemory, limit)
        claim = sts["spec"]["volumeClaimTemplates"][0]
        assert any(
            m["name"] == claim["metadata"]["name"] and m["mountPath"] == "/data" for m in c["volumeMounts"]
        )


def test_network_policy_lets_only_ray_pods_reach_redis(rendered: Docs) -> None:
    """Ray pods reach Redis; in prod (Redis Cluster) also the Redis pods one another (client port
    and cluster bus) and the cluster-forming Job; nothing else, and no namespace-wide or IP peers."""
    for overlay, docs in rendered.items():
        (policy,) = by_kind(docs, "NetworkPolicy")
        spec = policy["spec"]
        assert _pods_selected(docs, spec["podSelector"]) == ["StatefulSet/framestream-redis"], overlay
        assert spec["policyTypes"] == ["Ingress"]
        (sts,) = by_kind(docs, "StatefulSet")
        (container,) = sts["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        allowed: dict[str, set[int]] = {}
        for rule in spec["ingress"]:
            (peer,) = rule["from"]
            assert set(peer) == {"podSelector"}, "no namespace-wide or IP peers"
            for pod in _pods_selected(docs, peer["podSelector"]):
                allowed[pod] = {ports.get(p["port"], p["port"]) for p in rule["ports"]}
        ray_pods = [w for w, _ in pod_templates(by_kind(docs, "RayService"))]
        assert len(ray_pods) == 3 and all(allowed[w] == {6379} for w in ray_pods), (overlay, allowed)
        expected = set(ray_pods)
        if overlay == "prod":
            assert allowed["StatefulSet/framestream-redis"] == {6379, 16379}
            assert allowed["Job/framestream-redis-cluster-init"] == {6379}
            expected |= {"StatefulSet/framestream-redis", "Job/framestream-redis-cluster-init"}
        assert set(allowed) == expected, (overlay, allowed)


def test_disruption_budgets_cover_redis_head_and_each_worker_pool(rendered: Docs) -> None:
    for overlay, docs in rendered.items():
        covered = {}
        for pdb in by_kind(docs, "PodDisruptionBudget"):
            matched = _pods_selected(docs, pdb["spec"]["selector"])
            assert len(matched) == 1, (overlay, pdb["metadata"]["name"], matched)
            covered[matched[0]] = pdb["spec"]
        assert set(covered) == {w for w, _ in pod_templates(docs) if not w.startswith("Job/")}, overlay
        # dev's one Redis pod is never drained away; prod's six go one at a time
        budget = {"minAvailable": 1} if overlay == "dev" else {"maxUnavailable": 1}
        redis_budget = covered["StatefulSet/framestream-redis"]
        assert redis_budget == {**redis_budget, **budget}


def test_podmonitor_scrapes_the_metrics_port_of_every_ray_pod_only(rendered: Docs) -> None:
    for overlay, docs in rendered.items():
        (pm,) = by_kind(docs, "PodMonitor")
        assert pm["apiVersion"] == "monitoring.coreos.com/v1"
        spec = pm["spec"]
        assert set(spec) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
        ray_pods = dict(pod_templates(by_kind(docs, "RayService")))
        assert _pods_selected(docs, spec["selector"]) == list(ray_pods), overlay
        (endpoint,) = spec["podMetricsEndpoints"]
        assert set(endpoint) <= {
            "port",
            "path",
            "interval",
            "scrapeTimeout",
            "relabelings",
            "metricRelabelings",
        }
        assert endpoint["path"] == "/metrics" and re.fullmatch(r"\d+s", endpoint["interval"])
        (svc,) = by_kind(docs, "RayService")
        cluster = svc["spec"]["rayClusterConfig"]
        start_params = [cluster["headGroupSpec"]["rayStartParams"]] + [
            g["rayStartParams"] for g in cluster["workerGroupSpecs"]
        ]
        for (where, template), params in zip(ray_pods.items(), start_params, strict=True):
            ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
            assert ports[endpoint["port"]] == int(params["metrics-export-port"]), (overlay, where)


def test_graceful_shutdown_budget_nests_around_the_stage_drain_timeout(rendered: Docs) -> None:
    from tests.k8s.test_serve_config import serve_graceful_shutdown_s

    for overlay, docs in rendered.items():
        drain_s = float(_pipeline_env(docs)["FRAMESTREAM_STREAMS__DRAIN_TIMEOUT_S"])
        assert drain_s == Settings().streams.drain_timeout_s, "the ConfigMap states the default explicitly"
        serve_s = serve_graceful_shutdown_s() or SERVE_DEFAULT_GRACEFUL_SHUTDOWN_S
        assert drain_s <= serve_s, (drain_s, serve_s)
        (svc,) = by_kind(docs, "RayService")
        for where, template in pod_templates([svc]):
            grace = template["spec"]["terminationGracePeriodSeconds"]
            if where.endswith("/head"):
                assert grace > serve_s
                continue
            hook = " ".join(template["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"])
            wait_s = int(re.search(r"seq 1 (\d+)", hook).group(1))  # type: ignore[union-attr]
            deadline_s = int(re.search(r"--deadline-remaining-seconds (\d+)", hook).group(1))  # type: ignore[union-attr]
            assert "ray drain-node" in hook and "ServeReplica" in hook
            assert serve_s + drain_s <= wait_s < deadline_s < grace, (
                overlay,
                where,
                wait_s,
                deadline_s,
                grace,
            )


def _quantity(value: str) -> float:
    units = {
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
        "kb": 2**10, "mb": 2**20, "gb": 2**30,
        "k": 1e3, "M": 1e6, "G": 1e9,
    }  # fmt: skip
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_every_ray_pod_reads_the_model_repository_the_settings_name(rendered: Docs) -> None:
    """Every stage, the classifier and the API resolve model names through `models.repository`:
    each Ray pod mounts the claim there, read-only, and the claim is part of the overlay."""
    for overlay, docs in rendered.items():
        path = _pipeline_env(docs)["FRAMESTREAM_MODELS__REPOSITORY"]
        claims = {d["metadata"]["name"] for d in by_kind(docs, "PersistentVolumeClaim")}
        ray_pods = [(where, t) for where, t in pod_templates(docs) if where.startswith("RayService")]
        assert ray_pods, overlay
        for where, template in ray_pods:
            volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
            (container,) = [c for c in template["spec"]["containers"] if c["name"].startswith("ray")]
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            assert path in mounts and mounts[path].get("readOnly") is True, (overlay, where)
            claim = volumes[mounts[path]["name"]]["persistentVolumeClaim"]["claimName"]
            assert claim in claims, (overlay, where, claim)
