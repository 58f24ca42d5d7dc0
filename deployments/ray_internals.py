"""The private Ray and Serve APIs framestream uses, in one module.

Each one does something no public API offers. `tests/unit/test_ray_internals.py` reaches every one
of them, so a Ray upgrade that moves or renames one fails that test by name, instead of failing
deep inside a run.

- `serve_start`: start Serve with HTTP options and get its controller client without deploying
  anything (``serve.start`` does not return the client, and ``deploy_apps`` needs it).
- `serve_client`: the controller client of the running Serve instance, or None. Its
  ``get_serve_details()`` is the plain dict ``serve.status()`` is built from.
- `reload_auth_config`: make an already-imported Ray read ``RAY_AUTH_MODE`` again.
- `session_dir`: the session folder (logs) of the Ray this process is connected to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["reload_auth_config", "serve_client", "serve_start", "session_dir"]


def serve_start(*, http_options: dict[str, Any], proxy_location: Any) -> Any:
    """Start Serve (or find it running) and return its controller client."""
    from ray.serve._private import api as serve_api

    return serve_api.serve_start(http_options=http_options, proxy_location=proxy_location)


def serve_client() -> Any | None:
    """The controller client of the Serve instance this process sees, or None if none runs (or
    this process is not connected to Ray: asking would start a Ray of its own)."""
    import ray
    from ray.serve.context import _get_global_client

    if not ray.is_initialized():
        return None
    return _get_global_client(raise_if_no_controller_running=False)


def reload_auth_config() -> None:
    """Ray reads its auth mode when it is imported; this makes it read the environment again."""
    from ray._raylet import Config  # type: ignore[attr-defined]

    Config.initialize("")


def session_dir() -> Path | None:
    """The session folder of the Ray cluster this process is connected to, or None."""
    import ray

    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    return None if node is None else Path(node.get_session_dir_path())
