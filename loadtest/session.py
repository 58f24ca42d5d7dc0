"""One replay from the command line: attach to (or start) a pipeline, replay, print a summary."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from loadtest.progress import ProgressView
from loadtest.replayer import Clip, ReplayPlan, load_clip, run_replay
from stream.adapters.redis.client import connect
from stream.adapters.redis.partitions import recorded_keys

__all__ = ["print_summary", "replay_on", "replay_session"]


async def replay_on(
    url: str,
    clips: Sequence[Clip],
    plan: ReplayPlan,
    *,
    pipeline: str = "p",
    model: str | None = None,
    settle_s: float = 5.0,
    timeout_s: float = 120.0,
    slo: Mapping[str, float | None] | None = None,
    config: Mapping[str, Any] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """`run_replay` against the pipeline whose Redis is at `url`."""
    client = await connect(url)
    try:
        return await run_replay(
            client, await recorded_keys(client, pipeline), clips, plan, model=model, settle_s=settle_s,
            hard_timeout_s=timeout_s, slo=slo, config=config, progress=progress,
        )  # fmt: skip
    finally:
        await client.aclose()


def replay_session(
    files: Sequence[Path],
    plan: ReplayPlan,
    *,
    redis_url: str | None,
    pipeline: str = "p",
    model: str | None = None,
    weights_dir: Path | None = None,
    settle_s: float = 5.0,
    timeout_s: float = 120.0,
    slo: Mapping[str, float | None] | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Replay `files` per `plan` into the pipeline at `redis_url`, or into a private one
    (redis-server + stage processes for `model`) when `redis_url` is None."""
    clips = [load_clip(f) for f in files]
    mode = "attached" if redis_url else "embedded"
    config = {"mode": mode, "pipeline": pipeline}
    with ProgressView(console) as view:
        if redis_url:
            return asyncio.run(
                replay_on(redis_url, clips, plan, pipeline=pipeline, model=model, settle_s=settle_s,
                          timeout_s=timeout_s, slo=slo, config=config, progress=view)
            )  # fmt: skip
        return asyncio.run(
            _replay_embedded(clips, plan, pipeline=pipeline, model=model, weights_dir=weights_dir,
                             settle_s=settle_s, timeout_s=timeout_s, slo=slo, config=config, progress=view)
        )  # fmt: skip


async def _replay_embedded(
    clips: Sequence[Clip], plan: ReplayPlan, *, pipeline: str, model: str | None, weights_dir: Path | None,
    config: dict[str, Any], **kwargs: Any,
) -> dict[str, Any]:  # fmt: skip
    from loadtest.embedded import EmbeddedPipeline

    async with EmbeddedPipeline(model=model, weights_dir=weights_dir, pipeline=pipeline) as emb:
        config["model"] = emb.model
        return await replay_on(
            emb.url, clips, plan, pipeline=pipeline, model=emb.model, config=config, **kwargs
        )


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:,.1f}"


def print_summary(run: Mapping[str, Any], console: Console) -> None:
    """The end-of-run table: delivery, throughput, latency, accuracy, SLO verdict."""
    d, lat, thr = run["delivery"], run["latency"], run["throughput"]
    table = Table(title="loadtest replay", show_header=False, title_justify="left")
    table.add_row("frames sent / distinct results", f"{d['sent']} / {d['distinct']}")
    table.add_row("missing / lost (unaccounted)", f"{d['missing']} / {d['lost']}")
    table.add_row(
        "duplicates / dead-lettered / dropped", f"{d['duplicates']} / {d['dead_lettered']} / {d['dropped']}"
    )
    table.add_row("offered / result fps", f"{_ms(thr['offered_fps'])} / {_ms(thr['fps'])}")
    table.add_row(
        "latency p50 / p90 / p99 / p99.9 / max (ms)",
        " / ".join(_ms(lat.get(k)) for k in ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms")),
    )
    for stage, s in (run.get("stages") or {}).items():
        table.add_row(f"  {stage} mean / p99 (ms)", f"{_ms(s.get('mean_ms'))} / {_ms(s.get('p99_ms'))}")
    between = (run.get("stage_breakdown") or {}).get("between_stages") or {}
    if between.get("count"):
        table.add_row(
            "  between stages mean / p99 (ms)", f"{_ms(between['mean_ms'])} / {_ms(between['p99_ms'])}"
        )
    lag = (run.get("send") or {}).get("lag") or {}
    if lag.get("count"):
        table.add_row("send lag behind schedule p99 (ms)", _ms(lag.get("p99_ms")))
    if run["batch"]["mean"] is not None:
        table.add_row("mean batch size", f"{run['batch']['mean']:.2f}")
    acc = run.get("accuracy") or {}
    if acc.get("top1") is not None:
        table.add_row("top-1 accuracy", f"{acc['top1']:.2%} of {acc['labelled']} labelled")
    slo = run["slo"]
    verdict = "[green]PASS[/green]" if slo["passed"] else "[red]FAIL[/red]"
    table.add_row("SLO", verdict + ("" if slo["objectives"] else " (no objectives set)"))
    console.print(table)
    for failure in slo["failures"]:
        console.print(f"[red]SLO failed:[/red] {failure}", highlight=False)
