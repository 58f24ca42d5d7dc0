"""What Serve says of an application: its status and its replicas, from the controller's details.

The one reader of Serve's status. It reads the controller's details as a plain dict:
``serve.status()`` builds Serve's pydantic models from the same dict, and their validators
cloudpickle every deployment's request router and autoscaling policy again, on each call (tens
of ms of CPU, most of the driver's own CPU when a progress view asked twice a second;
``python -m benchmarks.replica_counts``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from deployments.ray_internals import serve_client

__all__ = ["AppStatus", "app_status", "replica_counts", "replica_states"]


@dataclass(frozen=True)
class AppStatus:
    """An application's state (``RUNNING``, ``DEPLOYING``, ``DEPLOY_FAILED``, ``UNHEALTHY``, ...)."""

    status: str
    message: str = ""
    deployment_messages: dict[str, str] = field(default_factory=dict)


def _value(state: Any) -> str:
    """A state as its plain name (Serve's states are ``str`` enums: ``str()`` adds the class)."""
    return str(getattr(state, "value", state))


def _details(app_name: str) -> dict[str, Any] | None:
    client = serve_client()
    if client is None:
        return None
    app: dict[str, Any] | None = (client.get_serve_details().get("applications") or {}).get(app_name)
    return app


def app_status(app_name: str) -> AppStatus | None:
    """Application `app_name`'s status, or None when Serve or the application is not there."""
    app = _details(app_name)
    if app is None:
        return None
    messages = {
        name: str(d.get("message") or "")
        for name, d in (app.get("deployments") or {}).items()
        if d.get("message")
    }
    return AppStatus(_value(app.get("status")), str(app.get("message") or ""), messages)


def replica_states(app_name: str) -> dict[str, dict[str, int]]:
    """Replicas per state (RUNNING, STARTING, ...) per deployment of `app_name`."""
    app = _details(app_name)
    if app is None:
        return {}
    return {
        name: dict(Counter(_value(r.get("state")) for r in d.get("replicas") or []))
        for name, d in (app.get("deployments") or {}).items()
    }


def replica_counts(app_name: str) -> dict[str, int]:
    """RUNNING replicas per deployment of `app_name` (`replica_states`)."""
    return {name: states.get("RUNNING", 0) for name, states in replica_states(app_name).items()}
