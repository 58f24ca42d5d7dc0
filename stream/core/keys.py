"""Every Redis key name framestream uses, in one place.

All keys of one pipeline share the hash tag ``{p}`` so a MULTI/EXEC that XADDs to one stream and
XACKs another stays on one slot of a Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PipelineKeys", "FIELD"]

FIELD = "d"
"""The single field every stream entry carries: the encoded message bytes."""


@dataclass(frozen=True)
class PipelineKeys:
    """Key names for the pipeline called ``pipeline`` (the hash tag)."""

    pipeline: str = "p"

    def __post_init__(self) -> None:
        if not self.pipeline or any(c in self.pipeline for c in "{}: "):
            raise ValueError(f"pipeline name must be non-empty without '{{}}: ', got {self.pipeline!r}")

    @property
    def prefix(self) -> str:
        return f"fs:{{{self.pipeline}}}"

    @property
    def frames(self) -> str:
        return f"{self.prefix}:frames"

    def tensors(self, model: str) -> str:
        return f"{self.prefix}:tensors:{model}"

    def scores(self, model: str) -> str:
        return f"{self.prefix}:scores:{model}"

    @property
    def results(self) -> str:
        return f"{self.prefix}:results"

    @property
    def events(self) -> str:
        """Label-change events (one entry each time a source's smoothed label changes)."""
        return f"{self.prefix}:events"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def sources(self) -> str:
        """Hash of source_id -> JSON source spec, for sources added while running."""
        return f"{self.prefix}:sources"

    @property
    def source_state(self) -> str:
        """Hash of source_id -> JSON progress {next_seq, position, done} written with each publish."""
        return f"{self.prefix}:source_state"

    def source_lease(self, source_id: str) -> str:
        """String key held (SET NX PX, renewed) by the ingest replica that plays `source_id`."""
        return f"{self.prefix}:lease:{source_id}"

    @property
    def stage_ready(self) -> str:
        """Hash of consumer name -> epoch ms at which that stage process was ready (model loaded)."""
        return f"{self.prefix}:stage_ready"

    @property
    def counters(self) -> str:
        """Hash of pipeline-wide counters (drops, ingested frames, ...)."""
        return f"{self.prefix}:counters"

    @staticmethod
    def group(stage: str, model: str | None = None) -> str:
        """Consumer-group name of a stage (one group per model for model-specific stages)."""
        return f"{stage}:{model}" if model else stage
