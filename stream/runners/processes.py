"""The processes runner: every stage as its own OS process (``framestream stage NAME``), no Ray.

`run_processes` creates every consumer group up front (so ingest never outruns a group that does
not exist yet), registers the sources, starts one ingest process and, per model, a preprocess,
an infer and ``postprocess.replicas`` postprocess processes (they share the partitions); then
it collects results (dedupe, optional JSONL) until every finite source has its end-of-stream
result for every model, stops the stages with SIGTERM (they drain and ack), and returns a
`RunReport`.

The run reads the results through a consumer group of its own (``sink:run-<pid>-<random>``),
removed at the end: in a group shared with another reader (another run on the same Redis, a
tool reading group ``sink``) each result, the end-of-stream included, goes to only one of them,
and a run whose end-of-stream went elsewhere would wait for it until its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
import yaml

from stream.adapters.redis_client import connect, refresh_cluster_view
from stream.adapters.redis_outage import REDIS_TRANSIENT
from stream.adapters.redis_partitions import ensure_layout
from stream.adapters.source_registry import SourceSpec, add_source
from stream.core.keys import PipelineKeys
from stream.core.ledger import ResultLedger, Track
from stream.core.source_ids import source_ids
from stream.errors import FramestreamError
from stream.results import SINK_GROUP, JsonlSink, ResultReader, dead_letter_count
from stream.settings import Settings
from stream.watchdog import die_with_parent

__all__ = [
    "RunReport",
    "RunRow",
    "StageProcess",
    "create_groups",
    "run_group",
    "run_processes",
]

log = logging.getLogger(__name__)
_LIVE_PREFIXES = (
    "rtsp://",
    "rtsps://",
    "rtmp://",
    "http://",
    "https://",
    "udp://",
    "tcp://",
    "webcam:",
    "/dev/video",
)


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

    @property
    def results(self) -> int:
        return sum(r.results for r in self.rows)

    @property
    def frames_per_s(self) -> float:
        return self.results / self.wall_s if self.wall_s > 0 else 0.0


def _is_live(spec: SourceSpec) -> bool:
    return bool(spec.live) or (spec.live is None and spec.uri.lower().startswith(_LIVE_PREFIXES))


async def create_groups(client: aioredis.Redis, keys: PipelineKeys, models: list[str]) -> None:
    """Every consumer group of the pipeline (every partition), at the current end of its stream;
    records the partition count of a new pipeline (ConfigError if it was created with another)."""
    await ensure_layout(client, keys)
    pairs = [(k.frames, keys.group("preprocess", m)) for k in keys.all_partitions for m in models]
    pairs += [(k.tensors(m), keys.group("infer", m)) for k in keys.all_partitions for m in models]
    pairs += [(k.scores(m), keys.group("postprocess", m)) for k in keys.all_partitions for m in models]
    for stream, group in pairs:
        with contextlib.suppress(aioredis.ResponseError):  # BUSYGROUP: it exists, keep its position
            await client.xgroup_create(stream, group, id="$", mkstream=True)


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


_REDIS_SECRETS = ("url", "password", "username")
"""Left out of the stages' config file; `StageProcess` passes them in the environment."""


def _write_config(settings: Settings, directory: Path) -> Path:
    """The run's settings for the stage processes, without the Redis URL and credentials, and
    without the HTTP API's tokens (no stage serves HTTP; a dump masks them as ``**********``)."""
    dumped = settings.model_dump(mode="json")
    for name in _REDIS_SECRETS:
        dumped["redis"].pop(name, None)
    dumped.pop("api", None)
    path = directory / "settings.yaml"
    path.write_text(yaml.safe_dump(dumped, sort_keys=False))
    return path


async def run_processes(
    settings: Settings,
    *,
    redis_url: str,
    sources: list[str | SourceSpec],
    models: list[str],
    results_path: Path | None = None,
    timeout_s: float | None = None,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[ResultLedger], None] | None = None,
    ready_timeout_s: float = 120.0,
) -> RunReport:
    """Run the pipeline as OS processes until every finite source is done (or `stop`/timeout).

    Raises `FramestreamError` if a stage process dies or `timeout_s` passes first.
    """
    if not models:
        raise ValueError("at least one model is needed")
    keys = PipelineKeys(settings.streams.pipeline, settings.streams.partitions)
    client = await connect(
        redis_url,
        password=settings.redis.password,
        username=settings.redis.username,
        cluster=settings.redis.cluster,
    )
    sink = JsonlSink(results_path) if results_path else None
    specs = [s if isinstance(s, SourceSpec) else SourceSpec(uri=s) for s in sources]
    ids = source_ids(s.uri for s in specs)
    collector = ResultReader(
        client, keys, group=run_group(), sink=sink, sources=ids or None
    )  # results of this run's sources only; with none (sources added later) all of them
    procs: list[StageProcess] = []
    started = time.monotonic()
    report = RunReport()
    try:
        await create_groups(client, keys, models)
        await collector.start()
        dead_before = await dead_letter_count(client, keys)
        with tempfile.TemporaryDirectory(prefix="framestream-run-") as tmp:
            config = _write_config(settings, Path(tmp))
            _spawn(procs, settings, models, redis_url, config)
            if not await _wait_ready(client, keys, procs, ready_timeout_s, stop):
                report.interrupted = True  # stopped while starting: no source was added
                _stop(procs, settings.streams.drain_timeout_s + 5)
                return report
            started = time.monotonic()
            cpu_at_ready = {p.consumer: p.cpu_s() for p in procs}
            for source_id, spec in zip(ids, specs, strict=True):
                await add_source(client, keys, source_id, spec, replace=True)
            finite = {
                (sid, m)
                for sid, spec in zip(ids, specs, strict=True)
                if not (_is_live(spec) or spec.loop)
                for m in models
            }
            report.interrupted = await _collect(
                collector,
                finite,
                procs,
                started,
                timeout_s,
                stop,
                on_progress,
                straggler_s=2 * settings.streams.claim_idle_ms / 1000.0 + 5.0,
            )
            report.wall_s = time.monotonic() - started
            for proc in procs:
                before, after = cpu_at_ready[proc.consumer], proc.cpu_s()
                if before is not None and after is not None:
                    used = report.stage_cpu_s.get(proc.label, 0.0)
                    report.stage_cpu_s[proc.label] = used + after - before
            _stop(procs, settings.streams.drain_timeout_s + 5)
            with contextlib.suppress(*REDIS_TRANSIENT):
                while await collector.poll(block_ms=50):  # results written while draining
                    pass
        report.dead_letters = await dead_letter_count(client, keys) - dead_before
        counters = await client.hgetall(keys.counters)
        report.dropped = sum(
            int(v) for k, v in counters.items() if _s(k).startswith("dropped:") and _s(k)[8:] in ids
        )
        _fill(report, collector.ledger, [(sid, m) for sid in ids for m in models])
        return report
    except (KeyboardInterrupt, asyncio.CancelledError):
        for proc in procs:  # a forced stop (`stream.stopping`): no drain, but nothing left running
            proc.kill()
        raise
    finally:
        _stop(procs, 5)
        if sink is not None:
            sink.close()
        with contextlib.suppress(*REDIS_TRANSIENT, aioredis.ResponseError):
            await collector.close()
        await client.aclose()


def _spawn(
    procs: list[StageProcess], settings: Settings, models: list[str], redis_url: str, config: Path
) -> None:
    """Start every stage process of the run, appending each to `procs` as it starts (so a failure
    halfway still stops the ones started)."""
    tag = f"{os.getpid()}"
    auth = {"password": settings.redis.password, "username": settings.redis.username}
    for model in models:
        for stage in ("preprocess", "infer", "postprocess"):
            copies = settings.postprocess.replicas if stage == "postprocess" else 1
            for i in range(copies):  # postprocess replicas share the partitions (leases)
                name = f"{stage}-{model}-{tag}" + (f"-{i}" if i else "")
                procs.append(StageProcess(stage, model, redis_url, config, name, **auth))
    procs.append(StageProcess("ingest", None, redis_url, config, f"ingest-{tag}", **auth))


def run_group() -> str:
    """A results consumer group name no other run uses."""
    return f"{SINK_GROUP}:run-{os.getpid()}-{secrets.token_hex(3)}"


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
        ready = {_s(k) for k in await client.hkeys(keys.stage_ready)}
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


async def _collect(
    collector: ResultReader,
    finite: set[tuple[str, str]],
    procs: list[StageProcess],
    started: float,
    timeout_s: float | None,
    stop: asyncio.Event | None,
    on_progress: Callable[[ResultLedger], None] | None,
    *,
    straggler_s: float = 0.0,
) -> bool:
    """Poll results until every finite pair has its eos; True when `stop` ended it early.

    An end-of-stream can overtake frames that a crashed or restarted stage still held (the
    reorder buffer gives up on them after its max wait; they come later, once reclaimed). So after
    the last eos, keep collecting for up to `straggler_s` until every frame has a result or a skip.
    """
    eos_at: float | None = None
    while True:
        try:
            await collector.poll(block_ms=100)
        except REDIS_TRANSIENT as e:  # Redis restarting: the stages wait for it too
            log.warning("results: Redis unavailable (%s); retrying", e)
            await asyncio.sleep(0.5)
            with contextlib.suppress(*REDIS_TRANSIENT):
                await refresh_cluster_view(collector.client)  # a failover: a master moved
        ledger = collector.ledger
        if on_progress is not None:
            on_progress(ledger)
        if finite and ledger.finished(finite):
            eos_at = eos_at or time.monotonic()
            if ledger.complete(finite) or time.monotonic() - eos_at >= straggler_s:
                return False
        if stop is not None and stop.is_set():
            return True
        for proc in procs:
            if (code := proc.process.poll()) is not None:
                raise FramestreamError(f"stage {proc.label} exited with code {code}; see its log above")
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            missing = sorted(p for p in finite if not ledger.finished({p}))
            raise FramestreamError(
                f"timed out after {timeout_s:.0f} s waiting for end-of-stream of {missing}"
            )


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


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
