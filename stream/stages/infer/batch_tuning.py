"""infer's batch-size tuning: measure the engine at each padded batch size once, keep the smallest
size about as fast as the best (`stream.core.batching.choose_batch_size`), and remember the rates
per model file, batch ceiling and CPU count, so later starts (and new replicas) skip the measure.

`infer.max_batch_size` stays the ceiling; ``infer.batch_tuning: false`` uses it as it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from stream.core.batching import choose_batch_size

__all__ = ["measure_rates", "tuned_batch_size"]

log = logging.getLogger(__name__)


async def measure_rates(
    engine: Any, sizes: list[int], *, frames_per_size: int, inflight: int, rounds: int = 2
) -> dict[int, float]:
    """Frames/s of `engine` at each batch size, `inflight` batches at a time (as infer runs them)."""
    h, w = engine.spec.input_hw
    rates: dict[int, float] = {size: 0.0 for size in sizes}
    for _ in range(rounds):  # rounds alternate the sizes; other work on the machine only slows a
        for size in sizes:  # size down, so the best round of each is the fairest figure
            batches = max(2 * inflight, -(-frames_per_size // size))
            start = time.perf_counter()
            await _run(engine, np.zeros((size, h, w, 3), np.uint8), batches, asyncio.Semaphore(inflight))
            rates[size] = max(rates[size], batches * size / (time.perf_counter() - start))
    return rates


async def _run(engine: Any, batch: np.ndarray, times: int, slots: asyncio.Semaphore) -> None:
    async def one() -> None:
        async with slots:
            await engine.infer_async(batch)

    await asyncio.gather(*[one() for _ in range(times)])


def _key(engine: Any, ceiling: int) -> str:
    path = Path(engine.model_path)
    try:
        stamp = f"{path.stat().st_size}-{int(path.stat().st_mtime)}"
    except OSError:
        stamp = "?"
    requests, static = getattr(engine, "num_requests", "?"), getattr(engine, "static_batch_sizes", "?")
    engine_cfg = f"max{ceiling}|req{requests}|static{static}|cpus{os.cpu_count()}"
    return f"{engine.spec.name}|{path.name}|{stamp}|{engine_cfg}"


def _load(cache_file: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _known_rates(entry: Any, sizes: list[int]) -> dict[int, float] | None:
    """The rates saved for every size in `sizes`; None when the entry lacks one (or is no entry)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("rates"), dict):
        return None
    try:
        rates = {int(k): float(v) for k, v in entry["rates"].items()}
    except (TypeError, ValueError):
        return None
    return {s: rates[s] for s in sizes} if all(s in rates for s in sizes) else None


async def tuned_batch_size(
    engine: Any, sizes: list[int], cache_file: Path, *, inflight: int, frames_per_size: int = 48
) -> int:
    """The batch size infer should use: remembered in `cache_file`, else measured now and saved."""
    key = _key(engine, max(sizes))
    known = _known_rates(_load(cache_file).get(key), sizes)
    if known is not None:
        return choose_batch_size(known)  # the rule applied now, to what was measured then
    measured = await measure_rates(engine, sizes, frames_per_size=frames_per_size, inflight=inflight)
    rates = {k: round(v, 1) for k, v in measured.items()}  # as saved: a later start decides alike
    size = choose_batch_size(rates)
    log.info(
        "%s: batch size %d (frames/s by batch size: %s)",
        engine.spec.name,
        size,
        ", ".join(f"{k}: {v:.0f}" for k, v in rates.items()),
    )
    data = _load(cache_file)
    data[key] = {"size": size, "rates": {str(k): v for k, v in rates.items()}}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(cache_file)  # atomic: replicas starting together never read half a file
    except OSError as e:
        log.warning("cannot remember the batch size in %s: %s", cache_file, e)
    return size
