"""What `framestream run` watches while the pipeline runs, read from Redis only.

- `ResultSink` follows the results stream: dedups by (source, model, seq) and counts the
  duplicates, keeps latencies and each source's current smoothed label, notes end-of-stream, and
  writes one JSON line per distinct result when asked to (``--results FILE.jsonl``).
- `probe_stages` reads every stage's consumer group (XINFO GROUPS): entries handled, backlog.

Reading the streams rather than asking replicas keeps the view honest (it is what a consumer of
the results sees) and works the same on a laptop and against a remote cluster.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from stream.core.codec import decode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.messages import EOS, RESULT
from stream.errors import CodecError

__all__ = ["ResultSink", "StageProbe", "percentile", "probe_stages", "read_counters"]


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def percentile(values: list[float], q: float) -> float | None:
    """The `q`-th percentile (0..100, nearest rank) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class ResultSink:
    """Follows ``keys.results`` from the start; see the module docstring."""

    client: Any
    keys: PipelineKeys
    jsonl: Path | None = None
    last_id: str = "0-0"
    distinct: int = 0
    duplicates: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    labels: dict[tuple[str, str], str] = field(default_factory=dict)
    results_per_track: dict[tuple[str, str], int] = field(default_factory=dict)
    eos: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _seen: set[tuple[str, str, int]] = field(default_factory=set)
    _eos_at: dict[tuple[str, str], float] = field(default_factory=dict)
    _out: IO[str] | None = None

    def __post_init__(self) -> None:
        if self.jsonl is not None:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.jsonl.open("w")

    async def poll(self, block_ms: int | None = 200, count: int = 2000) -> int:
        """Read what is new (waiting at most `block_ms`); returns how many entries were read."""
        reply = await self.client.xread({self.keys.results: self.last_id}, count=count, block=block_ms)
        n = 0
        for _, entries in reply or []:
            for raw_id, fields in entries:
                self.last_id = _s(raw_id)
                n += 1
                raw = (fields or {}).get(FIELD.encode())
                if raw is not None:
                    self._take(raw)
        if n and self._out is not None:
            self._out.flush()
        return n

    def _take(self, raw: bytes) -> None:
        try:
            meta = dict(decode_message(raw).meta)
        except CodecError:
            return
        track = (str(meta.get("source")), str(meta.get("model")))
        if meta.get("kind") == EOS:
            self.eos[track] = meta
            self._eos_at[track] = time.monotonic()
            return
        if meta.get("kind") != RESULT:
            return
        key = (*track, int(meta.get("seq", -1)))
        if key in self._seen:
            self.duplicates += 1
            return
        self._seen.add(key)
        self.distinct += 1
        self.results_per_track[track] = self.results_per_track.get(track, 0) + 1
        if meta.get("smoothed_label") is not None:
            self.labels[track] = str(meta["smoothed_label"])
        latency = meta.get("latency_ms")
        if isinstance(latency, int | float):
            self.latencies_ms.append(float(latency))
        if self._out is not None:
            self._out.write(json.dumps(meta, separators=(",", ":"), default=str) + "\n")

    def finished(
        self, tracks: list[tuple[str, str]], grace_s: float = 10.0, now_s: float | None = None
    ) -> bool:
        """True once every (source, model) in `tracks` has its end-of-stream result and every frame
        it announced (less the skipped ones) has a result, or `grace_s` passed since the end:
        "late" results (frames the reorder buffer stopped waiting for) can follow the end."""
        now = time.monotonic() if now_s is None else now_s
        for track in tracks:
            eos = self.eos.get(track)
            if eos is None:
                return False
            expected = int(eos.get("frames") or 0) - int(eos.get("skipped") or 0)
            if self.results_per_track.get(track, 0) < expected and now - self._eos_at[track] < grace_s:
                return False
        return True

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


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
    """Every consumer group on the frames, tensors and scores streams of `model`, by stage."""
    out: dict[str, StageProbe] = {}
    for stream in (keys.frames, keys.tensors(model), keys.scores(model)):
        try:
            groups = await client.xinfo_groups(stream)
        except Exception:  # the stream does not exist yet
            continue
        for g in groups:
            info = {_s(k): v for k, v in g.items()}
            group = _s(info["name"])
            if group.endswith(f":{model}") or ":" not in group:
                pending = int(info.get("pending") or 0)
                lag = int(info.get("lag") or 0)
                read = int(info.get("entries-read") or 0)
                stage = _group_stage(group)
                out[stage] = StageProbe(stage, stream, group, max(0, read - pending), lag + pending)
    return out


async def read_counters(client: Any, keys: PipelineKeys) -> dict[str, int]:
    """Pipeline counters (``published:<source>``, ``dropped:<source>``, ...) summed by kind too."""
    raw = await client.hgetall(keys.counters)
    out: dict[str, int] = {}
    for k, v in raw.items():
        name, value = _s(k), int(v)
        out[name] = value
        kind = name.split(":", 1)[0]
        if kind != name:
            out[f"{kind}:*"] = out.get(f"{kind}:*", 0) + value
    return out
