"""`framestream run --runner ray` (the default): the whole pipeline as one Serve application.

With no arguments: a private redis-server, a local Ray, the application from
``deployments/serve/serve_config.yaml``, the default model (real weights when found, else a synthetic
stand-in with a loud notice), a generated demo clip; live progress; on finish or Ctrl-C the
sources stop, the pipeline drains (replicas finish and ack what they hold), a summary prints and
the command exits 0. ``--redis URL`` and ``--address RAY_ADDRESS`` attach to services that run
already (an application already RUNNING there is used as it is and left running).

On a cluster (``--address``) the ingest replica opens the sources on whichever host it runs, and
every replica connects to Redis from its own host. So an attached run needs ``--redis`` with an
address the cluster's hosts can reach (never a private redis-server on this machine's loopback),
and it rejects sources only this machine can read: a path in the temp dir (the generated demo clip
is one), which another host's temp dir does not have.

A model asked for while the run plays (``POST /v1/models/{name}``, `stream.runners.more_models`)
gets one more Serve application beside the running ones (`_RayStages.add_model`), when this run
deployed them; a run using applications that ran already adds none (the API says so).

The HTTP API's tokens (``api`` settings) reach the replicas through the environment of a local Ray
this run starts, never through the Serve config; with none configured the run makes a random admin
token and prints one line ``console: http://HOST:PORT/?token=TOKEN`` to open the API with.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console

from deployments.ray_internals import reload_auth_config
from deployments.serve.config import (
    CONFIG_PATH,
    app_config,
    app_names,
    deploy,
    load_config,
    one_node,
    override,
    per_model,
    start_local_ray,
)
from deployments.serve.status import app_status, replica_counts
from stream.adapters.redis.server import find_free_port
from stream.core.messages import STAGES
from stream.core.sources.uri import parse_source
from stream.errors import ConfigError, FramestreamError
from stream.runners import RunRequest
from stream.runners.play import StageSetup, StartStages, play
from stream.settings import Settings
from stream.sinks.settings import secret_variable
from stream.stopping import forced, on_stop_signal, reinstall

__all__ = ["check_attached", "main", "ray_stages"]

log = logging.getLogger("framestream.run")

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", ""}


def _host(url_or_address: str) -> str:
    """The host part of a URL or of ``HOST:PORT``."""
    if "://" not in url_or_address:
        url_or_address = f"x://{url_or_address}"
    return (urlsplit(url_or_address).hostname or "").lower()


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def _temp_path(source: str) -> Path | None:
    """The path `source` names when it lies in this machine's temp dir, else None."""
    local = parse_source(source).path
    if local is None:
        return None
    path = Path(local).expanduser()
    try:
        resolved, tmp = path.resolve(), Path(tempfile.gettempdir()).resolve()
    except OSError:
        return None
    return resolved if resolved == tmp or tmp in resolved.parents else None


def check_attached(address: str | None, redis_url: str, sources: list[str]) -> None:
    """Refuse an attached run (``--address``) that the cluster's other hosts could not serve: no
    ``--redis`` (a private redis-server listens on this machine's loopback only), a loopback Redis
    with a remote Ray address, no source (the demo clip is written to this machine's temp dir), or
    a source path in the temp dir. Raises ConfigError saying what to pass instead."""
    if not address:
        return
    if redis_url == "auto":
        raise ConfigError(
            f"--address {address} attaches to a Ray cluster whose replicas may run on other hosts; "
            "they cannot reach a private redis-server on this machine's 127.0.0.1. Pass --redis "
            "redis://HOST:PORT/0 with an address every host of the cluster can reach (or set "
            "FRAMESTREAM_REDIS__URL)"
        )
    remote = address != "auto" and not _is_loopback(_host(address))
    if remote and _is_loopback(_host(redis_url)):
        raise ConfigError(
            f"--address {address} is another host, but --redis names this machine's loopback "
            f"({_host(redis_url)}), which the cluster's hosts cannot reach; pass --redis with an "
            "address every host of the cluster can reach"
        )
    if not sources:
        raise ConfigError(
            f"--address {address}: the demo clip would be written to this machine's temp dir, which "
            "an ingest replica on another host cannot read; pass --source with a URI every host "
            "can open (rtsp://, http(s)://, or a path on storage the hosts share)"
        )
    for source in sources:
        path = _temp_path(source)
        if path is not None:
            raise ConfigError(
                f"--address {address}: source {source!r} is in this machine's temp dir ({path}), which "
                "an ingest replica on another host cannot read; put it on storage the hosts share, "
                "or pass a network URI (rtsp://, http(s)://)"
            )


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
                reload_auth_config()
        try:
            ray.init(address=address, **common)
        except ConnectionError as e:
            raise FramestreamError(
                f"cannot attach to Ray at {address}: {e}; check the address and that this machine has "
                "the cluster's token (RAY_AUTH_TOKEN, or ~/.ray/auth_token)"
            ) from e
        finally:
            reinstall()  # ray.init's SIGTERM handler exits at once: SIGTERM must drain like Ctrl-C
        return False
    # Ray's token authentication stays on (Ray >= 2.52 default): a local ray.init creates the
    # token (~/.ray/auth_token) and every process of this cluster uses it.
    try:
        start_local_ray()
    finally:
        reinstall()
    return True


def _replica_settings(settings: Settings, redis_url: str | None) -> dict[str, Any]:
    """The run's settings for every replica; the Redis password stays in the environment, and so
    does the URL when `redis_url` is None (`_redis_through_environment`)."""
    dumped = settings.dump_without_secrets()  # tokens: `_tokens_through_environment`
    for sink, written in zip(settings.sinks, dumped.get("sinks", []), strict=True):
        if sink.secret is not None:  # the secret itself: `_sink_secrets_through_environment`
            written["secret_env"] = secret_variable(sink.name)
    if redis_url is None:
        dumped["redis"].pop("url", None)
    else:
        dumped["redis"]["url"] = redis_url
    return dumped


def _redis_through_environment(
    stack: contextlib.ExitStack, settings: Settings, redis_url: str, address: str | None, console: Console
) -> str | None:
    """The Redis URL for the Serve config, or None when the replicas get it from the environment.

    The Serve config is shown by `serve status` and the dashboard, so a password must not be in
    it. A local Ray started by this run spawns every replica from this process's environment:
    the URL and password go there (``FRAMESTREAM_REDIS__*``, restored when the run ends). An
    existing cluster has its own environment, which this driver cannot reach: the URL goes into
    the config as given, with a warning when it carries a password.
    """
    import ray

    password, in_url = settings.redis.password_value(), urlsplit(redis_url).password is not None
    if not in_url and password is None:
        return redis_url
    if address is not None or ray.is_initialized():
        if in_url:
            console.print(
                "[yellow]warning:[/yellow] the password in the Redis URL goes into the Serve "
                "application's config on an existing Ray cluster; set FRAMESTREAM_REDIS__URL and "
                "FRAMESTREAM_REDIS__PASSWORD on the cluster instead to keep it out"
            )
        return redis_url
    wanted = {"FRAMESTREAM_REDIS__URL": redis_url, "FRAMESTREAM_REDIS__PASSWORD": password}
    for name, value in wanted.items():
        if value is not None:
            stack.callback(_restore_env, name, os.environ.get(name))
            os.environ[name] = value
    return None


API_TOKEN_VARIABLES = ("FRAMESTREAM_API__READ_TOKENS", "FRAMESTREAM_API__ADMIN_TOKENS")


def _tokens_through_environment(
    stack: contextlib.ExitStack, settings: Settings, address: str | None
) -> str | None:
    """Hand the API tokens to the replicas of a local Ray this run starts, through the environment
    they inherit (restored when the run ends); with no token configured, make an admin token for
    this run. Returns the token to print in the console URL (None: a configured or no token).

    An attached run (`address`, or a Ray that runs already) cannot set its replicas' environment:
    the cluster's own ``FRAMESTREAM_API__*`` settings apply there.
    """
    import ray

    if address is not None or ray.is_initialized():
        return None
    api = settings.api
    generated = None if api.enabled else secrets.token_urlsafe(32)
    admin = [t.get_secret_value() for t in api.admin_tokens] or ([generated] if generated else [])
    values = {
        "FRAMESTREAM_API__READ_TOKENS": ",".join(t.get_secret_value() for t in api.read_tokens),
        "FRAMESTREAM_API__ADMIN_TOKENS": ",".join(admin),
    }
    for name, value in values.items():
        stack.callback(_restore_env, name, os.environ.get(name))
        os.environ[name] = value
    return generated


def _sink_secrets_through_environment(stack: contextlib.ExitStack, settings: Settings) -> None:
    """Hand the sinks' secrets (those given as `secret`) to the replicas of a local Ray this run
    starts, through the environment they inherit (restored when the run ends); the settings the
    replicas get name each variable as the sink's secret_env (`_replica_settings`)."""
    for sink in settings.sinks:
        if sink.secret is not None:
            name = secret_variable(sink.name)
            stack.callback(_restore_env, name, os.environ.get(name))
            os.environ[name] = sink.secret.get_secret_value()


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _pipeline_config(target: _Target, settings: Settings, redis_url: str | None) -> dict[str, Any]:
    """The shipped Serve config with this run's settings and HTTP port: one application, before
    `per_model` makes one per model."""
    shipped = load_config(target.config_path)
    configured = [s for s in app_config(shipped).get("args", {}).get("stages", STAGES) if s != "sinks"]
    return override(
        shipped,
        args={"settings": _replica_settings(settings, redis_url)},
        http={"host": "127.0.0.1", "port": find_free_port()},
        # the Sinks deployment delivers the settings' sinks; without any, it is not deployed
        stages=[*configured, "sinks"] if settings.sinks else configured,
    )


def _serve_config(base: dict[str, Any], models: list[str], *, local: bool) -> dict[str, Any]:
    """`base` with one application per model (`per_model`); `local`: on the one-node Ray this run
    started, OpenVINO deployments stay at one replica (`deployments.serve.config.one_node`)."""
    config = per_model(base, models)
    return one_node(config) if local else config


def _ensure_apps(
    target: _Target,
    base: dict[str, Any],
    models: list[str],
    console: Console,
    token: str | None = None,
    *,
    local: bool = False,
) -> tuple[dict[str, str], bool]:
    """Deploy the application(s) of `base` (`_pipeline_config`) for `models` unless they run
    already (attached clusters); print where the HTTP API and the console are (with `token`, the
    run's generated admin token, in the URL).

    Returns the Serve application name per model and whether we deployed them.
    """
    config = _serve_config(base, models, local=local)
    apps = app_names(config)
    if target.address:
        with contextlib.suppress(Exception):
            statuses = [app_status(a) for a in apps.values()]
            if all(s is not None and s.status == "RUNNING" for s in statuses):
                console.print(
                    "using the Serve application(s) already running there (their own settings apply)"
                )
                return apps, False
    console.print("deploying the Serve application (deployments/serve/serve_config.yaml) ...")
    deploy(config, timeout_s=target.deploy_timeout_s)
    url = f"http://127.0.0.1:{config['http_options']['port']}"
    console.print(f"HTTP API: {url}/docs", soft_wrap=True)
    # one line, never wrapped, so a terminal makes it a link and a script can read it
    console.print(f"console: {url}/" + (f"?token={token}" if token else ""), soft_wrap=True, markup=False)
    return apps, True


def _delete_apps(names: list[str], console: Console, timeout_s: float) -> None:
    """Delete the applications, waiting `timeout_s` at most for their replicas to drain: a Ray
    whose own processes were signalled too (``timeout``, systemd's default KillMode send SIGTERM
    to every process of the run) may never answer, and the run must still end."""
    from ray import serve

    drain = not forced()  # after a second stop signal: delete them, but wait for no drain
    if drain:
        console.print("draining: deleting the Serve application (replicas finish and ack what they hold) ...")

    def delete() -> None:
        for name in names:
            with contextlib.suppress(Exception):
                serve.delete(name, _blocking=drain)

    worker = threading.Thread(target=delete, name="serve-delete", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        log.warning("Serve did not delete %s within %.0f s; stopping without it", names, timeout_s)


def _disconnect_ray() -> None:
    """Leave a cluster we attached to (it, and Serve on it, keep running)."""
    import ray

    ray.shutdown()


def _shutdown_ray() -> None:
    """Stop the local Ray this run started, Serve with it: the applications were deleted (drained)
    already, and ``serve.shutdown`` first would only add seconds to the stop."""
    import ray

    ray.shutdown()


@dataclass(frozen=True)
class _Target:
    """Where the application runs: a local Ray this run starts (`address` None) or a cluster."""

    address: str | None = None
    config_path: Path = CONFIG_PATH
    deploy_timeout_s: float = 300.0


@dataclass
class _RayStages:
    """The stages as Serve deployments: replica counts come from the Serve controller."""

    apps: dict[str, str]
    """Serve application name per model."""
    base: dict[str, Any] | None = None
    """The config this run deployed its applications from (`_pipeline_config`); None when it
    uses applications that ran already (a cluster's own: this run adds none to them)."""
    local: bool = False
    deploy_timeout_s: float = 300.0
    deployed: list[str] = field(default_factory=list)
    """Every application this run deployed (deleted when it ends), those of added models too."""
    logs_hint: str = "the replica logs under /tmp/ray/session_latest/logs/serve"

    def replicas(self, model: str) -> dict[str, int]:
        return replica_counts(self.apps[model]) if model in self.apps else {}

    def check(self) -> None:
        """Serve restarts a replica that dies: nothing is gone for good."""

    @property
    def adds_models(self) -> bool:
        return self.base is not None

    async def add_model(self, model: str) -> None:
        """Deploy one more application for `model`, built as `per_model` builds the others (no
        ingest of its own: it reads the one frames stream). Serve takes a config as the whole set
        of applications: `deploy` hands it the running ones unchanged, which Serve leaves running
        as they are (same code version and options: no replica restarts)."""
        from stream.waiting import off_loop

        assert self.base is not None
        first = next(iter(self.apps))
        config = _serve_config(self.base, [first, model], local=self.local)
        name = app_names(config)[model]
        config["applications"] = [a for a in config["applications"] if a["name"] == name]
        self.deployed.append(name)  # a run that stops meanwhile deletes it with the others
        try:
            await off_loop(_deploy_one, config, self.deploy_timeout_s, timeout_s=self.deploy_timeout_s + 30)
        except Exception:
            with contextlib.suppress(Exception):  # nothing of it may linger (its groups hold ingest)
                await off_loop(_delete_apps_now, [name], timeout_s=60)
                self.deployed.remove(name)
            raise
        self.apps[model] = name


def _deploy_one(config: dict[str, Any], timeout_s: float) -> None:
    deploy(config, timeout_s=timeout_s)


def _delete_apps_now(names: list[str]) -> None:
    from ray import serve

    for name in names:
        serve.delete(name, _blocking=True)


def ray_stages(
    address: str | None = None, *, config_path: Path = CONFIG_PATH, deploy_timeout_s: float = 300.0
) -> StartStages:
    """The `StartStages` of ``framestream run`` (the ray runner): a local Ray, or the cluster at
    `address`, with the application deployed (or found running); on exit the application is
    deleted (its replicas drain) and a local Ray shut down."""
    target = _Target(address, config_path, deploy_timeout_s)

    @contextlib.asynccontextmanager
    async def start(setup: StageSetup) -> AsyncIterator[_RayStages]:
        settings, console = setup.settings, setup.console
        if address:
            console.print(
                "sources are opened by the ingest replica on whichever host of the cluster it runs: "
                "each must be readable there"
            )
        with contextlib.ExitStack() as stack:
            started = time.monotonic()
            replica_url = _redis_through_environment(stack, settings, setup.redis_url, address, console)
            token = _tokens_through_environment(stack, settings, address)
            _sink_secrets_through_environment(stack, settings)
            ours = _start_ray(address)
            stack.callback(_shutdown_ray if ours else _disconnect_ray)
            base = _pipeline_config(target, settings, replica_url)
            apps, deployed = _ensure_apps(target, base, setup.models, console, token, local=ours)
            stages = _RayStages(
                apps,
                base=base if deployed else None,
                local=ours,
                deploy_timeout_s=target.deploy_timeout_s,
                deployed=list(apps.values()) if deployed else [],
            )
            if deployed:  # at the end, with the applications of the models added meanwhile
                drain_s = settings.streams.drain_timeout_s + 5
                stack.callback(lambda: _delete_apps(list(stages.deployed), console, drain_s))
            console.print(f"Serve application running ({time.monotonic() - started:.1f} s to start)")
            try:
                yield stages
            finally:
                with on_stop_signal(lambda: None):  # this is the stop: a first signal lets it finish
                    stack.close()  # drain (delete the application) and stop Ray before the summary

    return start


def main(settings: Settings, request: RunRequest) -> int:
    """`framestream run --runner ray`: the ``ray`` entry point of ``framestream.runners``."""
    try:
        check_attached(request.address, request.redis or settings.redis.url, list(request.sources))
        if request.address and any(s.secret is not None for s in settings.sinks):
            raise FramestreamError(
                "a sink's `secret` cannot reach the replicas of an existing Ray cluster: set it in "
                "the cluster's environment and name the variable as the sink's secret_env"
            )
    except FramestreamError as e:
        Console(stderr=True).print(f"[red]framestream run: {e}[/red]")
        return 2
    return play(settings, request, ray_stages(request.address), runner="ray")
