"""Sinks added through the HTTP API (``POST /v1/sinks``), kept in Redis (`PipelineKeys.sink_registry`)
next to the ones in the settings file; the sinks process follows it (`stream.sinks.loop`).

A registered sink's secret is stored with it (Redis holds it for the sinks process to read;
whoever can read the pipeline's Redis can read it: prefer ``secret_env``, which stores only the
name of a variable in the sinks process's environment). Removing a sink also destroys its
consumer groups and its retry stream, so nothing keeps its streams from being trimmed.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from pydantic import ValidationError
from redis.exceptions import ResponseError

from stream.adapters.redis.entries import text
from stream.adapters.redis.sink_backlog import sink_streams
from stream.core.keys import PipelineKeys
from stream.sinks.settings import SinkSettings

__all__ = ["add_sink", "forget_sink_groups", "registered_sinks", "remove_sink"]

log = logging.getLogger(__name__)


def _stored(sink: SinkSettings) -> str:
    data = sink.model_dump(mode="json")
    data["secret"] = sink.secret.get_secret_value() if sink.secret is not None else None
    return json.dumps(data)


async def registered_sinks(client: Any, keys: PipelineKeys) -> list[SinkSettings]:
    """Every sink added through the API, by name; one that no longer reads as sink settings (a
    later version's field) is left out with a warning naming it."""
    found = []
    for name, raw in sorted((await client.hgetall(keys.sink_registry)).items()):
        try:
            found.append(SinkSettings.model_validate_json(raw))
        except ValidationError as e:
            log.warning("registered sink %s is not valid sink settings, skipped: %s", text(name), e)
    return found


async def add_sink(client: Any, keys: PipelineKeys, sink: SinkSettings) -> bool:
    """Register `sink`; False when a sink of that name is registered already."""
    return bool(await client.hsetnx(keys.sink_registry, sink.name, _stored(sink)))


async def remove_sink(client: Any, keys: PipelineKeys, name: str) -> bool:
    """Unregister sink `name` and forget its groups; False when no such sink was registered."""
    raw = await client.hget(keys.sink_registry, name)
    if raw is None:
        return False
    await client.hdel(keys.sink_registry, name)
    try:
        sink = SinkSettings.model_validate_json(raw)
    except ValidationError:
        return True
    await forget_sink_groups(client, keys, sink)
    return True


async def forget_sink_groups(client: Any, keys: PipelineKeys, sink: SinkSettings) -> None:
    """Destroy `sink`'s group on every stream it read and delete its retry streams: what it had
    not delivered stays in the pipeline's streams for the other readers, and is trimmed."""
    for part in keys.all_partitions:
        for stream in sink_streams(part, sink):
            with contextlib.suppress(ResponseError):  # no such stream (never written): no group either
                await client.xgroup_destroy(stream, sink.group)
        await client.delete(part.sink_retry(sink.name))
    await client.hdel(keys.sink_errors, sink.name)
