"""The Ray rows of `loadtest bench`: framestream's Serve application, and a plain Serve
deployment with ``@serve.batch`` fed over HTTP by a client that decodes the same clip."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.bench.baselines import Measured, decode_frames, measured_from_results, percentiles
from stream.adapters.redis.server import RedisServer, find_free_port

__all__ = ["framestream_ray", "plain_serve_batch"]


def _all_results(url: str, pipeline: str) -> list[Any]:
    """Every result on the results stream (any source)."""
    from loadtest.collector import Collector
    from stream.adapters.redis.client import connect
    from stream.core.codec import decode_message
    from stream.core.keys import FIELD, PipelineKeys

    async def read() -> list[Any]:
        client: Any = await connect(url)
        try:
            keys = PipelineKeys(pipeline)
            entries = await client.xrange(keys.results)
            sources = {str(decode_message(f[FIELD.encode()]).meta.get("source")) for _, f in entries}
            collector = Collector(client, keys, sources, "0-0", block_ms=10)
            while await collector.poll():
                pass
            return collector.rows
        finally:
            await client.aclose()

    return asyncio.run(read())


def framestream_ray(clip: Path, model: str, *, frames: int, weights_dir: Path | None) -> Measured:
    """`framestream run` (Ray runner) on the clip against a redis-server we own, then its results."""
    from rich.console import Console

    from deployments.local.runner import ray_stages
    from loadtest.embedded import embedded_settings
    from stream.runners import RunRequest
    from stream.runners.play import run_pipeline

    settings = embedded_settings(pipeline="p", weights_dir=weights_dir)
    with RedisServer() as server:
        request = RunRequest(sources=[str(clip)], models=[model], redis=server.url)
        run_pipeline(settings, request, ray_stages(), Console(quiet=True))
        rows = _all_results(server.url, settings.streams.pipeline)
    return measured_from_results(
        "framestream (Ray Serve app)", rows, frames, "Serve application, local Ray, ingest decodes"
    )


def plain_serve_batch(
    clip: Path, model: str, *, frames: int, weights_dir: Path | None, concurrency: int = 16
) -> Measured:
    """Decode + JPEG-encode the clip in a thread, POST frames with `concurrency` in flight."""
    import httpx
    import ray
    from ray import serve

    from loadtest.bench.serve_plain import PlainClassifier
    from stream.adapters.media.jpeg import encode_jpeg

    logging.getLogger("ray").setLevel(logging.WARNING)
    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)  # fmt: skip
    try:
        port = find_free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = PlainClassifier.bind(model, str(weights_dir) if weights_dir else None)  # type: ignore[attr-defined]
        serve.run(app, name="plain", route_prefix="/classify")
        url = f"http://127.0.0.1:{port}/classify"
        jpegs: queue.Queue[bytes | None] = queue.Queue(maxsize=4 * concurrency)

        def produce() -> None:
            try:
                for rgb in decode_frames(clip, frames):
                    jpegs.put(encode_jpeg(rgb, 90))
            finally:
                for _ in range(concurrency):
                    jpegs.put(None)

        latencies: list[float] = []
        batches: list[int] = []

        async def worker(client: httpx.AsyncClient) -> None:
            while (body := await asyncio.to_thread(jpegs.get)) is not None:
                t0 = time.perf_counter()
                reply = await client.post(url, content=body, headers={"content-type": "image/jpeg"})
                reply.raise_for_status()
                latencies.append((time.perf_counter() - t0) * 1000.0)
                batches.append(int(reply.json()["batch_size"]))

        async def go() -> float:
            async with httpx.AsyncClient(timeout=60) as client:
                warm = np.zeros((240, 320, 3), np.uint8)
                (await client.post(url, content=encode_jpeg(warm))).raise_for_status()
                producer = threading.Thread(target=produce, daemon=True)
                t0 = time.perf_counter()
                producer.start()
                await asyncio.gather(*(worker(client) for _ in range(concurrency)))
                return time.perf_counter() - t0

        elapsed = asyncio.run(go())
    finally:
        serve.shutdown()
        ray.shutdown()
    p50_ms, p99_ms = percentiles(latencies)
    mean_batch = len(batches) / sum(1.0 / b for b in batches) if batches else None
    return Measured(
        "plain Ray Serve @serve.batch",
        len(latencies) / elapsed,
        p50_ms,
        p99_ms,
        len(latencies),
        f"HTTP JPEG POSTs, {concurrency} in flight, client decodes+encodes the clip",
        {"mean_batch": mean_batch},
    )
