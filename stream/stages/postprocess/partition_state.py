"""What postprocess keeps of a partition in Redis: its saved track states and each commit's fence.

A partition's state hash (`PipelineKeys.group_state`) holds one `stream.core.track_state` text
per source; `load_tracks` reads and checks them when a replica takes the partition. Every commit
to a partition is `Fenced` by its lease (`fences`): it writes nothing unless the committer still
holds that lease, and sets the changed sources' states in the same atomic step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis

from stream.adapters.redis.entries import text
from stream.adapters.redis.fenced_commit import Fenced
from stream.core.keys import PipelineKeys
from stream.core.track_state import SavedTrack, decode_track

__all__ = ["fences", "load_tracks"]

log = logging.getLogger(__name__)


async def load_tracks(
    client: aioredis.Redis,
    keys: PipelineKeys,
    group: str,
    *,
    classes: int,
    alpha: float,
    hysteresis_frames: int,
) -> dict[str, SavedTrack]:
    """The saved track of every source in `keys`'s partition for `group`; a state that does not
    decode is logged and left out (that source starts afresh)."""
    saved = await client.hgetall(keys.group_state(group))  # type: ignore[misc]
    tracks: dict[str, SavedTrack] = {}
    for raw_source, raw in saved.items():
        source = text(raw_source)
        try:
            tracks[source] = decode_track(
                raw, classes=classes, alpha=alpha, hysteresis_frames=hysteresis_frames
            )
        except ValueError as e:
            log.error("saved state of %s in %s is unusable (%s); it starts afresh", source, keys.tag, e)
    return tracks


def fences(
    keys: PipelineKeys,
    group: str,
    partitions: Iterable[int],
    owned: Mapping[int, str],
    states: Mapping[int, dict[str, str]],
) -> list[Fenced]:
    """The fence of a commit to each of `partitions` (in order), with the lease token this replica
    holds (`owned`; none: an empty token, which the lease check refuses) and the changed sources'
    states of that partition."""
    out = []
    for k in sorted(partitions):
        part = keys.partition(k)
        token = owned.get(k, "")
        out.append(Fenced(part.owner_lease(group), token, part.group_state(group), states.get(k, {})))
    return out
