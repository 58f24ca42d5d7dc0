"""The processes runner: every stage as its own OS process (``framestream stage NAME``), no Ray.

`ProcessStages` creates every consumer group up front (so ingest never outruns a group that does
not exist yet), starts one ingest process and, per model, a preprocess, an infer and
``postprocess.replicas`` postprocess processes (they share the partitions), waits until each
reads its stream, and on exit stops them with SIGTERM (they drain and ack). A model asked for
while running (``POST /v1/models/{name}``) gets its groups and processes the same way
(`ProcessStages.add_model`). `framestream run
--runner processes` plays through them with the run loop every runner shares
(`stream.runners.play`); `run_processes` does the same from code (the load tester's embedded
pipeline, tests) and returns a `RunReport` per (source, model).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import yaml

from stream.adapters.redis.client import connect_settings
from stream.adapters.redis.entries import text
from stream.adapters.redis.partitions import ensure_layout
from stream.adapters.redis.source_registry import SourceSpec
from stream.core.keys import PipelineKeys
from stream.core.ledger import ResultLedger, Track
from stream.errors import FramestreamError
from stream.runners.drive import DriveOptions, drive
from stream.runners.play import StageSetup
from stream.settings import Settings
from stream.sinks.settings import secret_variable as sink_secret_variable
from stream.watchdog import die_with_parent

__all__ = [
    "ProcessStages",
    "RunReport",
    "RunRow",
    "StageProcess",
    "create_groups",
    "process_stages",
    "run_processes",
    "sink_secret_variable",
    "sink_secrets",
]

log = logging.getLogger(__name__)


@dataclass
class RunRow:
    source: str
    model: str
    frames: int | None  # published (from the end-of-stream); None while a live source runs
    results: int
    duplicates: int
    skipped: int
    late: int
    error: str | None
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None = None


@dataclass
class RunReport:
    rows: list[RunRow] = field(default_factory=list)
    dead_letters: int = 0
    dropped: int = 0
    wall_s: float = 0.0
    mean_batch_size: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    interrupted: bool = False
    stage_cpu_s: dict[str, float] = field(default_factory=dict)  # CPU each stage used after start-up
    sinks: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per sink: delivered, retries, dead_letters, dropped, backlog (`Summary.sinks`)."""

    @property
    def results(self) -> int:
        return sum(r.results for r in self.rows)

    @property
    def frames_per_s(self) -> float:
        return self.results / self.wall_s if self.wall_s > 0 else 0.0


async def create_groups(client: aioredis.Redis, keys: PipelineKeys, models: list[str]) -> None:
    """Every consumer group of the pipeline (every partition), at the current end of its stream;
    records the partition count of a new pipeline (ConfigError if it was created with another).
    Downstream first: once ingest sees a model's preprocess group it may write that model's
    tensors straight (`IngestSettings.straight_to_tensors`), so its infer group must already be
    there to read them."""
    await ensure_layout(client, keys)
    pairs = [(k.scores(m), keys.group("postprocess", m)) for k in keys.all_partitions for m in models]
    pairs += [(k.tensors(m), keys.group("infer", m)) for k in keys.all_partitions for m in models]
    pairs += [(k.frames, keys.group("preprocess", m)) for k in keys.all_partitions for m in models]
    for stream, group in pairs:
        with contextlib.suppress(aioredis.ResponseError):  # BUSYGROUP: it exists, keep its position
            await client.xgroup_create(stream, group, id="$", mkstream=True)


async def _destroy_groups(client: aioredis.Redis, keys: PipelineKeys, model: str) -> None:
    """Remove `model`'s consumer groups (a model that could not start: nobody reads them)."""
    for part in keys.all_partitions:
        for stream, group in (
            (part.frames, keys.group("preprocess", model)),
            (part.tensors(model), keys.group("infer", model)),
            (part.scores(model), keys.group("postprocess", model)),
        ):
            with contextlib.suppress(aioredis.ResponseError):
                await client.xgroup_destroy(stream, group)


class StageProcess:
    """One ``framestream stage`` child process.

    Redis is given through the environment (``FRAMESTREAM_REDIS__URL`` and, when set,
    ``__PASSWORD`` / ``__USERNAME``), not on the command line (every local user can read that)
    nor in the config file: a password in either would be readable by others or land on disk.
    """

    def __init__(
        self,
        stage: str,
        model: str | None,
        redis_url: str,
        config: Path,
        consumer: str,
        *,
        password: str | None = None,
        username: str | None = None,
        secrets: dict[str, str] | None = None,
    ) -> None:
        self.stage, self.model, self.consumer = stage, model, consumer
        args = [sys.executable, "-m", "stream.cli", "stage", stage]
        args += ["--config", str(config), "--consumer", consumer]
        if model:
            args += ["--model", model]
        env = {**os.environ, "FRAMESTREAM_REDIS__URL": redis_url}
        if password is not None:
            env["FRAMESTREAM_REDIS__PASSWORD"] = password
        if username is not None:
            env["FRAMESTREAM_REDIS__USERNAME"] = username
        env.update(secrets or {})  # the sinks' secrets, named by their secret_env in the config
        # a process group of its own: a terminal's Ctrl-C (or `timeout`) signals the run, which
        # stops its stages once (SIGTERM); a stage seeing both would take the second as "force".
        # And SIGTERM when the run dies, even by SIGKILL: the stage drains and exits with it.
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            env=env,
            process_group=0,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )

    @property
    def label(self) -> str:
        return f"{self.stage}[{self.model}]" if self.model else self.stage

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system, all threads) the process has used so far; None off Linux."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", self.label, timeout_s)
            self.process.kill()
            return self.process.wait()


_REDIS_ACCESS = ("url", "username")
"""Left out of the stages' config file with the secrets (a URL may carry a password);
`StageProcess` passes them in the environment."""


def sink_secrets(settings: Settings) -> dict[str, str]:
    """The environment that carries the secrets of the sinks given a `secret` to the sinks
    process (the config file names each variable as the sink's `secret_env`)."""
    return {
        sink_secret_variable(s.name): s.secret.get_secret_value()
        for s in settings.sinks
        if s.secret is not None
    }


def _write_config(settings: Settings, directory: Path) -> Path:
    """The run's settings for the stage processes, without the Redis URL and credentials, and
    without the secrets (the HTTP API's tokens: no stage serves HTTP; a sink's secret travels in
    the environment, `sink_secrets`)."""
    dumped = settings.dump_without_secrets()
    for name in _REDIS_ACCESS:
        dumped["redis"].pop(name, None)
    for sink, written in zip(settings.sinks, dumped.get("sinks", []), strict=True):
        if sink.secret is not None:
            written["secret_env"] = sink_secret_variable(sink.name)
    path = directory / "settings.yaml"
    path.write_text(yaml.safe_dump(dumped, sort_keys=False))
    return path


class ProcessStages:
    """The stage processes of one run (an async context manager): started and ready on entry,
    stopped on exit. Its `replicas` and `check` feed the run loop (`stream.runners.drive`)."""

    logs_hint = "the stage processes' output above"

    def __init__(
        self, settings: Settings, redis_url: str, models: list[str], *, ready_timeout_s: float = 120.0
    ) -> None:
        if not models:
            raise ValueError("at least one model is needed")
        self.settings, self.redis_url, self.models = settings, redis_url, list(models)
        self.ready_timeout_s = ready_timeout_s
        self.procs: list[StageProcess] = []
        self.starting: list[StageProcess] = []
        """The processes of a model being added (`add_model`), until they are ready."""
        self._cpu_at_ready: dict[str, float | None] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._config: Path | None = None

    adds_models = True

    async def __aenter__(self) -> ProcessStages:
        settings = self.settings
        keys = PipelineKeys(settings.streams.pipeline, settings.streams.partitions)
        client = await connect_settings(settings.redis, self.redis_url)
        self._tmp = tempfile.TemporaryDirectory(prefix="framestream-run-")
        try:
            await create_groups(client, keys, self.models)
            config = self._config = _write_config(settings, Path(self._tmp.name))
            tag = f"{os.getpid()}"
            auth = self._auth()
            for model in self.models:
                self.procs += self._model_procs(model)
            self.procs.append(StageProcess("ingest", None, self.redis_url, config, f"ingest-{tag}", **auth))
            if settings.sinks:  # one process delivers every sink (each sink's partitions in order)
                sinks = StageProcess(
                    "sinks",
                    None,
                    self.redis_url,
                    config,
                    f"sinks-{tag}",
                    password=settings.redis.password_value(),
                    username=settings.redis.username,
                    secrets=sink_secrets(settings),
                )
                self.procs.append(sinks)
            await _wait_ready(client, keys, self.procs, self.ready_timeout_s)
        except (KeyboardInterrupt, asyncio.CancelledError):
            self._kill()  # a stop signal while starting (`stream.stopping`): nothing to drain yet
            raise
        except BaseException:
            await self._stop(5)
            raise
        finally:
            await client.aclose()
        self._cpu_at_ready = {p.consumer: p.cpu_s() for p in self.procs}
        return self

    def _auth(self) -> dict[str, Any]:
        return {"password": self.settings.redis.password_value(), "username": self.settings.redis.username}

    def _model_procs(self, model: str) -> list[StageProcess]:
        """Start `model`'s preprocess, infer and postprocess processes (``postprocess.replicas``
        of those: they share the partitions under leases)."""
        assert self._config is not None
        procs = []
        for stage in ("preprocess", "infer", "postprocess"):
            copies = self.settings.postprocess.replicas if stage == "postprocess" else 1
            for i in range(copies):
                name = f"{stage}-{model}-{os.getpid()}" + (f"-{i}" if i else "")
                procs.append(StageProcess(stage, model, self.redis_url, self._config, name, **self._auth()))
        return procs

    async def add_model(self, model: str) -> None:
        """Serve `model` too: its consumer groups on every partition, made at the end of each
        stream (it classifies the frames published from now on), then its stage processes; returns
        once they are ready. When they cannot start, they are stopped and its groups removed (so no
        group nobody reads holds ingest back), and FramestreamError says why; the running models'
        processes are not touched either way."""
        settings = self.settings
        keys = PipelineKeys(settings.streams.pipeline, settings.streams.partitions)
        client = await connect_settings(settings.redis, self.redis_url)
        try:
            await create_groups(client, keys, [model])
            self.starting = self._model_procs(model)
            await _wait_ready(client, keys, self.starting, self.ready_timeout_s)
        except BaseException:
            await asyncio.to_thread(_stop, self.starting, 5)
            await _destroy_groups(client, keys, model)
            raise
        finally:
            started, self.starting = self.starting, []
            await client.aclose()
        self._cpu_at_ready.update({p.consumer: p.cpu_s() for p in started})
        self.procs += started
        self.models.append(model)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
            self._kill()  # a forced stop (a second signal): no drain, but nothing left running
        else:
            await self._stop(self.settings.streams.drain_timeout_s + 5)

    def _kill(self) -> None:
        for proc in [*self.procs, *self.starting]:
            proc.kill()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def _stop(self, timeout_s: float) -> None:
        await asyncio.to_thread(_stop, [*self.procs, *self.starting], timeout_s)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def replicas(self, model: str) -> dict[str, int]:
        """Running stage processes per stage (``Ingest``, ``Preprocess``, ...) for `model`."""
        counts: dict[str, int] = {}
        for proc in self.procs:
            if proc.process.poll() is None and proc.model in (None, model):
                name = proc.stage.capitalize()
                counts[name] = counts.get(name, 0) + 1
        return counts

    def check(self) -> None:
        """`FramestreamError` once a stage process has exited: nobody restarts it."""
        for proc in self.procs:
            if (code := proc.process.poll()) is not None:
                raise FramestreamError(f"stage {proc.label} exited with code {code}; see its log above")

    def stage_cpu_s(self) -> dict[str, float]:
        """CPU seconds each stage (all its processes) used since the stages were ready."""
        used: dict[str, float] = {}
        for proc in self.procs:
            before, after = self._cpu_at_ready.get(proc.consumer), proc.cpu_s()
            if before is not None and after is not None:
                used[proc.label] = used.get(proc.label, 0.0) + after - before
        return used


def process_stages(setup: StageSetup) -> ProcessStages:
    """The `StartStages` of ``framestream run --runner processes``."""
    return ProcessStages(setup.settings, setup.redis_url, setup.models)


async def run_processes(
    settings: Settings,
    *,
    redis_url: str,
    sources: list[str | SourceSpec],
    models: list[str],
    results_path: Path | None = None,
    segments_path: Path | None = None,
    timeout_s: float | None = None,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[ResultLedger], None] | None = None,
    ready_timeout_s: float = 120.0,
) -> RunReport:
    """Run the pipeline as OS processes until every finite source is done, `stop` is set or
    `timeout_s` passes (then the sources stop and the pipeline drains, as with Ctrl-C).

    The run loop is `framestream run`'s (`stream.runners.drive`), without a progress view.
    Raises `FramestreamError` if a stage process dies.
    """
    stages = ProcessStages(settings, redis_url, models, ready_timeout_s=ready_timeout_s)
    async with stages:
        options = DriveOptions(
            models=models,
            synthetic=[],
            replicas=stages.replicas,
            check_stages=stages.check,
            logs_hint=stages.logs_hint,
            results=results_path,
            segments=segments_path,
            timeout_s=timeout_s,
            add_model=stages.add_model,
            runner="processes",
        )
        played = await drive(
            options, settings, redis_url, list(sources), None, stop=stop, on_progress=on_progress
        )
        stage_cpu_s = stages.stage_cpu_s()
    summary = played.summary
    report = RunReport(
        dead_letters=summary.dead_lettered,
        dropped=summary.dropped,
        wall_s=summary.wall_s,
        interrupted=summary.interrupted,
        stage_cpu_s=stage_cpu_s,
        sinks=summary.sinks,
    )
    _fill(report, played.ledger, played.tracks)
    return report


async def _wait_ready(
    client: aioredis.Redis,
    keys: PipelineKeys,
    procs: list[StageProcess],
    timeout_s: float,
    stop: asyncio.Event | None = None,
) -> bool:
    """Wait until every stage process of this run has loaded its model and reads its stream,
    so sources start when the whole pipeline can take them; False when `stop` came first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if stop is not None and stop.is_set():
            return False
        ready = {text(k) for k in await client.hkeys(keys.stage_ready)}
        missing = [p.label for p in procs if p.consumer not in ready]
        if not missing:
            return True
        for proc in procs:
            if (code := proc.process.poll()) is not None:
                raise FramestreamError(
                    f"stage {proc.label} exited with code {code} while starting; see its log"
                )
        if time.monotonic() > deadline:
            raise FramestreamError(f"stages {missing} not ready after {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


def _stop(procs: list[StageProcess], timeout_s: float) -> None:
    """SIGTERM every stage (it drains and acks), SIGKILL those still running after `timeout_s`."""
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        proc.wait(max(0.1, deadline - time.monotonic()))


def _fill(report: RunReport, ledger: ResultLedger, pairs: list[tuple[str, str]]) -> None:
    for source, model in pairs:
        track = ledger.track(source, model)
        report.rows.append(
            RunRow(
                source=source,
                model=model,
                frames=track.frames,
                results=track.results,
                duplicates=track.duplicates,
                skipped=track.skipped,
                late=int((track.eos or {}).get("late", 0) or 0),
                error=(track.eos or {}).get("error"),
                **_latency(track),
            )
        )
    total = ledger.total(pairs)
    latency = _latency(total)
    report.p50_ms, report.p99_ms, report.max_ms = latency["p50_ms"], latency["p99_ms"], latency["max_ms"]
    report.mean_batch_size = total.mean_batch_size


def _latency(track: Track) -> dict[str, float | None]:
    hist = track.latency
    return {"p50_ms": hist.percentile(50), "p99_ms": hist.percentile(99), "max_ms": hist.percentile(100)}
