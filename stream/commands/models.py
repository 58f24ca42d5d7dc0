"""`framestream models list | fetch NAME | check NAME`."""

from __future__ import annotations

from pathlib import Path

import typer

from stream.errors import FramestreamError

__all__ = ["app"]

app = typer.Typer(help="List, fetch and check models.", no_args_is_help=True)


def _fmt(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:g}{suffix}"


@app.command("list")
def list_models(
    weights_dir: Path | None = typer.Option(None, "--weights-dir", envvar="FRAMESTREAM_WEIGHTS_DIR"),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="model cache (default: settings)"),
) -> None:
    """Show every model descriptor and whether its weights are available here."""
    from rich.console import Console
    from rich.table import Table

    from stream.settings import load_settings
    from stream.zoo import list_specs
    from stream.zoo.store import locate_model, resolve_weights_dir

    settings = load_settings()
    cache = cache_dir or settings.models.cache_dir
    weights = resolve_weights_dir(weights_dir or settings.models.weights_dir)
    table = Table(title="framestream models")
    for col in ("name", "framework", "input", "colour", "mean / scale", "classes", "output", "resize"):
        table.add_column(col)
    table.add_column("top-1 %", justify="right")
    table.add_column("weights")
    try:
        specs = list_specs()
    except FramestreamError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    for spec in specs:
        try:
            where = locate_model(spec, weights_dir=weights, cache_dir=cache, allow_synthetic=False).source
        except FramestreamError:
            where = "synthetic only" if spec.has_synthetic else "missing"
        norm = "in graph" if spec.normalization_in_graph else f"{_fmt(spec.mean[0])} / {_fmt(spec.scale[0])}"
        resize = spec.resize if spec.resize == "full" else f"{spec.resize_shorter} + crop"
        shape = "x".join(str(d) for d in spec.input_shape[1:])
        table.add_row(
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
        )
    Console().print(table)
