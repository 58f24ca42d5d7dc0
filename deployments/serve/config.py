"""Load ``serve_config.yaml``, adjust it for one run, and deploy it the way ``serve run`` does.

`framestream run`, the tests and the benchmark deploy the very same config file that
``serve run`` and the KubeRay RayService use, with a few overrides (Redis URL, HTTP port, model,
autoscaling knobs for a test), so what they exercise is what users deploy.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any

import yaml

from deployments.ray_internals import serve_start
from deployments.serve.status import app_status
from stream.core.messages import STAGES
from stream.errors import ConfigError

__all__ = [
    "CONFIG_PATH",
    "LOCAL_NODE_RESOURCES",
    "RAY_HEAD_ENV",
    "app_config",
    "app_names",
    "deploy",
    "deployment_config",
    "load_config",
    "one_node",
    "override",
    "per_model",
    "start_local_ray",
    "wait_running",
]

CONFIG_PATH = Path(__file__).with_name("serve_config.yaml")

LOCAL_NODE_RESOURCES: dict[str, float] = {"inference": 1.0}
"""Custom resources a single local Ray node declares (``ray.init(resources=...)``): the config
places Infer and Classifier on nodes offering `inference`, and on one machine that node is this one."""

RAY_HEAD_ENV: dict[str, str] = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}
"""Environment of the Ray head node, where the Serve controller runs: the same for a local Ray that
`framestream run` starts, the test suites' local Ray, the namespace cluster and the RayService's
head container (a k8s test holds them equal). The controller's loop runs every 0.1 s by default:
measured idle on this app (docs/performance.md), 52 ms of CPU a second for the controller and
19 ms for the GCS it calls; at 0.5 s, 25 and 10. Reactions wait up to half a second longer
(replica replacement, scaling decisions), against health checks every 5 s and scaling delays of
3 s and more."""


def start_local_ray(num_cpus: int | None = None, **options: Any) -> None:
    """Start a one-node Ray in this process the way `framestream run` does: the `inference`
    resource (`LOCAL_NODE_RESOURCES`), the head's environment (`RAY_HEAD_ENV`, put into this
    process's environment first, so the raylet and every Ray process of the node inherit it; a
    value already set wins), no dashboard, workers' logs kept off the driver. `num_cpus` defaults
    to this machine's cores (at least 2); `options` go to ``ray.init`` too."""
    import ray

    for name, value in RAY_HEAD_ENV.items():
        os.environ.setdefault(name, value)
    ray.init(
        num_cpus=num_cpus or max(2, os.cpu_count() or 2),
        resources=LOCAL_NODE_RESOURCES,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        **options,
    )


def load_config(path: Path = CONFIG_PATH) -> dict[str, Any]:
    """The Serve config at `path` as a dict (validated against Serve's schema)."""
    from ray.serve.schema import ServeDeploySchema

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read the Serve config {path}: {e}") from e
    try:
        ServeDeploySchema.model_validate(raw)
    except ValueError as e:
        raise ConfigError(f"{path} is not a valid Serve config: {e}") from e
    return raw


def app_config(config: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The application entry called `name` (default: the first one)."""
    apps = config.get("applications") or []
    for app in apps:
        if name is None or app.get("name") == name:
            return app
    raise ConfigError(f"no application {name!r} in the Serve config")


def deployment_config(config: dict[str, Any], deployment: str) -> dict[str, Any]:
    """The entry of `deployment` in the first application (created empty when missing)."""
    app = app_config(config)
    for entry in app.setdefault("deployments", []):
        if entry.get("name") == deployment:
            return entry
    entry = {"name": deployment}
    app["deployments"].append(entry)
    return entry


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def override(
    config: dict[str, Any],
    *,
    args: dict[str, Any] | None = None,
    http: dict[str, Any] | None = None,
    deployments: dict[str, dict[str, Any]] | None = None,
    stages: list[str] | None = None,
) -> dict[str, Any]:
    """A copy of `config` with `args` merged into the app's args (nested dicts merge), `http`
    into ``http_options`` and ``deployments[name]`` into that deployment's entry; `stages`
    deploys only those stages (Serve rejects entries for deployments the app does not have)."""
    from deployments.serve.app import DEPLOYMENT_NAMES, SINKS

    out = copy.deepcopy(config)
    app = app_config(out)
    _merge(app.setdefault("args", {}), args or {})
    if stages is not None:
        app["args"]["stages"] = list(stages)
        dropped = {DEPLOYMENT_NAMES[s] for s in (*STAGES, SINKS) if s not in stages}
        app["deployments"] = [d for d in app.get("deployments", []) if d.get("name") not in dropped]
    _merge(out.setdefault("http_options", {}), http or {})
    for name, options in (deployments or {}).items():
        _merge(deployment_config(out, name), options)
    return out


def per_model(config: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """A copy of `config` whose first application serves ``models[0]`` and, for each further
    model, a copy of it named ``<name>-<model>`` at ``/models/<model>`` without its own ingest:
    one frames stream feeds every model (one preprocess/infer/postprocess group per model)."""
    from deployments.serve.app import DEPLOYMENT_NAMES

    out = copy.deepcopy(config)
    base = app_config(out)
    base.setdefault("args", {})["model"] = models[0]
    for model in models[1:]:
        extra = copy.deepcopy(base)
        extra["name"] = f"{base['name']}-{model}"
        extra["route_prefix"] = f"/models/{model}"
        extra["args"]["model"] = model
        # one ingest and one sinks delivery for every model: the frames and the sinks are shared
        extra["args"]["stages"] = [
            s for s in extra["args"].get("stages", list(STAGES)) if s not in ("ingest", "sinks")
        ]
        extra["deployments"] = [
            d
            for d in extra.get("deployments", [])
            if d.get("name") not in (DEPLOYMENT_NAMES["ingest"], DEPLOYMENT_NAMES["sinks"])
        ]
        out["applications"].append(extra)
    return out


def one_node(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` for a Ray of one node: every autoscaled deployment placed on inference
    hosts (asking for the `inference` resource: Infer, Classifier), or limited to one replica per
    node (Ingest), scales to one replica at most.
    OpenVINO's throughput mode already runs inference streams on every core of the node from one
    process: a second replica there only competes for the same cores. Measured with
    `benchmarks.ray_cpu` on v2-1.0-224: 17.0 ms of CPU a frame with the two Infer replicas a
    flat-out clip scaled to, 14.2 with one (the stage processes: 13.9)."""
    out = copy.deepcopy(config)
    for app in out.get("applications", []):
        for entry in app.get("deployments", []):
            placed = "inference" in entry.get("ray_actor_options", {}).get("resources", {})
            placed = placed or entry.get("max_replicas_per_node") == 1
            scaling = entry.get("autoscaling_config")
            if placed and scaling:
                scaling["max_replicas"] = 1
                scaling["min_replicas"] = min(int(scaling.get("min_replicas", 1)), 1)
    return out


def app_names(config: dict[str, Any]) -> dict[str, str]:
    """Serve application name per model (``args.model``) in `config`."""
    return {str(app.get("args", {}).get("model")): app["name"] for app in config.get("applications", [])}


def deploy(config: dict[str, Any], *, timeout_s: float = 300.0) -> None:
    """Start Serve (HTTP options from `config`) and deploy its applications; wait until RUNNING.

    Needs ``ray.init`` first. Raises ConfigError with Serve's own message if a deployment fails.
    """
    from ray.serve.schema import ServeDeploySchema, ServeInstanceDetails

    schema = ServeDeploySchema.model_validate(config)
    client = serve_start(http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location)
    # a config given to Serve is the whole set of applications: keep the ones running already
    # (another run's, the cluster's own) that this config does not replace
    ours = {app.name for app in schema.applications}
    running = ServeInstanceDetails.model_validate(client.get_serve_details()).applications
    kept = [
        details.deployed_app_config
        for name, details in running.items()
        if name not in ours and details.deployed_app_config is not None
    ]
    schema.applications = [*kept, *schema.applications]
    client.deploy_apps(schema, _blocking=False)
    for app in schema.applications:
        wait_running(app.name, timeout_s=timeout_s)


def wait_running(app_name: str, *, timeout_s: float) -> None:
    """Block until application `app_name` is RUNNING; ConfigError on failure or timeout."""
    deadline = time.monotonic() + timeout_s
    message = ""
    while time.monotonic() < deadline:
        app = app_status(app_name)
        if app is not None:
            if app.status == "RUNNING":
                return
            if app.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                details = "; ".join(f"{name}: {m}" for name, m in app.deployment_messages.items())
                raise ConfigError(f"Serve application {app_name!r} is {app.status}: {app.message} {details}")
            message = app.message
        time.sleep(0.5)
    raise ConfigError(f"Serve application {app_name!r} not running after {timeout_s:.0f} s: {message}")
