"""What `framestream run` watches of the stages while the pipeline runs, read from Redis only
(the results are read by `stream.readers.results.ResultReader`).

- `probe_stages` reads every stage's consumer group (`stream.adapters.redis.group_stats`): entries
  handled, backlog.
- `read_counters` reads the pipeline's counters (published, dropped, ...).

Reading Redis rather than asking replicas keeps the view honest and works the same on a laptop
and against a remote cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stream.adapters.redis.entries import text
from stream.adapters.redis.group_stats import group_infos, info_stats
from stream.core.keys import PipelineKeys

__all__ = ["StageProbe", "probe_stages", "read_counters"]


@dataclass(frozen=True)
class StageProbe:
    """One stage's consumer group: entries it has handled (read and acked) and its backlog."""

    stage: str
    stream: str
    group: str
    handled: int
    backlog: int


def _group_stage(group: str) -> str:
    return group.split(":", 1)[0]


async def probe_stages(client: Any, keys: PipelineKeys, model: str) -> dict[str, StageProbe]:
    """Every consumer group on the frames, tensors and scores streams of `model`, by stage, summed
    over the partitions (`stream` names partition 0's)."""
    out: dict[str, StageProbe] = {}
    for part in keys.all_partitions:
        for stage, probe in (await _probe_partition(client, part, model)).items():
            if stage in out:
                seen = out[stage]
                probe = StageProbe(
                    stage, seen.stream, seen.group, seen.handled + probe.handled, seen.backlog + probe.backlog
                )
            out[stage] = probe
    return out


async def _probe_partition(client: Any, keys: PipelineKeys, model: str) -> dict[str, StageProbe]:
    out: dict[str, StageProbe] = {}
    for stream in (keys.frames, keys.tensors(model), keys.scores(model)):
        for info in await group_infos(client, stream):  # none while the stream does not exist
            group = text(info["name"])
            if group.endswith(f":{model}") or ":" not in group:
                stats = await info_stats(client, stream, info)  # the lag Redis miscounts, corrected
                read = int(info.get("entries-read") or 0)
                stage = _group_stage(group)
                out[stage] = StageProbe(stage, stream, group, max(0, read - stats.pending), stats.backlog)
    return out


async def read_counters(client: Any, keys: PipelineKeys) -> dict[str, int]:
    """Pipeline counters (``published:<source>``, ``dropped:<source>``, ``dead:<stage>``, ...) of
    every partition, summed by kind too (``published:*``)."""
    out: dict[str, int] = {}
    for part in keys.all_partitions:
        for k, v in (await client.hgetall(part.counters)).items():
            name, value = text(k), int(v)
            out[name] = out.get(name, 0) + value
            kind = name.split(":", 1)[0]
            if kind != name:
                out[f"{kind}:*"] = out.get(f"{kind}:*", 0) + value
    return out
