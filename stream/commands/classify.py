"""`framestream classify IMAGE... --model NAME`: top-K labels per image through the pipeline's engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import typer

from stream.errors import FramestreamError, SourceError

if TYPE_CHECKING:
    from stream.adapters.openvino.engine import Engine

__all__ = ["classify", "synthetic_warning"]

_MAX_BATCH = 64


def synthetic_warning(name: str) -> str:
    return (
        f"WARNING: {name} is running a SYNTHETIC stand-in with RANDOM weights (no real weights found).\n"
        "WARNING: its labels and probabilities MEAN NOTHING. Fetch real weights with "
        f"`framestream models fetch {name}` or pass --weights-dir."
    )


def classify(
    images: list[Path] = typer.Argument(..., help="image files (JPEG, PNG, BMP, ...)"),
    model: str | None = typer.Option(None, "--model", "-m", help="model name (default: settings)"),
    top: int = typer.Option(
        5, "--top", "-k", min=1, help="labels shown per image (at most the model's classes)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document instead of text"),
    weights_dir: Path | None = typer.Option(
        None, "--weights-dir", help="folder holding model files (default: settings, models.weights_dir)"
    ),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="model cache (default: settings)"),
    synthetic: bool = typer.Option(
        True, "--synthetic/--no-synthetic", help="fall back to a random-weight stand-in when no weights"
    ),
) -> None:
    """Classify images: the top-K labels and scores per image (a multi-label model: also every
    label above its threshold)."""
    from stream.adapters.openvino.engine import open_engine
    from stream.settings import load_settings

    settings = load_settings()
    name = model or settings.models.default
    try:
        engine = open_engine(
            name,
            weights_dir=weights_dir or settings.models.weights_dir,
            cache_dir=cache_dir or settings.models.cache_dir,
            allow_synthetic=synthetic,
            repository=settings.models.repository,
        )
    except FramestreamError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e

    with engine:
        if engine.synthetic:
            typer.secho(synthetic_warning(name), err=True, fg="red", bold=True)
        if engine.labels_source is None:
            typer.echo(
                "note: no labels file found (labels.txt of a repository version, imagenet_labels.txt "
                "next to the weights or in the cache); showing class_<i>",
                err=True,
            )
        results, failed = _classify_all(engine, images, top)
    if as_json:
        doc = {
            "model": name,
            "version": engine.spec.version,
            "synthetic": engine.synthetic,
            "results": results,
        }
        typer.echo(json.dumps(doc, indent=2))
    else:
        for res in results:
            if len(results) > 1:
                typer.echo(f"{res['image']}:")
            for hit in res["top"]:
                typer.echo(f"{hit['probability']:7.2%}  {hit['label']}")
            if "labels" in res:
                typer.echo(f"  above {engine.spec.threshold:g}: " + (", ".join(res["labels"]) or "(none)"))
    if failed:
        raise typer.Exit(1)


def _classify_all(engine: Engine, images: list[Path], top: int) -> tuple[list[dict[str, Any]], int]:
    """Top-`top` hits per readable image, and how many images could not be read."""
    from stream.adapters.media.image import fit_to_model, read_image
    from stream.core.scoring import above, top_k

    fitted: list[tuple[Path, np.ndarray]] = []
    failed = 0
    for path in images:
        try:
            fitted.append((path, fit_to_model(read_image(path), engine.spec)))
        except SourceError as e:
            typer.echo(f"error: {e}", err=True)
            failed += 1
    probs = [
        engine.infer(np.stack([img for _, img in fitted[i : i + _MAX_BATCH]]))
        for i in range(0, len(fitted), _MAX_BATCH)
    ]
    results: list[dict[str, Any]] = []
    if not probs:
        return results, failed
    row_all = np.concatenate(probs)
    idx, vals = top_k(row_all, top)
    for n, ((path, _), row_idx, row_val) in enumerate(zip(fitted, idx, vals, strict=True)):
        hits = [
            {"index": int(i), "label": engine.labels[int(i)], "probability": float(v)}
            for i, v in zip(row_idx, row_val, strict=True)
        ]
        result: dict[str, Any] = {"image": str(path), "top": hits}
        if engine.spec.multi_label:
            result["labels"] = [engine.labels[int(i)] for i in above(row_all[n], engine.spec.threshold)[0]]
        results.append(result)
    return results, failed
