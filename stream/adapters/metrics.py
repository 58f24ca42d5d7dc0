"""Pipeline metrics: `ray.util.metrics` inside Ray (exported on Ray's Prometheus endpoint),
an in-process tally otherwise (stage processes without Ray, tests).

Names are in base units (docs/deploy.md lists them); the Grafana dashboard in k8s/ only queries
these (Ray's exporter adds the ``ray_`` prefix).
"""

from __future__ import annotations

import sys
import threading
from collections import defaultdict
from typing import Any

__all__ = ["METRIC_NAMES", "Metrics", "metrics"]

METRIC_NAMES = {
    "frames": "framestream_frames_total",
    "stage_seconds": "framestream_stage_seconds",
    "batch_size": "framestream_batch_size",
    "stream_lag": "framestream_stream_lag",
    "dead_letters": "framestream_dead_letters_total",
    "dropped": "framestream_dropped_frames_total",
    "replicas": "framestream_replicas",
    "e2e_latency": "framestream_e2e_latency_seconds",
    "replica_shortfalls": "framestream_replica_ack_shortfalls_total",
    "source_frames": "framestream_source_frames_total",
    "source_dropped": "framestream_source_dropped_total",
    "source_reconnects": "framestream_source_reconnects_total",
    "source_last_frame_age": "framestream_source_last_frame_age_seconds",
    "source_up": "framestream_source_up",
    "sink_delivered": "framestream_sink_delivered_total",
    "sink_retries": "framestream_sink_retries_total",
    "sink_dead_letters": "framestream_sink_dead_letters_total",
    "sink_backlog": "framestream_sink_backlog",
    "sink_last_error": "framestream_sink_last_error_timestamp_seconds",
}
_SECONDS_BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
_Key = tuple[str, tuple[tuple[str, str], ...]]
"""A metric's key and its sorted tags."""
_E2E_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0]
"""Capture to result: a few ms (an idle pipeline) to tens of seconds (a backlog, queueing)."""
_BATCH_BOUNDARIES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]


class Metrics:
    """Record pipeline metrics; every method is cheap and never raises."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[_Key, float] = defaultdict(float)
        self.gauges: dict[_Key, float] = {}
        self.observations: dict[_Key, list[float]] = defaultdict(list)
        """The latest observations per histogram and tag set (bounded: older ones are let go)."""
        self.tallies: dict[_Key, list[float]] = defaultdict(lambda: [0, 0.0])
        """[count, sum] of every observation per histogram and tag set, as Prometheus keeps them."""
        self._ray: dict[str, Any] | None = None

    def _ray_metrics(self) -> dict[str, Any] | None:
        if self._ray is None:
            # Ray metrics only where Ray already runs (a Serve replica imported it long before):
            # a plain stage process must not pay for importing Ray (~1.5 s of CPU) on its first frame
            ray = sys.modules.get("ray")
            if ray is None or not ray.is_initialized():
                return None
            from ray.util import metrics as rm

            self._ray = {
                "frames": rm.Counter(
                    METRIC_NAMES["frames"].removesuffix("_total"),
                    "Frames handled per stage and outcome",
                    ("stage", "outcome"),
                ),
                "stage_seconds": rm.Histogram(
                    METRIC_NAMES["stage_seconds"],
                    "Time a stage spends per frame",
                    _SECONDS_BOUNDARIES,
                    ("stage",),
                ),
                "batch_size": rm.Histogram(
                    METRIC_NAMES["batch_size"], "Frames per inference batch", _BATCH_BOUNDARIES, ("model",)
                ),
                "stream_lag": rm.Gauge(
                    METRIC_NAMES["stream_lag"], "Entries not yet acked by a group", ("stream", "group")
                ),
                "dead_letters": rm.Counter(
                    METRIC_NAMES["dead_letters"].removesuffix("_total"), "Entries dead-lettered", ("stage",)
                ),
                "dropped": rm.Counter(
                    METRIC_NAMES["dropped"].removesuffix("_total"),
                    "Frames dropped by a live-source policy",
                    ("source", "reason"),
                ),
                "replicas": rm.Gauge(METRIC_NAMES["replicas"], "Running replicas per stage", ("stage",)),
                "e2e_latency": rm.Histogram(
                    METRIC_NAMES["e2e_latency"],
                    "Time from a frame's capture to its result (queueing included)",
                    _E2E_BOUNDARIES,
                    ("model",),
                ),
                "replica_shortfalls": rm.Counter(
                    METRIC_NAMES["replica_shortfalls"].removesuffix("_total"),
                    "Writes that fewer Redis replicas acknowledged than streams.replica_acks",
                    ("stage",),
                ),
                "source_frames": rm.Counter(
                    METRIC_NAMES["source_frames"].removesuffix("_total"),
                    "Frames a source published",
                    ("source",),
                ),
                "source_dropped": rm.Counter(
                    METRIC_NAMES["source_dropped"].removesuffix("_total"),
                    "Frames of a source dropped (any reason)",
                    ("source",),
                ),
                "source_reconnects": rm.Counter(
                    METRIC_NAMES["source_reconnects"].removesuffix("_total"),
                    "Attempts to reopen a live source's stream",
                    ("source",),
                ),
                "source_last_frame_age": rm.Gauge(
                    METRIC_NAMES["source_last_frame_age"], "Seconds since a source's last frame", ("source",)
                ),
                "source_up": rm.Gauge(
                    METRIC_NAMES["source_up"], "1 while a source is playing, else 0", ("source",)
                ),
                "sink_delivered": rm.Counter(
                    METRIC_NAMES["sink_delivered"].removesuffix("_total"),
                    "Items a sink's destination confirmed",
                    ("sink",),
                ),
                "sink_retries": rm.Counter(
                    METRIC_NAMES["sink_retries"].removesuffix("_total"),
                    "Sends of a batch that failed and were tried again",
                    ("sink",),
                ),
                "sink_dead_letters": rm.Counter(
                    METRIC_NAMES["sink_dead_letters"].removesuffix("_total"),
                    "Items a sink dead-lettered (failed: not delivered; backlog: dropped by on_full=drop)",
                    ("sink", "reason"),
                ),
                "sink_backlog": rm.Gauge(
                    METRIC_NAMES["sink_backlog"], "Entries waiting for a sink (not yet acked)", ("sink",)
                ),
                "sink_last_error": rm.Gauge(
                    METRIC_NAMES["sink_last_error"], "When a sink's last send failed (epoch s)", ("sink",)
                ),
            }
        return self._ray

    def _count(self, key: str, value: float, tags: dict[str, str]) -> None:
        with self._lock:
            self.counters[(key, tuple(sorted(tags.items())))] += value
        ray_metrics = self._ray_metrics()
        if ray_metrics is not None and value > 0:
            ray_metrics[key].inc(value, tags=tags)

    def _observe(self, key: str, value: float, tags: dict[str, str]) -> None:
        with self._lock:
            tagged = (key, tuple(sorted(tags.items())))
            tally = self.tallies[tagged]
            tally[0] += 1
            tally[1] += value
            obs = self.observations[tagged]
            obs.append(value)
            if len(obs) > 10_000:
                del obs[:5_000]
        ray_metrics = self._ray_metrics()
        if ray_metrics is not None:
            ray_metrics[key].observe(value, tags=tags)

    def _set(self, key: str, value: float, tags: dict[str, str]) -> None:
        with self._lock:
            self.gauges[(key, tuple(sorted(tags.items())))] = value
        ray_metrics = self._ray_metrics()
        if ray_metrics is not None:
            ray_metrics[key].set(value, tags=tags)

    def frames(self, stage: str, outcome: str, n: int = 1) -> None:
        """`outcome`: ok, dead, dropped, duplicate, ..."""
        self._count("frames", n, {"stage": stage, "outcome": outcome})

    def stage_seconds(self, stage: str, seconds: float) -> None:
        self._observe("stage_seconds", seconds, {"stage": stage})

    def batch_size(self, model: str, size: int) -> None:
        self._observe("batch_size", size, {"model": model})

    def stream_lag(self, stream: str, group: str, entries: int) -> None:
        self._set("stream_lag", entries, {"stream": stream, "group": group})

    def dead_letters(self, stage: str, n: int = 1) -> None:
        self._count("dead_letters", n, {"stage": stage})

    def dropped(self, source: str, reason: str, n: int = 1) -> None:
        self._count("dropped", n, {"source": source, "reason": reason})

    def replica_shortfalls(self, stage: str, n: int = 1) -> None:
        """Writes that returned with fewer Redis replicas holding them than streams.replica_acks."""
        self._count("replica_shortfalls", n, {"stage": stage})

    def replicas(self, stage: str, n: int) -> None:
        self._set("replicas", n, {"stage": stage})

    def e2e_latency(self, model: str, seconds: float) -> None:
        """Capture to result of one frame (wall clocks of two hosts: a negative skew counts as 0)."""
        self._observe("e2e_latency", max(0.0, seconds), {"model": model})

    def tally(self, key: str, **tags: str) -> tuple[int, float]:
        """(count, sum) of a histogram's observations over every tag set that includes `tags`."""
        with self._lock:
            found = [v for (k, t), v in self.tallies.items() if k == key and set(tags.items()) <= set(t)]
        return int(sum(v[0] for v in found)), float(sum(v[1] for v in found))

    def source_frames(self, source: str, n: int) -> None:
        self._count("source_frames", n, {"source": source})

    def source_dropped(self, source: str, n: int) -> None:
        self._count("source_dropped", n, {"source": source})

    def source_reconnects(self, source: str, n: int) -> None:
        self._count("source_reconnects", n, {"source": source})

    def source_last_frame_age(self, source: str, seconds: float) -> None:
        self._set("source_last_frame_age", seconds, {"source": source})

    def source_up(self, source: str, up: bool) -> None:
        self._set("source_up", 1.0 if up else 0.0, {"source": source})

    def sink_delivered(self, sink: str, n: int) -> None:
        self._count("sink_delivered", n, {"sink": sink})

    def sink_retries(self, sink: str, n: int = 1) -> None:
        self._count("sink_retries", n, {"sink": sink})

    def sink_dead_letters(self, sink: str, reason: str, n: int) -> None:
        """`reason`: failed (not delivered) or backlog (dropped by ``on_full: drop``)."""
        self._count("sink_dead_letters", n, {"sink": sink, "reason": reason})

    def sink_backlog(self, sink: str, entries: int) -> None:
        self._set("sink_backlog", entries, {"sink": sink})

    def sink_last_error(self, sink: str, epoch_s: float) -> None:
        self._set("sink_last_error", epoch_s, {"sink": sink})

    def gauge(self, key: str, **tags: str) -> float | None:
        """A gauge's last value for exactly `tags` (for summaries and tests)."""
        with self._lock:
            return self.gauges.get((key, tuple(sorted(tags.items()))))

    def total(self, key: str, **tags: str) -> float:
        """Sum of a counter over every tag set that includes `tags` (for summaries and tests)."""
        with self._lock:
            return sum(v for (k, t), v in self.counters.items() if k == key and set(tags.items()) <= set(t))


metrics = Metrics()
"""The process-wide instance stages record into."""
