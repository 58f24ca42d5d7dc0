"""What each sink has done, from Redis (any process can read it: the console, a command): items
delivered, send retries, dead letters, entries dropped under ``on_full: drop``, its backlog and its
last failed send."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from stream.adapters.redis.entries import text
from stream.adapters.redis.sink_backlog import total_sink_backlog
from stream.core.keys import PipelineKeys
from stream.readers.watch import read_counters
from stream.settings import SinkSettings

__all__ = ["sink_status"]


async def sink_status(client: Any, keys: PipelineKeys, sinks: Sequence[SinkSettings]) -> list[dict[str, Any]]:
    """A row per sink of `sinks`, in their order: ``name``, ``kind``, ``delivered``, ``retries``,
    ``dead_letters`` (not delivered), ``dropped`` (``on_full: drop``), ``backlog`` (entries not yet
    acked, every partition), ``last_error`` and ``last_error_ms`` (None when it never failed)."""
    counters = await read_counters(client, keys)
    errors = {text(k): v for k, v in (await client.hgetall(keys.sink_errors)).items()}
    rows = []
    for sink in sinks:
        dropped = counters.get(f"sink:{sink.name}:dropped", 0)
        last = _last_error(errors.get(sink.name))
        rows.append({
            "name": sink.name,
            "kind": sink.kind,
            "delivered": counters.get(f"sink:{sink.name}:delivered", 0),
            "retries": counters.get(f"sink:{sink.name}:retries", 0),
            "dead_letters": counters.get(f"dead:{sink.group}", 0) - dropped,
            "dropped": dropped,
            "backlog": await total_sink_backlog(client, keys, sink),
            "last_error": last.get("error"),
            "last_error_ms": last.get("time_ms"),
        })  # fmt: skip
    return rows


def _last_error(raw: Any) -> dict[str, Any]:
    """The stored {error, time_ms}; {} when absent or not that shape (nothing else is trusted)."""
    if raw is None:
        return {}
    try:
        value = json.loads(text(raw))
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    error, time_ms = value.get("error"), value.get("time_ms")
    return {
        "error": error if isinstance(error, str) else None,
        "time_ms": time_ms if isinstance(time_ms, int) and not isinstance(time_ms, bool) else None,
    }
