"""A Ray driver on the cluster's head host, steered through stdin/stdout (one JSON object a line).

The test process sits outside the cluster (a client on the bridge), and a Ray driver must run on a
Ray node, so `tests.hosts.cluster` starts this module inside the head's namespace once and sends
it commands:

    {"op": "deploy", "config": {...}, "timeout_s": 240} -> {"ok": true}
    {"op": "counts", "app": "NAME"}    -> {"ok": true, "counts": {"Infer": 2, ...}}
    {"op": "nodes"}                    -> {"ok": true, "nodes": [{"ip", "alive", "resources", "labels"}]}

Each reply is one line starting with ``MARK`` (Ray and Serve log to the same streams). Errors come
back as ``{"ok": false, "error": "..."}``. The token reaches it like every other
Ray process here: ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` in its environment.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

MARK = "@@driver "


def _handle(request: dict[str, Any]) -> dict[str, Any]:
    import ray

    from deployments.serve.config import deploy
    from deployments.serve.status import replica_counts

    op = request.get("op")
    if op == "deploy":
        deploy(request["config"], timeout_s=float(request.get("timeout_s", 240)))
        return {"ok": True}
    if op == "counts":
        return {"ok": True, "counts": replica_counts(request["app"])}
    if op == "nodes":
        nodes = [
            {
                "ip": n["NodeManagerAddress"],
                "alive": bool(n["Alive"]),
                "resources": n.get("Resources", {}),
                "labels": n.get("Labels", {}),
            }
            for n in ray.nodes()
        ]
        return {"ok": True, "nodes": nodes}
    return {"ok": False, "error": f"unknown op {op!r}"}


def main() -> int:
    import ray

    address = sys.argv[1]
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    print(MARK + json.dumps({"ok": True, "ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = _handle(json.loads(line))
        except Exception as e:  # the test reads the message; the driver keeps serving
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(MARK + json.dumps(reply, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
