"""Turn a replay run's JSON into a report: JSON summary, per-second CSV, self-contained HTML.

The HTML page has no external references: every plot is a PNG (matplotlib, Agg backend)
embedded as base64, so it can be attached to a CI run and opened anywhere.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from stream.core.latency import LatencyHistogram  # noqa: E402

__all__ = [
    "PLOTS",
    "SERIES_COLUMNS",
    "load_run",
    "render_html",
    "render_plots",
    "write_report",
    "write_series_csv",
]

SERIES_COLUMNS = ("second", "offered", "results", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_batch")
PLOTS = ("throughput", "latency_over_time", "latency_cdf", "batch_sizes", "stage_breakdown")


def load_run(path: str | Path) -> dict[str, Any]:
    """A run JSON written by `loadtest replay --json`."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "delivery" not in data or "series" not in data:
        raise ValueError(f"{path} is not a loadtest replay result (no 'delivery'/'series')")
    return data


def write_series_csv(series: Sequence[Mapping[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SERIES_COLUMNS)
        for row in series:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in SERIES_COLUMNS])
    return path


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def _plot_throughput(run: Mapping[str, Any]) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    series = run["series"]
    seconds = [r["second"] for r in series]
    ax.plot(seconds, [r["offered"] for r in series], label="offered (frames due)", drawstyle="steps-post")
    ax.plot(seconds, [r["results"] for r in series], label="results", drawstyle="steps-post")
    ax.set(xlabel="time since start (s)", ylabel="frames / s", title="Throughput over time")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def _plot_latency_over_time(run: Mapping[str, Any]) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    series = [r for r in run["series"] if r.get("p50_ms") is not None]
    if series:
        seconds = [r["second"] for r in series]
        for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
            ax.plot(seconds, [r[key] for r in series], marker=".", label=key.removesuffix("_ms"))
        ax.legend(loc="best")
    else:
        _empty(ax, "no results")
    ax.set(xlabel="time since start (s)", ylabel="end-to-end latency (ms)", title="Latency over time")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _plot_cdf(run: Mapping[str, Any]) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    hist = LatencyHistogram.from_dict(run["latency_hist"]) if run.get("latency_hist") else None
    if hist is not None and hist.count:
        values, fractions = hist.cdf()
        ax.step([values[0], *values], [0.0, *fractions], where="post")
        for q in (50, 99):
            v = hist.percentile(q)
            if v is None:
                continue
            ax.axvline(v, color="grey", ls="--", lw=0.8)
            ax.text(v, 0.05 if q == 50 else 0.15, f" p{q} {v:.0f} ms", color="grey", fontsize=8)
        if values[-1] > 10 * max(values[0], 1e-3):
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    else:
        _empty(ax, "no results")
    ax.set(xlabel="end-to-end latency (ms)", ylabel="fraction of frames", title="Latency CDF")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _plot_batches(run: Mapping[str, Any]) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    counts = {int(k): int(v) for k, v in (run.get("batch", {}).get("histogram") or {}).items()}
    if counts:
        sizes = sorted(counts)
        ax.bar(sizes, [counts[s] for s in sizes], width=0.8)
        ax.set_xticks(sizes if len(sizes) <= 20 else sizes[:: max(1, len(sizes) // 20)])
    else:
        _empty(ax, "no batch sizes reported")
    mean = run.get("batch", {}).get("mean")
    title = "Inference batch sizes" + (f" (mean {mean:.2f})" if mean else "")
    ax.set(xlabel="batch size", ylabel="frames", title=title)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def _plot_stages(run: Mapping[str, Any]) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    stages: Mapping[str, Mapping[str, Any]] = run.get("stages") or {}
    names = [s for s, v in stages.items() if v.get("mean_ms") is not None]
    if names:
        means = [stages[s]["mean_ms"] for s in names]
        p99s = [stages[s].get("p99_ms") or 0.0 for s in names]
        left = 0.0
        for name, mean in zip(names, means, strict=True):
            ax.barh(["stages (mean)"], [mean], left=left, label=name)
            left += mean
        between = (run.get("stage_breakdown") or {}).get("between_stages") or {}
        if between.get("mean_ms") is not None and between["mean_ms"] > 0:
            ax.barh(
                ["stages (mean)"], [between["mean_ms"]], left=left, label="between stages", color="lightgrey"
            )
        e2e = run.get("latency", {}).get("mean_ms")
        if e2e is not None:
            ax.barh(["end to end (mean)"], [e2e], color="black", alpha=0.6)
        ax.barh([f"{s} p99" for s in names], p99s, color="grey", alpha=0.5)
        ax.legend(loc="lower right", fontsize=8)
    else:
        _empty(ax, "no per-stage times reported")
    ax.set(xlabel="ms", title="Per-stage latency breakdown (mean, stacked; p99 per stage)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def render_plots(run: Mapping[str, Any]) -> dict[str, str]:
    """Every plot of the report as base64 PNG, keyed by `PLOTS` names."""
    makers = {
        "throughput": _plot_throughput,
        "latency_over_time": _plot_latency_over_time,
        "latency_cdf": _plot_cdf,
        "batch_sizes": _plot_batches,
        "stage_breakdown": _plot_stages,
    }
    return {name: _png(makers[name](run)) for name in PLOTS}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return html.escape(str(value))


def _table(rows: Mapping[str, Any]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in rows.items())
    return f"<table>{body}</table>"


def render_html(run: Mapping[str, Any], plots: Mapping[str, str] | None = None) -> str:
    """A self-contained HTML page (no external resources) for one run."""
    plots = plots if plots is not None else render_plots(run)
    slo = run.get("slo") or {}
    verdict = "PASS" if slo.get("passed", True) else "FAIL"
    failures = "".join(f"<li>{html.escape(f)}</li>" for f in slo.get("failures", []))
    summary = {
        "sent": run["delivery"].get("sent"),
        "distinct results": run["delivery"].get("distinct"),
        "missing (no result)": run["delivery"].get("missing"),
        "lost (unaccounted)": run["delivery"].get("lost"),
        "duplicates": run["delivery"].get("duplicates"),
        "dead-lettered": run["delivery"].get("dead_lettered"),
        "dropped by policy": run["delivery"].get("dropped"),
        "offered fps": run.get("throughput", {}).get("offered_fps"),
        "result fps": run.get("throughput", {}).get("fps"),
        "top-1 accuracy": (run.get("accuracy") or {}).get("top1"),
        "mean batch size": (run.get("batch") or {}).get("mean"),
    }
    latency = {k: v for k, v in (run.get("latency") or {}).items()}
    config = run.get("config") or {}
    plain_config = {k: v for k, v in config.items() if not isinstance(v, dict | list)}
    images = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{data}"/></figure>'
        for name, data in plots.items()
    )
    title = f"framestream load test: {html.escape(str(config.get('name', 'replay')))}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0 2em 1em 0; display: inline-table; vertical-align: top; }}
th, td {{ border: 1px solid #ccc; padding: 2px 8px; text-align: left; font-size: 14px; }}
.pass {{ color: #0a0; }} .fail {{ color: #c00; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>{title}</h1>
<p>Verdict: <b class="{verdict.lower()}">{verdict}</b></p><ul>{failures}</ul>
{_table(summary)}{_table(latency)}{_table(plain_config)}
{images}
</body></html>
"""


def write_report(run: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``summary.json``, ``series.csv`` and ``report.html`` into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "summary.json", "csv": out / "series.csv", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(run, indent=2, default=str))
    write_series_csv(run["series"], paths["csv"])
    paths["html"].write_text(render_html(run))
    return paths
