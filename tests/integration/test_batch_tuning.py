"""infer's batch-size tuning on a real OpenVINO engine (the synthetic v1 stand-in: no ../shared needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stream.adapters.openvino.engine import open_engine
from stream.stages.infer.batch_tuning import tuned_batch_size


class _Counting:
    """A real engine that counts the batches run through it."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.batches = 0

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    async def infer_async(self, batch: np.ndarray) -> np.ndarray:
        self.batches += 1
        return await self._engine.infer_async(batch)


async def test_batch_size_is_measured_once_then_remembered(tmp_path: Path) -> None:
    engine = open_engine(
        "mobilenet-v1-0.25-128", weights_dir=tmp_path / "none", cache_dir=tmp_path / "cache",
        static_batch_sizes=(1, 2, 4),
    )  # fmt: skip
    counting = _Counting(engine)
    cache_file = tmp_path / "tuning.json"
    size = await tuned_batch_size(counting, [1, 2, 4], cache_file, inflight=2, frames_per_size=16)
    assert size in (1, 2, 4)
    measured = counting.batches
    assert measured >= 2 * 3 * 4  # two rounds over every size, at least 2 batches per slot
    saved = json.loads(cache_file.read_text())
    (entry,) = saved.values()
    assert entry["size"] == size and set(entry["rates"]) == {"1", "2", "4"}
    # the choice obeys the rule: the smallest size within 5% of the best measured rate
    best = max(entry["rates"].values())
    assert entry["rates"][str(size)] >= 0.95 * best
    assert all(entry["rates"][str(s)] < 0.95 * best for s in (1, 2, 4) if s < size)
    # a second start (another replica, a restart) reuses it without running the model
    again = await tuned_batch_size(counting, [1, 2, 4], cache_file, inflight=2, frames_per_size=16)
    assert again == size and counting.batches == measured
    # what was measured is decided by today's rule: a size saved under another rule is not reused
    entry.update(size=4, rates={"1": 100.0, "2": 199.0, "4": 200.0})
    cache_file.write_text(json.dumps(saved))
    assert await tuned_batch_size(counting, [1, 2, 4], cache_file, inflight=2, frames_per_size=16) == 2
    assert counting.batches == measured
    # a different ceiling is a different question: measured anew, both answers kept
    await tuned_batch_size(counting, [1, 2], cache_file, inflight=2, frames_per_size=16)
    assert counting.batches > measured and len(json.loads(cache_file.read_text())) == 2
    engine.close()


async def test_an_unwritable_cache_still_gives_a_batch_size(tmp_path: Path) -> None:
    engine = open_engine("mobilenet-v1-0.25-128", weights_dir=tmp_path / "none", cache_dir=tmp_path / "cache")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    size = await tuned_batch_size(engine, [1, 2], blocker / "tuning.json", inflight=1, frames_per_size=4)
    assert size in (1, 2)
    engine.close()
