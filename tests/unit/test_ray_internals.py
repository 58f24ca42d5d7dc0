"""Every private Ray API framestream uses (`deployments.ray_internals`) is still where it was.

A Ray upgrade that moves one fails here, naming it, rather than in the middle of a run. No Ray
cluster is started: each name is looked up, and the calls that need no cluster are made.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

from deployments import ray_internals

# (module, attribute, parameters the call passes): what ray_internals reaches
PRIVATE = [
    ("ray.serve._private.api", "serve_start", {"http_options", "proxy_location"}),
    ("ray.serve.context", "_get_global_client", {"raise_if_no_controller_running"}),
    ("ray._raylet", "Config", set()),
    ("ray._private.worker", "_global_node", set()),
]


@pytest.mark.parametrize(("module", "name", "params"), PRIVATE, ids=[f"{m}.{n}" for m, n, _ in PRIVATE])
def test_each_private_ray_api_is_still_there(module: str, name: str, params: set[str]) -> None:
    found = importlib.import_module(module)
    assert hasattr(found, name), f"Ray moved {module}.{name}: update deployments/ray_internals.py"
    if params:
        signature = inspect.signature(getattr(found, name))
        assert params <= set(signature.parameters), f"{module}.{name}{signature} no longer takes {params}"


def test_without_ray_the_internals_answer_none_and_start_no_ray() -> None:
    import ray

    assert not ray.is_initialized()
    assert ray_internals.serve_client() is None
    assert ray_internals.session_dir() is None
    assert not ray.is_initialized()
    ray_internals.reload_auth_config()  # re-reads RAY_AUTH_MODE; raises if Config.initialize moved
    import ray._raylet

    assert callable(ray._raylet.Config.initialize)
