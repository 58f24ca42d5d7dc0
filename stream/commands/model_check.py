"""`framestream models check NAME`: contract checks, params/FLOPs and throughput of one model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from stream.adapters.openvino.engine import Engine, compile_model, open_engine, read_model_file
from stream.commands.classify import synthetic_warning
from stream.tables import Column, print_table
from stream.zoo.contract import run_contract_checks, sample_images
from stream.zoo.flops import count_flops, count_params
from stream.zoo.graph import raw_model

__all__ = ["measure_throughput", "pump", "run_check"]


async def pump(engine: Engine, batch: np.ndarray, seconds: float) -> float:
    """Images/s of `batch` through `engine` for `seconds`, `engine.num_requests` batches in flight."""
    done = 0
    start = time.monotonic()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await engine.infer_async(batch)
            done += len(batch)

    await asyncio.gather(*(worker() for _ in range(engine.num_requests)))
    return done / (time.monotonic() - start)


def measure_throughput(engine: Engine, batch_size: int, seconds: float) -> float:
    """Images/s with `engine.num_requests` batches of `batch_size` in flight for `seconds`."""
    images = sample_images(engine.spec, min(batch_size, 8))
    batch = np.resize(images, (batch_size, *images.shape[1:])).astype(np.uint8)
    asyncio.run(pump(engine, batch, min(seconds, 0.3)))  # warm-up
    return asyncio.run(pump(engine, batch, seconds))


def _vs_card(measured: float, card: float | None, tolerance: float) -> str:
    if card is None:
        return "no card value"
    off = abs(measured - card) / card
    return (
        f"card {card:g} ({off:+.1%} off{'' if off <= tolerance else ', OUTSIDE ' + format(tolerance, '.0%')})"
    )


def run_check(
    name: str,
    *,
    weights_dir: Path | None,
    cache_dir: Path,
    seconds: float,
    allow_synthetic: bool,
    repository: Path | str | None = None,
) -> bool:
    """Print the report; True when every contract check passes."""
    console = Console()
    opts = {
        "weights_dir": weights_dir,
        "cache_dir": cache_dir,
        "allow_synthetic": allow_synthetic,
        "repository": repository,
    }
    # contract checks with float32 math on both sides; throughput at the device's default precision
    with open_engine(name, inference_precision="f32", **opts) as eng:  # type: ignore[arg-type]
        spec = eng.spec
        if eng.synthetic:
            console.print(f"[bold red]{synthetic_warning(name)}[/]")
        console.print(f"{name}: {eng.model_path} ({'synthetic' if eng.synthetic else 'real weights'})")
        raw = compile_model(raw_model(read_model_file(eng.model_path), spec), "LATENCY", 0, "f32")
        results = run_contract_checks(spec, eng.infer, raw, sample_images(spec, 4))
        model_path = eng.model_path
    print_table(
        (Column("check", key=True), Column("result"), Column("detail")),
        [(r.name, "ok" if r.ok else "FAIL", r.detail) for r in results],
        title=f"{name} contract",
        console=console,
    )

    model = read_model_file(model_path)
    params_m, gflops = count_params(model) / 1e6, count_flops(model)
    console.print(f"params: {params_m:.3f} M  ({_vs_card(params_m, spec.params_m, 0.01)})")
    console.print(f"FLOPs:  {gflops:.4f} G  ({_vs_card(gflops, spec.gflops, 0.05)})")
    console.print("        (2 x multiply-adds of conv/matmul layers at batch 1)")
    if seconds > 0:
        with open_engine(name, **opts) as fast:  # type: ignore[arg-type]
            for bs in (1, 16):
                ips = measure_throughput(fast, bs, seconds)
                console.print(
                    f"throughput batch {bs:>2}: {ips:,.0f} images/s ({fast.num_requests} in flight)"
                )
    return all(r.ok for r in results)
