"""What the models of a pipeline serve, read from Redis and the model repository (what
``GET /v1/models`` answers): per model its state (``serving``, or for a model asked for while
running ``starting`` / ``failed``), its versions, the active one and the shadow, its classes,
frames/s per version over the newest results, and a shadow's agreement with the active version.

The agreement reads the active version's results (``fs:{p}:results``, every partition) and the
shadow's scores (``fs:{p}:shadow:<model>``), the newest `window` entries of each per partition,
and compares them with `stream.core.agreement`. Reads by range only (XREVRANGE): it takes
nothing from any consumer group.
"""

from __future__ import annotations

import asyncio
from typing import Any

from stream.adapters.redis.entries import text
from stream.core.agreement import Agreement, FrameKey, compare_versions
from stream.core.keys import PipelineKeys
from stream.core.messages import RESULT
from stream.errors import FramestreamError
from stream.readers.results import decode_fields

__all__ = ["RATE_WINDOW_S", "WINDOW", "frames_per_s", "models_overview", "served_models", "shadow_agreement"]

WINDOW = 20_000
"""Newest entries read per stream and partition (about what `streams.max_len` keeps)."""
RATE_WINDOW_S = 10.0
"""frames/s is the results of the last this many seconds, divided by it."""


async def shadow_agreement(
    client: Any,
    keys: PipelineKeys,
    model: str,
    *,
    active_version: int,
    shadow_version: int,
    window: int = WINDOW,
) -> Agreement:
    """`shadow_version` of `model` against `active_version`, over the frames both answered."""
    active: dict[FrameKey, str] = {}
    shadow: dict[FrameKey, tuple[str, float | None]] = {}
    for part in keys.all_partitions:
        for _, fields in await client.xrevrange(part.results, count=window):
            meta = decode_fields(fields)
            if (
                meta is not None
                and meta.get("kind") == RESULT
                and meta.get("model") == model
                and meta.get("model_version") == active_version
            ):
                active[(str(meta["source"]), int(meta["seq"]))] = str(meta["label"])
        for _, fields in await client.xrevrange(part.shadow(model), count=window):
            meta = decode_fields(fields)
            if meta is not None and meta.get("model_version") == shadow_version and "top_label" in meta:
                ms = meta.get("infer_ms")
                cost = float(ms) if isinstance(ms, int | float) else None
                shadow[(str(meta["source"]), int(meta["seq"]))] = (str(meta["top_label"]), cost)
    return compare_versions(active, shadow, active_version=active_version, shadow_version=shadow_version)


async def served_models(client: Any, keys: PipelineKeys) -> list[str]:
    """The models the pipeline serves: those whose preprocess group reads the frames stream."""
    found: set[str] = set()
    for part in keys.all_partitions:
        try:
            groups = await client.xinfo_groups(part.frames)
        except Exception:  # noqa: BLE001 - no frames stream yet: nothing served there
            continue
        for g in groups:
            stage, _, model = text(g["name"]).partition(":")
            if stage == "preprocess" and model:
                found.add(model)
    return sorted(found)


async def frames_per_s(
    client: Any, keys: PipelineKeys, model: str, *, now_ms: float, window_s: float = RATE_WINDOW_S
) -> dict[int, float]:
    """Results per second of each version of `model` over the last `window_s` seconds."""
    counts: dict[int, int] = {}
    since = now_ms - window_s * 1000.0
    for part in keys.all_partitions:
        for _, fields in await client.xrevrange(part.results, min=f"{int(since)}-0", count=WINDOW):
            meta = decode_fields(fields)
            if meta is None or meta.get("kind") != RESULT or meta.get("model") != model:
                continue
            version = meta.get("model_version")
            key = version if isinstance(version, int) else 1
            counts[key] = counts.get(key, 0) + 1
    return {v: round(n / window_s, 2) for v, n in sorted(counts.items())}


async def models_overview(
    client: Any, keys: PipelineKeys, repository: Any, *, now_ms: float
) -> list[dict[str, Any]]:
    """Every model the pipeline serves: name, versions, active, shadow, classes, frames/s (by
    version) and, with a shadow, its agreement with the active version. `repository` is a
    `stream.zoo.repository.ModelRepository` (readers sit below the zoo, so it is passed in)."""
    from stream.adapters.redis.model_requests import SERVING, STARTING, model_requests

    requests = await model_requests(client, keys)
    served = await served_models(client, keys)
    out = []
    for name in served:
        asked = requests.get(name)
        entry: dict[str, Any] = {
            "name": name,
            "state": STARTING if asked is not None and asked.state == STARTING else SERVING,
            "frames_per_s": await frames_per_s(client, keys, name, now_ms=now_ms),
        }
        try:
            versions = await asyncio.to_thread(repository.versions, name)
            serving = await asyncio.to_thread(repository.serving, name)
            spec = await asyncio.to_thread(repository.spec, name)
        except FramestreamError as e:  # a model the repository does not know (another host's)
            out.append({**entry, "error": str(e)})
            continue
        entry.update(
            versions=versions,
            active=serving.active,
            shadow=serving.shadow,
            history=list(serving.history),
            classes=spec.classes - spec.background_offset,
            seed=repository.is_seed(name),
            agreement=None,
        )
        if serving.shadow is not None:
            found = await shadow_agreement(
                client, keys, name, active_version=serving.active, shadow_version=serving.shadow
            )
            entry["agreement"] = found.as_dict()
        out.append(entry)
    for name, asked in sorted(requests.items()):  # asked for while running, no stage reading yet
        if name not in served and asked.state != SERVING:
            out.append({"name": name, "state": asked.state, "reason": asked.reason})
    return out
