"""`framestream models list | add NAME FILE | fetch NAME | check NAME | activate NAME VERSION |
rollback NAME | shadow NAME VERSION | promote NAME`."""

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

app = typer.Typer(help="List, add, fetch and check models.", no_args_is_help=True)


def _fmt(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:g}{suffix}"


_LIST_COLUMNS = (
    Column("name", key=True),
    Column("serves", justify="right"),
    Column("versions"),
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


def _resize(spec: ModelSpec) -> str:
    if spec.resize == "center-crop":
        return f"{spec.resize_shorter} + crop"
    return f"letterbox (pad {spec.pad})" if spec.resize == "letterbox" else spec.resize


def _row(spec: ModelSpec, versions: list[int], where: str) -> list[str]:
    norm = "in graph" if spec.normalization_in_graph else f"{_fmt(spec.mean[0])} / {_fmt(spec.scale[0])}"
    shape = "x".join(str(d) for d in spec.input_shape[1:])
    return [
        spec.name,
        str(spec.version),
        ", ".join(map(str, versions)),
        spec.framework,
        f"{shape} {spec.layout}",
        spec.color,
        norm,
        str(spec.labels_count),
        spec.output_kind,
        _resize(spec),
        _fmt(spec.top1),
        where,
    ]


def _record(spec: ModelSpec, versions: list[int], where: str) -> dict[str, Any]:
    return {
        "name": spec.name,
        "version": spec.version,
        "versions": versions,
        "framework": spec.framework,
        "input_name": spec.input_name,
        "input_shape": list(spec.input_shape),
        "layout": spec.layout,
        "color": spec.color,
        "mean": list(spec.mean),
        "scale": list(spec.scale),
        "normalization_in_graph": spec.normalization_in_graph,
        "output_name": spec.output_name,
        "classes": spec.labels_count,
        "background": spec.background,
        "output_kind": spec.output_kind,
        "threshold": spec.threshold if spec.multi_label else None,
        "resize": spec.resize,
        "resize_shorter": spec.resize_shorter,
        "pad": spec.pad if spec.resize == "letterbox" else None,
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
    """Show every model (the seeds and the repository's own), which version serves, and whether
    its weights are available here."""
    from stream.settings import load_settings
    from stream.zoo.repository import ModelRepository

    settings = load_settings()
    cache = cache_dir or settings.models.cache_dir
    weights = weights_dir or settings.models.weights_dir
    try:
        repository = ModelRepository(settings.models.repository)
        specs = repository.specs()
        found = [(spec, repository.versions(spec.name), _weights(spec, weights, cache)) for spec in specs]
    except FramestreamError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    if as_json:
        typer.echo(json.dumps([_record(*row) for row in found], indent=2))
        return
    print_table(_LIST_COLUMNS, [_row(*row) for row in found], title="framestream models")


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

    settings = load_settings()
    cache = cache_dir or settings.models.cache_dir
    tasks: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()
    ) as bar:

        def progress(file_name: str, done: int, total: int | None) -> None:
            if file_name not in tasks:
                tasks[file_name] = bar.add_task(file_name, total=total)
            bar.update(tasks[file_name], completed=done, total=total)

        try:
            xml = fetch_model(
                load_spec(name, settings.models.repository),
                cache,
                force=force,
                progress=progress,
                timeout_s=timeout_s,
            )
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
            repository=settings.models.repository,
        )
    except FramestreamError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    if not ok:
        raise typer.Exit(1)


def _values(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError as e:
        raise typer.BadParameter(
            f"--{what} takes numbers (one, or three separated by commas), got {text!r}"
        ) from e


@app.command("add")
def add(
    name: str = typer.Argument(
        ..., help="the name to serve it under (a new name, or the next version of one)"
    ),
    file: Path = typer.Argument(
        ...,
        help="the model: OpenVINO IR .xml (with its .bin), .onnx, .tflite, .pdmodel, or a SavedModel folder",
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="class names, one per line, as many as classes"
    ),
    mean: str | None = typer.Option(
        None, "--mean", help="per-channel mean on 0..255 pixels: one value or R,G,B"
    ),
    scale: str | None = typer.Option(
        None, "--scale", help="per-channel divisor after the mean: one value or R,G,B"
    ),
    layout: str | None = typer.Option(
        None, "--layout", help="NCHW or NHWC (default: where the 3 channels are)"
    ),
    color: str | None = typer.Option(None, "--color", help="RGB or BGR (default: the model's, else RGB)"),
    resize: str | None = typer.Option(
        None, "--resize", help="stretch, center-crop or letterbox (default: the model's, else stretch)"
    ),
    crop_fraction: float | None = typer.Option(
        None, "--crop-fraction", help="center-crop: part kept (0.875)"
    ),
    pad: int | None = typer.Option(None, "--pad", help="letterbox: the pixel value of the bars (0)"),
    multi_label: bool = typer.Option(False, "--multi-label", help="independent sigmoid scores per class"),
    threshold: float | None = typer.Option(None, "--threshold", help="multi-label: labels above it (0.5)"),
) -> None:
    """Add your own classifier to the model repository (the next version if NAME exists) and print
    what was decided about it."""
    from stream.commands.model_add import add_model
    from stream.settings import load_settings
    from stream.zoo.inspect import Options, labels_from_text
    from stream.zoo.repository import ModelRepository

    settings = load_settings()
    try:
        given = None
        if labels is not None:
            try:
                given = labels_from_text(labels.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as e:
                raise FramestreamError(f"cannot read the label file {labels}: {e}") from e
        opts = Options(
            labels=given,
            labels_from=str(labels) if labels else "",
            mean=_values(mean, "mean"),
            scale=_values(scale, "scale"),
            layout=layout.upper() if layout else None,
            color=color.upper() if color else None,
            resize=resize,
            crop_fraction=crop_fraction,
            pad=pad,
            multi_label=multi_label,
            threshold=threshold,
        )
        if opts.layout not in (None, "NCHW", "NHWC"):
            raise FramestreamError(f"--layout must be NCHW or NHWC, got {layout!r}")
        added = add_model(ModelRepository(settings.models.repository), name, file, opts)
    except FramestreamError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    spec = added.spec
    typer.echo(f"{name} version {spec.version}: {spec.path.parent if spec.path else ''}")
    for what, why in added.decision.why.items():
        typer.echo(f"  {what:<13} {why}")
    typer.echo(
        f"  {'classes':<13} {spec.labels_count}: {' | '.join(added.decision.labels[:5])}"
        + (", ..." if spec.labels_count > 5 else "")
    )
    typer.echo(f"  {'serving':<13} version {spec.version}")


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
