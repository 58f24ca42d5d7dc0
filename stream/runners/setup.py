"""What every runner of `framestream run` does the same way before its stages start: the models
(real weights, or a synthetic stand-in with a loud notice), a private redis-server unless one is
given, and the demo clip when no source is.

A runner only chooses where the stages run (`stream.runners.play`).
"""

from __future__ import annotations

import signal
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from stream.adapters.redis.server import RedisServer
from stream.errors import ModelError
from stream.settings import Settings

__all__ = [
    "DEMO_FRAMES",
    "DEMO_SIZE",
    "FALLBACK_MODEL",
    "choose_model",
    "choose_models",
    "demo_clip",
    "private_redis",
]

FALLBACK_MODEL = "mobilenet-v2-pytorch"
"""Used when the default model has no weights here and no synthetic stand-in (same architecture)."""

DEMO_FRAMES = 300
DEMO_SIZE = (640, 480)


def choose_model(requested: str | None, settings: Settings) -> tuple[str, bool]:
    """(model name, synthetic?): real weights when found, else a synthetic stand-in (built now,
    so the stages find it in the cache). An explicitly requested model without either is an error."""
    from stream.zoo.repository import load_spec
    from stream.zoo.store import locate_model

    name = requested or settings.models.default
    spec = load_spec(name, settings.models.repository)
    weights = settings.models.weights_dir
    cache = settings.models.cache_dir
    try:
        locate_model(spec, weights_dir=weights, cache_dir=cache, allow_synthetic=False)
        return name, False
    except ModelError:
        pass
    if not spec.has_synthetic:
        if requested:
            raise ModelError(
                f"{name}: no weights in {weights or 'models.weights_dir (unset)'} or {cache}, and it has "
                "no synthetic stand-in; set FRAMESTREAM_MODELS__WEIGHTS_DIR or fetch it"
            )
        spec = load_spec(FALLBACK_MODEL, settings.models.repository)
    locate_model(spec, weights_dir=weights, cache_dir=cache, allow_synthetic=True)
    return spec.name, True


def choose_models(requested: list[str], settings: Settings, console: Console) -> tuple[list[str], list[str]]:
    """(models, the synthetic ones among them) for a run asked for `requested` (none: the
    default); a red notice for each synthetic stand-in."""
    wanted = requested or [settings.models.default]
    chosen = [choose_model(name if requested else None, settings) for name in wanted]
    for want, (name, fake) in zip(wanted, chosen, strict=True):
        if fake:
            _synthetic_notice(console, want, name)
    return list(dict.fromkeys(name for name, _ in chosen)), [name for name, fake in chosen if fake]


def _synthetic_notice(console: Console, wanted: str, model: str) -> None:
    text = (
        f"No real weights for [bold]{wanted}[/bold] were found (models.weights_dir, model cache).\n"
        f"Running [bold]{model}[/bold] as a SYNTHETIC stand-in with RANDOM weights: labels MEAN NOTHING.\n"
        "Real weights: `framestream models fetch NAME`, or FRAMESTREAM_MODELS__WEIGHTS_DIR=DIR with the "
        "model files."
    )
    console.print(Panel(text, title="SYNTHETIC MODEL", border_style="bold red"))


def private_redis(settings: Settings) -> RedisServer:
    """A started private redis-server that survives the terminal's Ctrl-C, so the pipeline can
    drain: Ctrl-C signals the whole foreground process group, and redis-server would shut down at
    once. The child inherits a blocked SIGINT; the run stops it itself at the end."""
    server = RedisServer(
        aof=settings.redis.aof,
        password=settings.redis.password_value(),
        maxmemory_mb=settings.redis.maxmemory_mb,
    )
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return server.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def demo_clip(directory: Path, console: Console) -> str:
    """The demo clip both runners play when no source is given."""
    from stream.adapters.media.video import write_demo_clip

    clip = write_demo_clip(directory / "demo.mp4", frames=DEMO_FRAMES, size=DEMO_SIZE)
    console.print(
        f"demo clip: {DEMO_FRAMES} generated frames, {DEMO_SIZE[0]}x{DEMO_SIZE[1]} H.264", soft_wrap=True
    )
    return str(clip)
