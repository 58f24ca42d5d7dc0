"""`framestream run --runner ray` (the default): the whole pipeline as one Serve application.

With no arguments: a private redis-server, a local Ray, the application from
``deployments/serve_config.yaml``, the default model (real weights when found, else a synthetic
stand-in with a loud notice), a generated demo clip; live progress; on finish or Ctrl-C the
sources stop, the pipeline drains (replicas finish and ack what they hold), a summary prints and
the command exits 0. ``--redis URL`` and ``--address RAY_ADDRESS`` attach to services that run
already (an application already RUNNING there is used as it is and left running).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel

from deployments.app import APP_NAME, DEPLOYMENT_NAMES
from deployments.config import CONFIG_PATH, deploy, load_config, override, replica_counts
from deployments.display import Progress, Snapshot, Summary, stage_rows, summary_table
from deployments.watch import ResultSink, percentile, probe_stages, read_counters
from stream.adapters.redis_server import RedisServer, find_free_port
from stream.adapters.redis_streams import connect
from stream.core.keys import PipelineKeys
from stream.errors import FramestreamError, ModelError
from stream.settings import Settings, load_settings

__all__ = ["RunOptions", "choose_model", "run_ray"]

log = logging.getLogger("framestream.run")

FALLBACK_MODEL = "mobilenet-v2-pytorch"
"""Used when the default model has no weights here and no synthetic stand-in (same architecture)."""


@dataclass
class RunOptions:
    sources: list[str] = field(default_factory=list)
    model: str | None = None
    results: Path | None = None
    redis_url: str | None = None
    address: str | None = None
    config_path: Path = CONFIG_PATH
    demo_frames: int = 300
    stall_timeout_s: float = 180.0
    timeout_s: float | None = None
    """Stop the sources and drain after this long (like Ctrl-C); None = until the sources end."""
    deploy_timeout_s: float = 300.0


class _Stalled(FramestreamError):
    """The pipeline made no progress for too long."""


def choose_model(requested: str | None, settings: Settings) -> tuple[str, bool]:
    """(model name, synthetic?): real weights when found, else a synthetic stand-in (built now,
    so replicas find it in the cache). An explicitly requested model without either is an error."""
    from stream.zoo.descriptors import load_spec
    from stream.zoo.store import locate_model, resolve_weights_dir

    name = requested or settings.models.default
    spec = load_spec(name)
    weights = resolve_weights_dir(settings.models.weights_dir)
    cache = settings.models.cache_dir
    try:
        locate_model(spec, weights_dir=weights, cache_dir=cache, allow_synthetic=False)
        return name, False
    except ModelError:
        pass
    if not spec.has_synthetic:
        if requested:
            raise ModelError(
                f"{name}: no weights in {weights or 'FRAMESTREAM_WEIGHTS_DIR (unset)'} or {cache}, and "
                "it has no synthetic stand-in; set FRAMESTREAM_WEIGHTS_DIR or fetch it"
            )
        spec = load_spec(FALLBACK_MODEL)
    locate_model(spec, weights_dir=weights, cache_dir=cache, allow_synthetic=True)
    return spec.name, True


def _synthetic_notice(console: Console, wanted: str, model: str) -> None:
    text = (
        f"No real weights for [bold]{wanted}[/bold] were found (FRAMESTREAM_WEIGHTS_DIR, model cache).\n"
        f"Running [bold]{model}[/bold] as a SYNTHETIC stand-in with RANDOM weights: labels MEAN NOTHING.\n"
        "Real weights: `framestream models fetch NAME`, or FRAMESTREAM_WEIGHTS_DIR=DIR with the model files."
    )
    console.print(Panel(text, title="SYNTHETIC MODEL", border_style="bold red"))


def _start_ray(address: str | None) -> bool:
    """Connect to `address`, or start a local Ray sized for this machine. True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    common: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if address:
        # Ray 2.60 turns token auth on by itself only for a local cluster it finds; with an explicit
        # address the driver must be told, or the cluster answers InvalidAuthToken.
        token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
        if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file()):
            os.environ["RAY_AUTH_MODE"] = "token"
            with contextlib.suppress(Exception):  # Ray reads the mode at import: make it re-read
                from ray._raylet import Config

                Config.initialize("")
        try:
            ray.init(address=address, **common)
        except ConnectionError as e:
            raise FramestreamError(
                f"cannot attach to Ray at {address}: {e}; check the address and that this machine has "
                "the cluster's token (RAY_AUTH_TOKEN, or ~/.ray/auth_token)"
            ) from e
        return False
    # Ray's token authentication stays on (Ray >= 2.52 default): a local ray.init creates the
    # token (~/.ray/auth_token) and every process of this cluster uses it.
    ray.init(num_cpus=max(2, os.cpu_count() or 2), **common)
    return True


def _replica_settings(settings: Settings, redis_url: str) -> dict[str, Any]:
    """The run's settings for every replica; the Redis password stays in the environment."""
    from stream.zoo.store import resolve_weights_dir

    dumped = settings.model_dump(mode="json")
    dumped["redis"].pop("password", None)
    dumped["redis"]["url"] = redis_url
    weights = resolve_weights_dir(settings.models.weights_dir)  # FRAMESTREAM_WEIGHTS_DIR of this shell
    dumped["models"]["weights_dir"] = str(weights) if weights else None
    return dumped


def _source_id(uri: str, taken: set[str]) -> str:
    import re

    stem = Path(uri.rstrip("/")).stem if "://" not in uri else uri.rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9_.\-]", "-", stem)[:100] or "source"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def run_ray(options: RunOptions, settings: Settings | None = None, console: Console | None = None) -> Summary:
    """Run the pipeline on Ray (see the module docstring) and return what it did."""
    settings = settings or load_settings()
    console = console or Console()
    with contextlib.ExitStack() as stack:
        redis_url = options.redis_url or settings.redis.url
        if redis_url == "auto":
            server = stack.enter_context(
                RedisServer(
                    aof=settings.redis.aof,
                    password=settings.redis.password,
                    maxmemory_mb=settings.redis.maxmemory_mb,
                )
            )
            redis_url = server.url
            console.print(f"redis-server (private) at 127.0.0.1:{server.port}")
        model, synthetic = choose_model(options.model, settings)
        if synthetic:
            _synthetic_notice(console, options.model or settings.models.default, model)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="framestream-run-")))
        sources = list(options.sources)
        if not sources:
            from stream.adapters.video import write_demo_clip

            clip = write_demo_clip(tmp / "demo.mp4", frames=options.demo_frames, size=(640, 480))
            console.print(f"demo clip: {options.demo_frames} generated frames, 640x480 H.264", soft_wrap=True)
            sources = [str(clip)]
        started = time.monotonic()
        ours = _start_ray(options.address)
        stack.callback(_shutdown_ray if ours else _disconnect_ray)
        deployed = _ensure_app(options, settings, model, redis_url, console)
        if deployed:
            stack.callback(_delete_app, console)
        console.print(f"Serve application {APP_NAME!r} running ({time.monotonic() - started:.1f} s to start)")
        summary = asyncio.run(_drive(options, settings, redis_url, model, synthetic, sources, console))
        stack.close()  # drain and stop before the summary, so it is the last word
    console.print(summary_table(summary))
    return summary


def _ensure_app(
    options: RunOptions, settings: Settings, model: str, redis_url: str, console: Console
) -> bool:
    """Deploy the application unless one runs already (attached clusters). True if we deployed."""
    from ray import serve

    if options.address:
        with contextlib.suppress(Exception):
            app = serve.status().applications.get(APP_NAME)
            if app is not None and str(getattr(app.status, "value", app.status)) == "RUNNING":
                console.print(f"using the running Serve application {APP_NAME!r} (its own settings apply)")
                return False
    port = find_free_port()
    config = override(
        load_config(options.config_path),
        args={"model": model, "settings": _replica_settings(settings, redis_url)},
        http={"host": "127.0.0.1", "port": port},
    )
    console.print("deploying the Serve application (deployments/serve_config.yaml) ...")
    deploy(config, timeout_s=options.deploy_timeout_s)
    console.print(f"HTTP API: http://127.0.0.1:{port}/docs")
    return True


def _delete_app(console: Console) -> None:
    from ray import serve

    console.print("draining: deleting the Serve application (replicas finish and ack what they hold) ...")
    with contextlib.suppress(Exception):
        serve.delete(APP_NAME)


def _disconnect_ray() -> None:
    """Leave a cluster we attached to (it, and Serve on it, keep running)."""
    import ray

    ray.shutdown()


def _shutdown_ray() -> None:
    import ray
    from ray import serve

    with contextlib.suppress(Exception):
        serve.shutdown()
    ray.shutdown()


async def _drive(
    options: RunOptions,
    settings: Settings,
    redis_url: str,
    model: str,
    synthetic: bool,
    uris: list[str],
    console: Console,
) -> Summary:
    from stream.stages.sources import SourceSpec, add_source, remove_source

    keys = PipelineKeys(settings.streams.pipeline)
    client = await connect(redis_url, password=settings.redis.password, username=settings.redis.username)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _on_signal, stop)
    sink = ResultSink(client, keys, options.results)
    taken: set[str] = set()
    ids = [_source_id(uri, taken) for uri in uris]
    for source_id, uri in zip(ids, uris, strict=True):
        await add_source(client, keys, source_id, SourceSpec(uri=uri), replace=True)
    first = {s: int(c) for s, c in zip(ids, await _published(client, keys, ids), strict=True)}
    started = time.monotonic()
    watcher = _Watcher(client, keys, model)
    try:
        with Progress(console) as progress:
            if options.timeout_s is not None:
                loop.call_later(options.timeout_s, stop.set)
            await _until_done(sink, ids, stop, watcher, progress, options.stall_timeout_s, started)
            interrupted = stop.is_set() and not sink.finished(ids)
            if interrupted:
                console.print("stopping: sources removed, draining what is in flight ...")
                for source_id in ids:
                    await remove_source(client, keys, source_id)
                drain_deadline = time.monotonic() + settings.streams.drain_timeout_s + 5
                while not sink.finished(ids) and time.monotonic() < drain_deadline:
                    await sink.poll(block_ms=200)
                    progress.update(await watcher.snapshot(sink, time.monotonic() - started))
            while await sink.poll(block_ms=300):
                pass
            progress.update(await watcher.snapshot(sink, time.monotonic() - started))
        published = await _published(client, keys, ids)
        counters = await read_counters(client, keys)
        dead = int(await client.xlen(keys.dead))
        return Summary(
            model=model,
            synthetic=synthetic,
            wall_s=time.monotonic() - started,
            published=sum(p - first[s] for s, p in zip(ids, published, strict=True)),
            results=sink.distinct,
            duplicates=sink.duplicates,
            dropped=sum(counters.get(f"dropped:{s}", 0) for s in ids),
            dead_lettered=dead,
            skipped=sum(int(sink.eos.get(s, {}).get("skipped") or 0) for s in ids),
            p50_ms=percentile(sink.latencies_ms, 50),
            p99_ms=percentile(sink.latencies_ms, 99),
            max_ms=max(sink.latencies_ms) if sink.latencies_ms else None,
            per_source={
                s: {
                    "published": p - first[s],
                    "results": sink.results_per_source.get(s, 0),
                    "label": sink.labels.get(s, "-"),
                }
                for s, p in zip(ids, published, strict=True)
            },
            interrupted=interrupted,
        )
    finally:
        sink.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await client.aclose()


def _on_signal(stop: asyncio.Event) -> None:
    if stop.is_set():
        raise KeyboardInterrupt  # a second Ctrl-C: stop now, without draining
    stop.set()


async def _published(client: Any, keys: PipelineKeys, ids: list[str]) -> list[int]:
    counters = await read_counters(client, keys)
    return [counters.get(f"published:{s}", 0) for s in ids]


async def _until_done(
    sink: ResultSink,
    ids: list[str],
    stop: asyncio.Event,
    watcher: _Watcher,
    progress: Progress,
    stall_timeout_s: float,
    started: float,
) -> None:
    next_view = 0.0
    last_change = time.monotonic()
    last_marker: tuple[int, ...] = ()
    while not stop.is_set() and not sink.finished(ids):
        await sink.poll(block_ms=200)
        now = time.monotonic()
        if now < next_view:
            continue
        next_view = now + 0.5
        snap = await watcher.snapshot(sink, now - started)
        progress.update(snap)
        marker = (sink.distinct, snap.published, *(r.handled for r in snap.stages))
        if marker != last_marker:
            last_marker, last_change = marker, now
        elif now - last_change > stall_timeout_s:
            raise _Stalled(
                f"no progress for {stall_timeout_s:.0f} s (stages: "
                + ", ".join(f"{r.stage} x{r.replicas} lag {r.backlog}" for r in snap.stages)
                + "); see the replica logs under /tmp/ray/session_latest/logs/serve"
            )


class _Watcher:
    """Snapshots for the progress view: stage groups, replica counts, rates."""

    def __init__(self, client: Any, keys: PipelineKeys, model: str) -> None:
        self.client = client
        self.keys = keys
        self.model = model
        self._last: tuple[float, dict[str, int]] | None = None
        self._rates: dict[str, float] = {}

    async def snapshot(self, sink: ResultSink, elapsed_s: float) -> Snapshot:
        probes = await probe_stages(self.client, self.keys, self.model)
        counters = await read_counters(self.client, self.keys)
        published = counters.get("published:*", 0)
        handled = {stage: p.handled for stage, p in probes.items()}
        handled["ingest"] = published
        now = time.monotonic()
        if self._last is not None and now - self._last[0] >= 0.9:
            then, before = self._last
            self._rates = {s: max(0.0, (n - before.get(s, 0)) / (now - then)) for s, n in handled.items()}
            self._last = (now, handled)
        elif self._last is None:
            self._last = (now, handled)
        try:
            replicas = await asyncio.to_thread(replica_counts, APP_NAME)
        except Exception:
            replicas = {}
        rows = stage_rows(probes, replicas, self._rates, DEPLOYMENT_NAMES)
        rows[0] = type(rows[0])("ingest", rows[0].replicas, self._rates.get("ingest", 0.0), published, 0)
        return Snapshot(
            elapsed_s=elapsed_s,
            stages=rows,
            labels=dict(sink.labels),
            results=dict(sink.results_per_source),
            done=set(sink.eos),
            published=published,
            dead=0,
        )
