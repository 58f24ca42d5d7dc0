"""The agreement of a shadow version with the active one, read from Redis: the active version's
results (``fs:{p}:results``, every partition) and the shadow's scores (``fs:{p}:shadow:<model>``),
the newest `window` entries of each per partition, compared by `stream.core.agreement`.

Reads by range only (XREVRANGE): it takes nothing from any consumer group.
"""

from __future__ import annotations

from typing import Any

from stream.core.agreement import Agreement, FrameKey, compare_versions
from stream.core.keys import PipelineKeys
from stream.core.messages import RESULT
from stream.readers.results import decode_fields

__all__ = ["WINDOW", "shadow_agreement"]

WINDOW = 20_000
"""Newest entries read per stream and partition (about what `streams.max_len` keeps)."""


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
