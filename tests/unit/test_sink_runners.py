"""Where sinks run under Ray: the Serve application deploys a Sinks deployment when asked, once
for every model, and a local run hands a sink's secret to the replicas through the environment,
never through the Serve config."""

from __future__ import annotations

import contextlib
import os

import pytest

from stream.core.messages import STAGES
from stream.settings import Settings
from stream.sinks.settings import secret_variable

SECRET = "ray-sink-secret-0123456789"
HOOK = {"name": "my-hook", "kind": "webhook", "url": "https://192.0.2.1/in", "secret": SECRET}


def test_the_app_accepts_the_sinks_stage_and_deploys_it_once_for_every_model() -> None:
    pytest.importorskip("ray")
    from deployments.serve.app import DEPLOYMENT_NAMES, AppArgs
    from deployments.serve.config import app_config, load_config, override, per_model

    assert AppArgs.model_validate({"stages": [*STAGES, "sinks"]}).stages[-1] == "sinks"
    with pytest.raises(ValueError, match="unknown stages"):
        AppArgs.model_validate({"stages": ["sink"]})
    config = per_model(override(load_config(), stages=[*STAGES, "sinks"]), ["a", "b"])
    first, second = config["applications"]
    assert "sinks" in first["args"]["stages"] and "sinks" not in second["args"]["stages"]
    assert DEPLOYMENT_NAMES["sinks"] not in {d["name"] for d in second["deployments"]}
    assert app_config(config)["args"]["stages"] == first["args"]["stages"]


def test_the_shipped_config_deploys_sinks_autoscaled_and_a_run_without_sinks_leaves_it_out() -> None:
    pytest.importorskip("ray")
    from ray.serve.schema import ServeDeploySchema

    from deployments.serve.app import DEPLOYMENT_NAMES
    from deployments.serve.config import app_config, deployment_config, load_config, override

    shipped = load_config()
    assert "sinks" in app_config(shipped)["args"]["stages"]
    policy = deployment_config(shipped, DEPLOYMENT_NAMES["sinks"])["autoscaling_config"]["policy"]
    assert policy["policy_function"] == "deployments.serve.policy:BacklogPolicy"
    without = override(shipped, stages=list(STAGES))
    assert DEPLOYMENT_NAMES["sinks"] not in {d["name"] for d in app_config(without)["deployments"]}
    ServeDeploySchema.model_validate(without)  # Serve refuses entries of deployments not deployed


def test_a_local_ray_run_hands_the_sink_secret_over_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("ray")
    from deployments.local.runner import _replica_settings, _sink_secrets_through_environment

    variable = secret_variable("my-hook")
    monkeypatch.delenv(variable, raising=False)
    settings = Settings(sinks=[HOOK])
    with contextlib.ExitStack() as stack:
        _sink_secrets_through_environment(stack, settings)
        replica = _replica_settings(settings, "redis://127.0.0.1:6379/0")
        assert SECRET not in repr(replica)
        assert replica["sinks"][0]["secret_env"] == variable
        assert Settings(**replica).sinks[0].secret_value() == SECRET  # what a replica reads
    assert variable not in os.environ  # restored when the run ends
