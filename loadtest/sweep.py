"""`loadtest sweep`: step the open-loop rate to find the highest one that holds a p99 SLO.

The rate is either the number of real-time sources (each at `source_fps`) or the frames/s of one
source. Rates go up geometrically until a run fails, then bisect (`schedule.RateSearch`). Between
runs the sweep waits for the pipeline to drain, so one overloaded step does not spill its
backlog into the next.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from loadtest.replayer import Clip, ReplayPlan, load_clip
from loadtest.schedule import Pace, RateSearch
from loadtest.session import replay_on
from stream.adapters.redis.client import connect
from stream.adapters.redis.entries import text
from stream.adapters.redis.partitions import recorded_keys
from stream.adapters.redis.streams import StreamTransport

__all__ = ["plot_sweep", "run_sweep", "sweep_on", "wait_idle"]


async def wait_idle(url: str, pipeline: str, *, timeout_s: float = 60.0) -> bool:
    """Wait until no consumer group of the pipeline's streams (every partition's) has anything
    left (lag or pending)."""
    client = await connect(url)
    keys = await recorded_keys(client, pipeline)
    transport = StreamTransport(client, keys, stage="loadtest")
    skip = {s for k in keys.all_partitions for s in (k.results, k.events, k.dead)}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            busy = False
            for k in keys.all_partitions:
                async for raw in client.scan_iter(match=f"{k.prefix}:*", _type="STREAM"):
                    stream = text(raw)
                    if stream not in skip:
                        busy = busy or any(st.backlog for st in await transport.all_group_stats(stream))
            if not busy:
                return True
            await asyncio.sleep(0.2)
        return False
    finally:
        await client.aclose()


def _step(rate: float, run: dict[str, Any], attempt: int) -> dict[str, Any]:
    return {
        "rate": rate,
        "attempt": attempt,
        "offered_fps": run["throughput"]["offered_fps"],
        "fps": run["throughput"]["fps"],
        "p50_ms": run["latency"]["p50_ms"],
        "p99_ms": run["latency"]["p99_ms"],
        "missing": run["delivery"]["missing"],
        "sent": run["delivery"]["sent"],
        "mean_batch": run["batch"]["mean"],
        "passed": bool(run["slo"]["passed"]),
        "failures": run["slo"]["failures"],
    }


def _print_step(console: Console, by: str, step: dict[str, Any]) -> None:
    verdict = "[green]pass[/green]" if step["passed"] else "[red]fail[/red]"
    p99 = "-" if step["p99_ms"] is None else f"{step['p99_ms']:.0f}"
    again = " (again)" if step["attempt"] else ""
    console.print(
        f"rate {step['rate']:g} {by}{again}: offered {step['offered_fps'] or 0:.0f} fps, "
        f"got {step['fps'] or 0:.0f} fps, p99 {p99} ms, missing {step['missing']}/{step['sent']} -> {verdict}"
    )


def _plan(by: str, rate: float, *, source_fps: float, duration_s: float) -> ReplayPlan:
    if by == "sources":
        return ReplayPlan(sources=int(rate), pace=Pace("fps", fps=source_fps), duration_s=duration_s)
    return ReplayPlan(sources=1, pace=Pace("fps", fps=rate), duration_s=duration_s)


async def sweep_on(
    url: str,
    clips: Sequence[Clip],
    *,
    p99_ms: float,
    by: str = "sources",
    source_fps: float = 30.0,
    start: float = 1.0,
    factor: float = 2.0,
    max_steps: int = 8,
    step_duration_s: float = 8.0,
    max_loss: float = 0.0,
    pipeline: str = "p",
    model: str | None = None,
    console: Console | None = None,
    warmup_s: float = 2.0,
    confirm: int = 1,
) -> dict[str, Any]:
    """Run the search against the pipeline at `url`; returns every step and the best rate."""
    search = RateSearch(start=start, factor=factor, max_steps=max_steps, integer=by == "sources",
                        resolution=0.1 if by == "fps" else 0.0)  # fmt: skip
    steps: list[dict[str, Any]] = []
    if warmup_s > 0:  # first inferences of a cold pipeline are slow: keep them out of the first step
        warm = _plan(by, search.next_rate() or start, source_fps=source_fps, duration_s=warmup_s)
        await replay_on(url, clips, warm, pipeline=pipeline, model=model, settle_s=3.0, timeout_s=30.0)
    while (rate := search.next_rate()) is not None:
        for attempt in range(1 + confirm):
            await wait_idle(url, pipeline, timeout_s=max(30.0, 4 * step_duration_s))
            plan = _plan(by, rate, source_fps=source_fps, duration_s=step_duration_s)
            run = await replay_on(
                url, clips, plan, pipeline=pipeline, model=model, settle_s=3.0,
                timeout_s=max(10.0, 2 * step_duration_s), slo={"max_p99_ms": p99_ms, "max_loss": max_loss},
            )  # fmt: skip
            step = _step(rate, run, attempt)
            steps.append(step)
            if console is not None:
                _print_step(console, by, step)
            if step["passed"]:
                break
        # with `confirm`, a rate fails only when a second run fails too (one stall is not capacity)
        search.record(rate, bool(step["passed"]))
    best = search.passed
    best_step = next((s for s in steps if s["rate"] == best and s["passed"]), None)
    return {
        "by": by,
        "source_fps": source_fps if by == "sources" else None,
        "slo_p99_ms": p99_ms,
        "max_loss": max_loss,
        "step_duration_s": step_duration_s,
        "model": model,
        "steps": steps,
        "best": best,
        "best_offered_fps": best_step["offered_fps"] if best_step else None,
        "first_failing": search.failed,
    }


def run_sweep(
    files: Sequence[Path],
    *,
    p99_ms: float,
    by: str = "sources",
    source_fps: float = 30.0,
    start: float = 1.0,
    factor: float = 2.0,
    max_steps: int = 8,
    step_duration_s: float = 8.0,
    max_loss: float = 0.0,
    confirm: int = 1,
    redis_url: str | None = None,
    pipeline: str = "p",
    model: str | None = None,
    weights_dir: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """`sweep_on` against `redis_url`, or a private pipeline for `model` when it is None."""
    clips = [load_clip(f) for f in files]
    kwargs: dict[str, Any] = dict(
        p99_ms=p99_ms, by=by, source_fps=source_fps, start=start, factor=factor, max_steps=max_steps,
        step_duration_s=step_duration_s, max_loss=max_loss, pipeline=pipeline, console=console,
        confirm=confirm,
    )  # fmt: skip
    if redis_url:
        return asyncio.run(sweep_on(redis_url, clips, model=model, **kwargs))
    return asyncio.run(_sweep_embedded(clips, model=model, weights_dir=weights_dir, **kwargs))


async def _sweep_embedded(
    clips: Sequence[Clip], *, model: str | None, weights_dir: Path | None, **kwargs: Any
) -> dict[str, Any]:
    from loadtest.embedded import EmbeddedPipeline

    async with EmbeddedPipeline(model=model, weights_dir=weights_dir, pipeline=kwargs["pipeline"]) as emb:
        return await sweep_on(emb.url, clips, model=emb.model, **kwargs)


def plot_sweep(result: dict[str, Any]) -> bytes:
    """PNG of p50/p99 latency against offered load, with the SLO line and pass/fail marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deciding: dict[float, dict[str, Any]] = {}
    for s in result["steps"]:  # the last attempt at a rate is the one that decided it
        if s["offered_fps"]:
            deciding[s["rate"]] = s
    steps = sorted(deciding.values(), key=lambda s: s["offered_fps"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    retried = [s for s in result["steps"] if s["offered_fps"] and s not in steps and s["p99_ms"]]
    if retried:
        ax.scatter([s["offered_fps"] for s in retried], [s["p99_ms"] for s in retried], color="grey",
                   s=12, label="p99, earlier attempt")  # fmt: skip
    x = [s["offered_fps"] for s in steps]
    ax.plot(x, [s["p50_ms"] for s in steps], marker="o", label="p50")
    ax.plot(x, [s["p99_ms"] for s in steps], marker="o", label="p99")
    for s in steps:
        if s["p99_ms"] is not None:
            color = "green" if s["passed"] else "red"
            where = (s["offered_fps"], s["p99_ms"])
            ax.annotate("pass" if s["passed"] else "fail", where, fontsize=7, color=color,
                        textcoords="offset points", xytext=(3, 3))  # fmt: skip
    ax.axhline(
        result["slo_p99_ms"], color="red", ls="--", lw=0.8, label=f"SLO p99 {result['slo_p99_ms']:g} ms"
    )
    ax.set(xlabel="offered load (frames/s)", ylabel="end-to-end latency (ms)",
           title=f"Latency vs offered load ({result.get('model') or 'pipeline'})")  # fmt: skip
    if any(s["p99_ms"] and s["p99_ms"] > 20 * max(1.0, min(v["p50_ms"] or 1 for v in steps)) for s in steps):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
