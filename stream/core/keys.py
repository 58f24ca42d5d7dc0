"""Every Redis key name framestream uses, in one place.

A pipeline has P partitions (``streams.partitions``, 1 by default). Partition k's keys share one
hash tag, so a MULTI/EXEC that XADDs to one of its streams and XACKs another stays on one slot of
a Redis Cluster, while different partitions land on different slots (and so, on a cluster with
several masters, on different shards):

- partition 0: ``fs:{<pipeline>}:...`` (with P = 1 these are the only keys, as they always were);
- partition k >= 1: ``fs:{<pipeline>:<k>}:...`` (``:`` cannot occur in a pipeline name, so no
  pipeline's tag can collide with another's partition).

Per partition: the frames, tensors, scores, shadow scores, results, events, segments and
dead-letter streams, each source's progress (``source_state``, written with the frames it
publishes) and the counters.
Per partition and postprocess group: the owner's lease and the state hash. Pipeline-wide, on
partition 0's tag: the source registry, source leases, the members of groups that own
partitions, stage readiness, the models asked for while running and the partition count
record. A source belongs to partition ``zlib.crc32(source_id) % P`` (`partition_of`).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, replace

__all__ = ["PipelineKeys", "FIELD", "is_stream_id", "partition_of"]

_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_U64 = 2**64


def is_stream_id(text: str) -> bool:
    """Whether `text` is an explicit Redis stream entry id ``<ms>-<seq>`` Redis accepts (each part
    an unsigned 64-bit number); what a client sends is checked here before Redis sees it."""
    if _STREAM_ID.fullmatch(text) is None:
        return False
    ms, seq = text.split("-")
    return int(ms) < _U64 and int(seq) < _U64


FIELD = "d"
"""The single field every stream entry carries: the encoded message bytes."""


def partition_of(source_id: str, partitions: int) -> int:
    """The partition of `source_id`: CRC-32 (zlib, IEEE) of its UTF-8 bytes, modulo `partitions`.

    Stable across processes, hosts and Python versions (Python's own `hash` of a str is salted per
    process), so every replica of every stage agrees where a source's frames go.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return zlib.crc32(source_id.encode()) % partitions


@dataclass(frozen=True)
class PipelineKeys:
    """Key names of partition `index` of the pipeline `pipeline`, which has `partitions` partitions."""

    pipeline: str = "p"
    partitions: int = 1
    index: int = 0

    def __post_init__(self) -> None:
        if not self.pipeline or any(c in self.pipeline for c in "{}: "):
            raise ValueError(f"pipeline name must be non-empty without '{{}}: ', got {self.pipeline!r}")
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")
        if not 0 <= self.index < self.partitions:
            raise ValueError(f"partition index must be in 0..{self.partitions - 1}, got {self.index}")

    # --- partitions -------------------------------------------------------------------------

    def partition(self, index: int) -> PipelineKeys:
        """The keys of partition `index` of this pipeline."""
        return replace(self, index=index)

    @property
    def all_partitions(self) -> list[PipelineKeys]:
        """The keys of every partition, 0 first (a reader asks each for its stream)."""
        return [self.partition(k) for k in range(self.partitions)]

    def for_source(self, source_id: str) -> PipelineKeys:
        """The keys of the partition `source_id` belongs to (`partition_of`)."""
        return self.partition(partition_of(source_id, self.partitions))

    def of_key(self, key: str) -> PipelineKeys:
        """The partition a key of this pipeline (any partition's) belongs to."""
        tag = key[key.find("{") + 1 : key.find("}")] if "{" in key and "}" in key else None
        if tag == self.pipeline:
            return self.partition(0)
        name, _, index = (tag or "").rpartition(":")
        if name == self.pipeline and index.isdigit() and 0 < int(index) < self.partitions:
            return self.partition(int(index))
        raise ValueError(f"{key!r} is not a key of pipeline {self.pipeline!r} ({self.partitions} partitions)")

    @property
    def results_streams(self) -> list[str]:
        """Every partition's results stream (what a reader of all results reads)."""
        return [k.results for k in self.all_partitions]

    @property
    def tag(self) -> str:
        """The hash tag of this partition's keys."""
        return self.pipeline if self.index == 0 else f"{self.pipeline}:{self.index}"

    @property
    def prefix(self) -> str:
        return f"fs:{{{self.tag}}}"

    @property
    def _home(self) -> str:
        """Prefix of the pipeline-wide keys: partition 0's tag, whatever this partition is."""
        return f"fs:{{{self.pipeline}}}"

    # --- per partition ----------------------------------------------------------------------

    @property
    def frames(self) -> str:
        return f"{self.prefix}:frames"

    def tensors(self, model: str) -> str:
        return f"{self.prefix}:tensors:{model}"

    def scores(self, model: str) -> str:
        return f"{self.prefix}:scores:{model}"

    def shadow(self, model: str) -> str:
        """The scores of a shadow version of `model` (`framestream models shadow`): read only to
        compare it with the active version, never by a sink, the SSE feeds or a results reader."""
        return f"{self.prefix}:shadow:{model}"

    @property
    def results(self) -> str:
        return f"{self.prefix}:results"

    @property
    def events(self) -> str:
        """Events: a label change each time a source's smoothed label changes, a source status
        change each time a source starts reconnecting, stalls, recovers or fails."""
        return f"{self.prefix}:events"

    @property
    def segments(self) -> str:
        """Segments: one entry per closed segment ("label L from seq a to b") of each (source,
        model) of this partition, written by postprocess with the results that closed it
        (`stream.core.segments`; the open ones are in the postprocess state hash)."""
        return f"{self.prefix}:segments"

    def sink_retry(self, sink: str) -> str:
        """Entries re-driven to sink `sink` alone (`framestream dead retry` of its dead letters)."""
        return f"{self.prefix}:sink:{sink}:retry"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def source_state(self) -> str:
        """Hash of source_id -> JSON progress {next_seq, position, done} written with each publish
        (the sources of this partition)."""
        return f"{self.prefix}:source_state"

    @property
    def counters(self) -> str:
        """Hash of counters (drops, published frames, dead letters per stage, ...) of this partition."""
        return f"{self.prefix}:counters"

    @property
    def sink_errors(self) -> str:
        """Hash of sink name -> JSON {error, time_ms}: the last failed send of each sink (partition
        0's key holds every sink's)."""
        return f"{self.prefix}:sink_errors"

    def thumbnail(self, source_id: str) -> str:
        """String key: the JPEG of a recent frame of `source_id` (ingest, with a TTL; use the keys
        of the source's partition, ``for_source(source_id).thumbnail(source_id)``)."""
        return f"{self.prefix}:thumb:{source_id}"

    def owner_lease(self, group: str) -> str:
        """String key (a lease) held by the replica of consumer group `group` that owns this
        partition (postprocess: one owner per partition and model)."""
        return f"{self.prefix}:owner:{group}"

    def group_state(self, group: str) -> str:
        """Hash of source_id -> JSON state of `group`'s work on this partition's sources
        (postprocess: reorder and smoothing), written with each commit by the partition's owner."""
        return f"{self.prefix}:state:{group}"

    # --- pipeline-wide ----------------------------------------------------------------------

    @property
    def sources(self) -> str:
        """Hash of source_id -> JSON source spec, for sources added while running."""
        return f"{self._home}:sources"

    @property
    def sink_registry(self) -> str:
        """Hash of sink name -> JSON sink settings, for sinks added through the API."""
        return f"{self._home}:sink_registry"

    def source_lease(self, source_id: str) -> str:
        """String key held (SET NX PX, renewed) by the ingest replica that plays `source_id`."""
        return f"{self._home}:lease:{source_id}"

    def members(self, group: str) -> str:
        """Sorted set of the live replicas of consumer group `group` (scored by expiry), that
        share its partitions."""
        return f"{self._home}:members:{group}"

    @property
    def stage_ready(self) -> str:
        """Hash of consumer name -> epoch ms at which that stage process was ready (model loaded)."""
        return f"{self._home}:stage_ready"

    @property
    def model_requests(self) -> str:
        """Hash of model name -> JSON ``{state, reason, time_ms}``: models an admin asked a running
        pipeline to serve as well (``POST /v1/models/{name}``), ``starting`` until the runner that
        watches it has them running, then ``serving`` (or ``failed``, with the reason)."""
        return f"{self._home}:model_requests"

    @property
    def model_runner(self) -> str:
        """String key with a TTL, renewed by the runner that watches `model_requests`: while it
        exists, a model asked for is started; without it nobody would start one."""
        return f"{self._home}:model_runner"

    @property
    def layout(self) -> str:
        """Hash recording the pipeline's layout (``partitions``), written when it is first created."""
        return f"{self._home}:layout"

    @staticmethod
    def group(stage: str, model: str | None = None) -> str:
        """Consumer-group name of a stage (one group per model for model-specific stages)."""
        return f"{stage}:{model}" if model else stage
