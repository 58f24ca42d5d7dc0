"""The systems `loadtest bench` measures, by id, with the names its tables show. Kept apart from
`loadtest.bench.run` so the CLI can list them without importing OpenVINO and OpenCV."""

from __future__ import annotations

__all__ = ["ALL_SYSTEMS", "SYSTEM_NAMES"]

SYSTEM_NAMES = {
    "naive": "naive loop",
    "best_single": "best single process",
    "framestream": "framestream (stage processes)",
    "framestream_ray": "framestream (Ray Serve app)",
    "ray_serve_batch": "plain Ray Serve @serve.batch",
    "benchmark_app": "benchmark_app (bare model)",
    "ideal": "sum-of-parts ideal",
    "limit": "limit: decode + bare model",
}
ALL_SYSTEMS = tuple(SYSTEM_NAMES)
