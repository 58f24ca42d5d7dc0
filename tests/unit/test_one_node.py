"""On the one-node Ray that `framestream run` starts, the OpenVINO deployments stay at one replica:
a second one on the same cores only competes with the first's inference streams."""

from __future__ import annotations

from deployments.serve.config import load_config, one_node, per_model


def _scaling(config: dict, app: int = 0) -> dict[str, dict]:
    return {d["name"]: d.get("autoscaling_config", {}) for d in config["applications"][app]["deployments"]}


def test_inference_deployments_scale_to_one_replica_and_the_others_keep_their_range() -> None:
    source = load_config()
    local = one_node(per_model(source, ["a", "b"]))
    before = _scaling(source)
    assert before["Infer"]["max_replicas"] > 1 and before["Classifier"]["max_replicas"] > 1
    assert before["Ingest"]["max_replicas"] > 1
    for app in range(2):  # every model's application
        after = _scaling(local, app)
        assert after["Infer"]["max_replicas"] == 1 and after["Infer"]["min_replicas"] == 1
        assert after["Classifier"]["max_replicas"] == 1
        if app == 0:  # ingest plays every model's sources, from the first application
            assert after["Ingest"]["max_replicas"] == 1  # one per node, and this Ray has one node
        for name in ("Preprocess", "Postprocess"):
            assert after[name] == before[name]
    assert _scaling(source) == before  # a copy: the loaded config is left as it was
