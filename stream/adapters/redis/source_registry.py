"""The source registry in Redis: add, remove and list sources while the pipeline runs.

``keys.sources`` maps source_id -> JSON `SourceSpec` (pipeline-wide); ``keys.source_state`` of
the source's partition maps source_id -> JSON progress ``{next_seq, position, done, error}`` that
ingest writes in the same MULTI/EXEC as the frames it publishes, so a replica that takes a source
over resumes right after the last published frame (no loss; duplicates only if two replicas
overlap during a lease hand-over). The same JSON carries the source's status
(`stream.stages.ingest.source_reports`), written with the progress and whenever the status changes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

from stream.adapters.redis.entries import text
from stream.core.keys import PipelineKeys
from stream.core.sources.ids import ID_PATTERN
from stream.core.sources.status import FAILED, FINISHED, PLAYING, RECONNECTING, STATUSES, frame_age_s

__all__ = ["SourceSpec", "SourceStatus", "add_source", "get_state", "list_sources", "remove_source"]


@dataclass(frozen=True)
class SourceSpec:
    """How to play one source. None = the ingest settings' default (`live`: by source kind)."""

    uri: str
    target_fps: float | None = None
    every_nth: int | None = None
    loop: bool = False
    live: bool | None = None
    realtime: bool = False  # files: publish at the media's own pace instead of as fast as possible
    models: tuple[str, ...] | None = None  # the models that classify it; None: every model served

    def __post_init__(self) -> None:
        if not self.uri:
            raise ValueError("source uri must not be empty")
        if self.models is not None:
            if isinstance(self.models, str) or not all(isinstance(m, str) and m for m in self.models):
                raise ValueError(f"models must be a list of model names, got {self.models!r}")
            if not self.models:
                raise ValueError("models must name at least one model (leave it out for every model)")
            object.__setattr__(self, "models", tuple(dict.fromkeys(self.models)))
        if self.target_fps is not None and self.target_fps <= 0:
            raise ValueError(f"target_fps must be > 0, got {self.target_fps}")
        if self.every_nth is not None and self.every_nth < 1:
            raise ValueError(f"every_nth must be >= 1, got {self.every_nth}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes | dict[str, Any]) -> SourceSpec:
        data = raw if isinstance(raw, dict) else json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"source spec must be a JSON object, got {type(data).__name__}")
        known = {"uri", "target_fps", "every_nth", "loop", "live", "realtime", "models"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown source spec fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class SourceStatus:
    """A registered source as ``GET /v1/sources`` shows it: progress, owner (the ingest replica
    playing it), `status` (see `stream.core.sources.status`) with its `reason`, frames published
    and dropped, attempts to reconnect, seconds since the last frame and recent frames/s."""

    source_id: str
    spec: SourceSpec
    next_seq: int
    done: bool
    error: str | None
    owner: str | None
    status: str = RECONNECTING
    reason: str | None = None
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    last_frame_age_s: float | None = None
    fps: float | None = None


def _status(state: dict[str, Any], owner: str | None) -> tuple[str, str | None]:
    """The status to show: what ingest wrote, unless the source is done (finished or failed) or
    no ingest replica holds it (waiting for one, e.g. after its replica died)."""
    if state.get("done"):
        return (FAILED, state.get("error")) if state.get("error") else (FINISHED, state.get("reason"))
    if owner is None:
        return RECONNECTING, "waiting for an ingest replica to play it"
    status = state.get("status")
    if status not in STATUSES:  # taken, not yet reported
        return RECONNECTING, "opening the source"
    return status, state.get("reason")


def check_source_id(source_id: str) -> str:
    if not ID_PATTERN.match(source_id):
        raise ValueError(f"source id must be 1-128 of [A-Za-z0-9_.-], got {source_id!r}")
    return source_id


async def add_source(
    client: aioredis.Redis,
    keys: PipelineKeys,
    source_id: str,
    spec: SourceSpec | dict[str, Any],
    *,
    replace: bool = False,
) -> None:
    """Register a source; an ingest replica picks it up within a fraction of a second.

    Re-adding an id (with `replace`) plays the new spec from its start, with `seq` continuing
    after the old one's, so (source_id, seq) stays unique.
    """
    check_source_id(source_id)
    spec = spec if isinstance(spec, SourceSpec) else SourceSpec.from_json(spec)
    if not replace and await client.hexists(keys.sources, source_id):
        raise ValueError(f"source {source_id!r} already exists; remove it first or pass replace=True")
    state = await get_state(client, keys, source_id)
    next_seq = int(state.get("next_seq", 0))
    fresh = {"next_seq": next_seq, "first_seq": next_seq, "position": 0, "done": False, "error": None}
    state_key = keys.for_source(source_id).source_state
    if keys.for_source(source_id).index == 0:
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset(state_key, source_id, json.dumps(fresh))
            pipe.hset(keys.sources, source_id, spec.to_json())
            await pipe.execute()
    else:  # two slots: the fresh state first, so ingest never plays the new spec from the old state
        await client.hset(state_key, source_id, json.dumps(fresh))
        await client.hset(keys.sources, source_id, spec.to_json())


async def remove_source(client: aioredis.Redis, keys: PipelineKeys, source_id: str) -> bool:
    """Unregister a source; its ingest replica stops it and publishes end-of-stream. True if it existed."""
    return bool(await client.hdel(keys.sources, source_id))


async def get_state(client: aioredis.Redis, keys: PipelineKeys, source_id: str) -> dict[str, Any]:
    raw = await client.hget(keys.for_source(source_id).source_state, source_id)
    return json.loads(raw) if raw else {}


async def list_sources(client: aioredis.Redis, keys: PipelineKeys) -> list[SourceStatus]:
    """Every registered source with its progress and current owner (ingest replica)."""
    specs = await client.hgetall(keys.sources)
    out: list[SourceStatus] = []
    for raw_id, raw_spec in sorted(specs.items()):
        source_id = text(raw_id)
        state = await get_state(client, keys, source_id)
        raw_owner = await client.get(keys.source_lease(source_id))
        owner = text(raw_owner)
        published, dropped = await client.hmget(
            keys.for_source(source_id).counters, f"published:{source_id}", f"dropped:{source_id}"
        )
        status, reason = _status(state, owner)
        last_frame_ms = state.get("last_frame_ms")
        out.append(
            SourceStatus(
                source_id=source_id,
                spec=SourceSpec.from_json(raw_spec),
                next_seq=int(state.get("next_seq", 0)),
                done=bool(state.get("done", False)),
                error=state.get("error"),
                owner=owner,
                status=status,
                reason=reason,
                frames=int(published or 0),
                dropped=int(dropped or 0),
                reconnects=int(state.get("reconnects") or 0),
                last_frame_age_s=frame_age_s(last_frame_ms, time.time() * 1000.0)
                if isinstance(last_frame_ms, int | float)
                else None,
                fps=state.get("fps") if status == PLAYING else None,
            )
        )
    return out
