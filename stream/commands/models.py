"""`framestream models list | fetch NAME | check NAME | activate NAME VERSION | rollback NAME |
shadow NAME VERSION | promote NAME`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from stream.errors import FramestreamError
from stream.tables import Column, print_table

if TYPE_CHECKING:
    from stream.zoo.descriptors import ModelSpec

__all__ = ["app"]

app = typer.Typer(help="List, fetch and check models.", no_args_is_help=True)


def _fmt(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:g}{suffix}"


_LIST_COLUMNS = (
    Column("name", key=True),
    Column("framework"),
    Column("input"),
    Column("colour"),
    Column("mean / scale"),
    Column("classes"),
    Column("output"),
    Column("resize"),
    Column("top-1 %", justify="right"),
    Column("weights"),
)


def _weights(spec: ModelSpec, weights: Path | None, cache: Path) -> str:
    from stream.zoo.store import locate_model

    try:
        return locate_model(spec, weights_dir=weights, cache_dir=cache, allow_synthetic=False).source
    except FramestreamError:
        return "synthetic only" if spec.has_synthetic else "missing"


def _row(spec: ModelSpec, where: str) -> list[str]:
    norm = "in graph" if spec.normalization_in_graph else f"{_fmt(spec.mean[0])} / {_fmt(spec.scale[0])}"
    resize = spec.resize if spec.resize == "full" else f"{spec.resize_shorter} + crop"
    shape = "x".join(str(d) for d in spec.input_shape[1:])
    return [
        spec.name,
        spec.framework,
        f"{shape} {spec.layout}",
        spec.color,
        norm,
        str(spec.classes),
        spec.output_kind,
        resize,
        _fmt(spec.top1),
        where,
    ]


def _record(spec: ModelSpec, where: str) -> dict[str, Any]:
    return {
        "name": spec.name,
        "framework": spec.framework,
        "input_name": spec.input_name,
        "input_shape": list(spec.input_shape),
        "layout": spec.layout,
        "color": spec.color,
        "mean": list(spec.mean),
        "scale": list(spec.scale),
        "normalization_in_graph": spec.normalization_in_graph,
        "output_name": spec.output_name,
        "classes": spec.classes,
        "output_kind": spec.output_kind,
        "resize": spec.resize,
        "resize_shorter": spec.resize_shorter,
        "top1": spec.top1,
        "top5": spec.top5,
        "weights": where,
    }


@app.command("list")
def list_models(
    weights_dir: Path | None = typer.Option(
        None, "--weights-dir", help="folder holding model files (default: settings, models.weights_dir)"
    ),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="model cache (default: settings)"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON list, one object per model"),
) -> None:
    """Show every model descriptor and whether its weights are available here."""
    from stream.settings import load_settings
    from stream.zoo import list_specs

    settings = load_settings()
    cache = cache_dir or settings.models.cache_dir
    weights = weights_dir or settings.models.weights_dir
    try:
        specs = list_specs()
    except FramestreamError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    found = [(spec, _weights(spec, weights, cache)) for spec in specs]
    if as_json:
        typer.echo(json.dumps([_record(spec, where) for spec, where in found], indent=2))
        return
    print_table(_LIST_COLUMNS, [_row(spec, where) for spec, where in found], title="framestream models")


@app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="model name (see `framestream models list`)"),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="model cache (default: settings)"),
    force: bool = typer.Option(False, "--force", help="fetch and convert again even if cached"),
    timeout_s: float = typer.Option(30.0, "--timeout-s", min=0.1, help="network timeout per read"),
) -> None:
    """Download the upstream files, verify size + sha256, unpack, convert to IR, cache."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

    from stream.settings import load_settings
    from stream.zoo import load_spec
    from stream.zoo.fetch import fetch_model

    cache = cache_dir or load_settings().models.cache_dir
    tasks: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()
    ) as bar:

        def progress(file_name: str, done: int, total: int | None) -> None:
            if file_name not in tasks:
                tasks[file_name] = bar.add_task(file_name, total=total)
            bar.update(tasks[file_name], completed=done, total=total)

        try:
            xml = fetch_model(load_spec(name), cache, force=force, progress=progress, timeout_s=timeout_s)
        except FramestreamError as e:
            bar.stop()
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
    typer.echo(f"{name}: OpenVINO IR cached at {xml}")


@app.command("check")
def check(
    name: str = typer.Argument(..., help="model name (see `framestream models list`)"),
    weights_dir: Path | None = typer.Option(
        None, "--weights-dir", help="folder holding model files (default: settings, models.weights_dir)"
    ),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="model cache (default: settings)"),
    seconds: float = typer.Option(2.0, "--seconds", min=0.0, help="throughput measurement per batch size"),
    synthetic: bool = typer.Option(True, "--synthetic/--no-synthetic"),
) -> None:
    """Load a model, run its contract checks, print params/FLOPs and throughput."""
    from stream.commands.model_check import run_check
    from stream.settings import load_settings

    settings = load_settings()
    try:
        ok = run_check(
            name,
            weights_dir=weights_dir or settings.models.weights_dir,
            cache_dir=cache_dir or settings.models.cache_dir,
            seconds=seconds,
            allow_synthetic=synthetic,
        )
    except FramestreamError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    if not ok:
        raise typer.Exit(1)


def _serving_line(name: str, serving: Any) -> str:
    shadow = f", shadow version {serving.shadow}" if serving.shadow is not None else ""
    return f"{name}: version {serving.active} serves{shadow} (Infer replicas follow within models.poll_s)"


def _change_serving(name: str, change: str, *args: Any) -> None:
    """Apply `ModelRepository.<change>(name, *args)` to the settings' repository and say what
    serves now; an unknown name or version is one line on stderr and exit code 1."""
    from stream.settings import load_settings
    from stream.zoo.repository import ModelRepository

    repository = ModelRepository(load_settings().models.repository)
    try:
        serving = getattr(repository, change)(name, *args)
    except FramestreamError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(_serving_line(name, serving))


@app.command("activate")
def activate(
    name: str = typer.Argument(..., help="model name in the repository"),
    version: int = typer.Argument(..., help="the version to serve"),
) -> None:
    """Serve VERSION of NAME: running Infer replicas load and warm it, then swap it in between two
    batches (the version serving now keeps serving until then)."""
    _change_serving(name, "activate", version)


@app.command("rollback")
def rollback(name: str = typer.Argument(..., help="model name in the repository")) -> None:
    """Serve again the version that served before the active one."""
    _change_serving(name, "rollback")


@app.command("shadow")
def shadow(
    name: str = typer.Argument(..., help="model name in the repository"),
    version: int | None = typer.Argument(None, help="the candidate version to run as a shadow"),
    stop: bool = typer.Option(False, "--stop", help="stop the shadow"),
) -> None:
    """Run VERSION beside the active version on the same frames; its scores go to the shadow
    stream only, to be compared (`GET /v1/models`), never to results."""
    if stop == (version is not None):
        typer.echo("error: give a VERSION to start a shadow, or --stop to stop it", err=True)
        raise typer.Exit(2)
    _change_serving(name, "set_shadow", None if stop else version)


@app.command("promote")
def promote(name: str = typer.Argument(..., help="model name in the repository")) -> None:
    """Make the shadow version the active one (it is loaded already: no gap in results)."""
    _change_serving(name, "promote")
