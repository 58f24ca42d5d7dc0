"""One frozen settings model: YAML file + ``FRAMESTREAM_*`` environment overrides.

Read it once at the entry point (`load_settings`) and pass values down; nothing below the CLI and
the Ray deployments reads the environment. A setting has one name; a former name still works
with a DeprecationWarning (`RENAMED_VARIABLES`).
Nested sections use ``__`` in environment names: ``FRAMESTREAM_INFER__MAX_BATCH_SIZE=16``.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from stream.sinks.settings import SinkSettings, check_sink_names
from stream.zoo.remote_repository import is_repository_url
from stream.zoo.repository import DEFAULT_REPOSITORY

__all__ = [
    "AllowedSources",
    "ApiSettings",
    "IngestSettings",
    "InferSettings",
    "DeadLetterSettings",
    "ModelSettings",
    "PostprocessSettings",
    "RedisSettings",
    "Settings",
    "SinkSettings",
    "StreamSettings",
    "load_settings",
]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _word_list(value: object) -> object:
    """A list from the environment: a JSON list (``["a", "b"]``) or comma-separated words."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [word.strip() for word in text.split(",") if word.strip()]
    return value


MIN_TOKEN_CHARS = 16


class ApiSettings(_Section):
    """Who may use the HTTP API (``/v1``): bearer tokens in two scopes. No token configured = the API
    is open; `framestream run` then makes a random admin token for its run."""

    read_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="tokens for GET routes (results, sources, events, stages); comma-separated or a "
        f"JSON list in FRAMESTREAM_API__READ_TOKENS; each at least {MIN_TOKEN_CHARS} characters",
    )
    admin_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="tokens for every route (adding and removing sources, push-classify, and what "
        "read tokens may do); comma-separated or a JSON list in FRAMESTREAM_API__ADMIN_TOKENS",
    )

    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="addresses or CIDR ranges of reverse proxies whose X-Forwarded-For names the client "
        "for the rate limit; from any other peer the header is ignored (empty: trust no proxy)",
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="request line and headers, in bytes, above which a request gets 431"
    )
    max_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="request body of every route but POST /v1/classify (ingress.max_image_bytes), "
        "in bytes; larger gets 413",
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="time a client has to send a request body once its headers are in (408)"
    )
    max_uri_chars: int = Field(4096, ge=64, description="longest source uri POST /v1/sources accepts (413)")
    max_sources: int = Field(
        1000, ge=1, description="sources registered at once; POST /v1/sources past it gets 429"
    )
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        description="width x height of an image POST /v1/classify decodes, read from its header before "
        "decoding (413 above)",
    )
    max_feeds: int = Field(
        64,
        ge=1,
        description="SSE feeds (/v1/events, /v1/console/feed) open at once on one ingress replica (503)",
    )
    max_feeds_per_client: int = Field(
        8,
        ge=1,
        description="SSE feeds one token (or, without tokens, one client address) may hold open (429)",
    )
    feed_queue: int = Field(
        1024,
        ge=1,
        description="events buffered for one SSE client beyond one read of each stream it follows; a "
        "client that falls this far behind is dropped",
    )
    feed_max_s: float = Field(
        600.0,
        gt=0,
        description="an SSE feed ends after this long and the client reconnects (an EventSource does so "
        "by itself): bounds what a proxy buffers for a client that stopped reading",
    )

    @field_validator("read_tokens", "admin_tokens", "trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _word_list(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, proxies: list[str]) -> list[str]:
        import ipaddress

        for proxy in proxies:
            ipaddress.ip_network(proxy, strict=False)  # ValueError names the bad one
        return proxies

    @field_validator("read_tokens", "admin_tokens")
    @classmethod
    def _long_enough(cls, tokens: list[SecretStr]) -> list[SecretStr]:
        for i, token in enumerate(tokens):
            n = len(token.get_secret_value())
            if n < MIN_TOKEN_CHARS:  # the token itself is never shown, only its place and length
                raise ValueError(
                    f"token #{i + 1} has {n} characters, fewer than {MIN_TOKEN_CHARS}; make one with "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
                )
        return tokens

    @property
    def enabled(self) -> bool:
        return bool(self.read_tokens or self.admin_tokens)


class AllowedSources(_Section):
    """Which sources ``POST /v1/sources`` accepts (`framestream run --source` is not checked)."""

    schemes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["file", "replay", "http", "https", "rtsp", "rtsps", "rtmp"],
        description="source kinds the API accepts: 'file' (a path or file:PATH), URL schemes "
        "(rtsp, http, ...), plug-in prefixes (replay); add 'webcam' for webcam:N and /dev/videoN",
    )
    roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path(tempfile.gettempdir())],
        description="folders whose files (video files, image folders, replay files) the API may "
        "play, checked after resolving symlinks; paths must be absolute",
    )
    networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="address ranges (CIDR) a network source may reach although they are loopback, "
        "link-local, unspecified or cloud metadata (refused otherwise), e.g. 127.0.0.0/8",
    )

    @field_validator("schemes", "roots", "networks", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _word_list(value)

    @field_validator("schemes")
    @classmethod
    def _lower(cls, schemes: list[str]) -> list[str]:
        return [s.lower().rstrip(":/") for s in schemes]

    @field_validator("roots")
    @classmethod
    def _absolute(cls, roots: list[Path]) -> list[Path]:
        relative = [str(r) for r in roots if not r.is_absolute()]
        if relative:
            raise ValueError(f"roots must be absolute paths, got {relative}")
        return roots

    @field_validator("networks")
    @classmethod
    def _cidr(cls, networks: list[str]) -> list[str]:
        import ipaddress

        for net in networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as e:
                raise ValueError(f"networks: {net!r} is not an address range (CIDR): {e}") from e
        return networks


class RedisSettings(_Section):
    url: str = Field("auto", description="redis://, rediss:// URL, or 'auto' for a private redis-server")
    password: SecretStr | None = Field(None, description="overrides the URL's password when set")
    username: str | None = None
    aof: bool = Field(False, description="private server only: appendonly everysec")
    maxmemory_mb: int = Field(0, ge=0, description="private server only: 0 = no cap")
    cluster: bool | None = Field(
        None,
        description="Redis Cluster client: None = ask the server (INFO cluster), true/false = force",
    )

    def password_value(self) -> str | None:
        """The password itself, for a Redis client or server only: never log or dump it."""
        return self.password.get_secret_value() if self.password is not None else None


class StreamSettings(_Section):
    pipeline: str = "p"
    partitions: int = Field(
        1,
        ge=1,
        le=1024,
        description="streams per stage, each on its own hash tag (Redis Cluster slot); fixed when the "
        "pipeline is first created; a source goes to partition crc32(source_id) % partitions",
    )
    read_count: int = Field(64, ge=1)
    block_ms: int = Field(100, ge=1)
    claim_idle_ms: int = Field(5_000, ge=100)
    max_deliveries: int = Field(5, ge=1)
    max_len: int = Field(20_000, ge=100, description="approximate stream length kept (safe MINID trim)")
    drain_timeout_s: float = Field(10.0, gt=0)
    replica_acks: int = Field(
        0,
        ge=0,
        description="Redis replicas that must hold each publish/forward before it returns (WAIT); "
        "0 = asynchronous replication: a master killed before replicating loses its newest writes",
    )
    replica_ack_timeout_ms: int = Field(
        200,
        ge=1,
        description="longest a write waits for replica_acks replicas; a shortfall is logged and "
        "counted (framestream_replica_ack_shortfalls_total) and the write stands",
    )

    @model_validator(mode="before")
    @classmethod
    def _frame_codec_is_ingests(cls, data: Any) -> Any:
        if isinstance(data, dict) and "frame_codec" in data:
            raise ValueError(
                "streams.frame_codec is not a setting: how frames travel is ingest.encoding (raw | jpeg)"
            )
        return data


class IngestSettings(_Section):
    high_water: int = Field(
        256,
        ge=1,
        description="frames waiting in any stage (frames, tensors or scores stream) that pause file "
        "sources; enough to keep a few inference replicas fed, raise it when many share a pipeline; "
        "with queue_ms the bound on a smaller window",
    )
    queue_ms: int | None = Field(
        250,
        ge=0,
        description="a file source played flat out (not realtime) keeps about this long of the "
        "pipeline's measured drain rate on its way (frames/s x queue_ms), never fewer than keep "
        "inference busy (infer.max_batch_size x infer.inflight + one 32-frame chunk) nor more than "
        "high_water: "
        "frames wait less before they are classified; 0 or null = always high_water",
    )
    target_fps: float | None = Field(None, gt=0)
    every_nth: int = Field(1, ge=1)
    live_policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    live_queue: int = Field(8, ge=1, description="frames a live source buffers before dropping")
    thumbnail_interval_ms: int = Field(
        1_000,
        ge=0,
        description="at most one thumbnail per source this often: the JPEG bytes of a published frame, "
        "kept in Redis for the console (a JPEG frame's own bytes; a raw frame is encoded only then); "
        "0 = no thumbnails",
    )
    thumbnail_max_bytes: int = Field(
        1_048_576, ge=1024, description="frames larger than this are not kept as thumbnails"
    )
    thumbnail_ttl_s: int = Field(
        30, ge=1, description="a thumbnail expires this long after the source's last one (stopped sources)"
    )
    jpeg_quality: int = Field(90, ge=1, le=100)
    encoding: Literal["jpeg", "raw"] = Field(
        "raw",
        description="how frames travel in Redis: 'raw' = uint8 RGB pixels, made by ingest to the "
        "models' input when they share one (no JPEG encode or decode, no second resize: the "
        "least CPU, 49 KB a v1-0.25-128 frame, 150 KB a v2-1.0-224 one); 'jpeg' = JPEG at the "
        "size the models need (about 13 KB a frame: for thin links between hosts)",
    )
    straight_to_tensors: bool = Field(
        True,
        description="a raw frame ingest made to the one input every reading model shares goes "
        "straight into those models' tensors streams (there is nothing left for preprocess to do "
        "to it): one copy through Redis and preprocess's work less a frame. Frames in JPEG, "
        "frames for models with other inputs and frames published by others still go through "
        "preprocess; false = every frame through preprocess",
    )
    frame_short_side_px: int | Literal["auto"] | None = Field(
        "auto",
        description=(
            "make decoded frames smaller before publishing, keeping the shorter side >= this "
            "(video planes are halved while they stay that large, other pixels scaled to it); "
            "'auto' = the largest size any model reading the frames stream needs (JPEG sources "
            "pass on untouched); 0 or None = keep every frame as it is"
        ),
    )

    reconnect_initial_backoff_s: float = Field(
        0.5,
        gt=0,
        description="live sources (RTSP/HTTP/webcam): the first wait before reopening a lost or "
        "stalled stream; each failed attempt doubles the bound, each wait is random below it (jitter)",
    )
    reconnect_max_backoff_s: float = Field(
        10.0,
        gt=0,
        description="live sources: the cap on the wait between reconnect attempts (they never stop)",
    )
    stall_after_s: float = Field(
        10.0,
        gt=0,
        description="live sources: connected but no frame for this long = stalled: the read is cut "
        "off, the source is marked stalled and reconnects",
    )
    open_timeout_s: float = Field(
        10.0,
        gt=0,
        description="live network sources: the most one attempt to open the stream may take",
    )
    allowed_sources: AllowedSources = Field(
        default_factory=lambda: AllowedSources(),
        description="what POST /v1/sources may open (schemes, file roots, address ranges)",
    )

    @field_validator("frame_short_side_px")
    @classmethod
    def _sane_short_side(cls, v: int | str | None) -> int | str | None:
        if v == 0:
            return None
        if isinstance(v, int) and v < 16:
            raise ValueError(f"frame_short_side_px must be >= 16, 'auto' or 0 (keep), got {v}")
        return v


class InferSettings(_Section):
    max_batch_size: int = Field(16, ge=1)
    max_wait_ms: int = Field(10, ge=0)
    inflight: int = Field(2, ge=1, description="batched requests in flight")
    performance_hint: Literal["THROUGHPUT", "LATENCY"] = "THROUGHPUT"
    num_requests: int = Field(0, ge=0, description="0 = OpenVINO's optimal number")
    batch_tuning: bool = Field(
        True,
        description="at start, measure each padded batch size up to max_batch_size once per model "
        "and machine, and use the smallest about as fast as the best (remembered in the model cache)",
    )
    static_batches: bool = Field(
        True,
        description="also compile the model for each padded batch size (10-20% less CPU per frame; "
        "compiled once, then loaded from the compiled-model cache)",
    )


class PostprocessSettings(_Section):
    top_k: int = Field(5, ge=1)
    ema_alpha: float = Field(0.3, gt=0, le=1)
    hysteresis_frames: int = Field(3, ge=1)
    reorder_max_frames: int = Field(64, ge=1)
    reorder_max_wait_ms: int = Field(2_000, ge=0)
    replicas: int = Field(
        1,
        ge=1,
        description="postprocess processes per model that the processes runner starts (they share "
        "the partitions, a fair share each; more than streams.partitions only stand by); the Ray "
        "app autoscales Postprocess instead",
    )
    save_state: bool = Field(
        True,
        description="write each source's reorder/smoothing state with every commit and load it when "
        "a replica takes a partition over, so the new owner continues exactly; false: a new owner "
        "starts every source of the partition afresh (smoothing restarts, the reorder buffer waits "
        "for seq 0)",
    )


class DeadLetterSettings(_Section):
    max_len: int = Field(
        10_000, ge=1, description="dead letters kept per partition; the oldest go first (MAXLEN trim)"
    )
    max_age_s: float = Field(
        7 * 86_400.0, gt=0, description="dead letters older than this are deleted (MINID trim)"
    )


class ModelSettings(_Section):
    default: str = "mobilenet-v2-1.0-224-quant"
    weights_dir: Path | None = Field(
        None,
        description="a folder holding model files (FRAMESTREAM_MODELS__WEIGHTS_DIR; "
        "FRAMESTREAM_WEIGHTS_DIR is its former name); none: the model cache, then a synthetic stand-in",
    )
    cache_dir: Path = Path.home() / ".cache" / "framestream" / "models"
    repository: Path | str = Field(
        DEFAULT_REPOSITORY,
        description="the model repository: a folder of <name>/<version>/ folders of your own "
        "classifiers, or the https:// URL of such a folder's archive ending in #sha256=<hex> "
        "(FRAMESTREAM_MODELS__REPOSITORY); the built-in seeds ship with the package",
    )
    poll_s: float = Field(
        5.0,
        gt=0,
        description="how often every Infer replica reads which version of its model serves and which "
        "runs as a shadow (the repository's serving.yml); a change is loaded, warmed and swapped in "
        "between two batches (FRAMESTREAM_MODELS__POLL_S)",
    )

    @field_validator("repository", mode="before")
    @classmethod
    def _folder_unless_url(cls, value: object) -> object:
        if isinstance(value, str) and not is_repository_url(value):
            return Path(value)
        return value

    @field_validator("weights_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value  # FRAMESTREAM_MODELS__WEIGHTS_DIR= (empty): no folder


RENAMED_VARIABLES = {"FRAMESTREAM_WEIGHTS_DIR": ("models", "weights_dir")}
"""Former names of settings, still read (with a DeprecationWarning): old name -> (section, field)."""
# Python hides a DeprecationWarning raised outside __main__; the one who must see this one is the
# user whose shell sets the old name, so it is shown (once per place) like any other warning
warnings.filterwarnings("default", message=r"FRAMESTREAM_\w+ is deprecated", category=DeprecationWarning)


class _RenamedVariables(PydanticBaseSettingsSource):
    """`RENAMED_VARIABLES` from the environment, below the settings' own names."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # the whole mapping comes from __call__

    def __call__(self) -> dict[str, Any]:
        out: dict[str, dict[str, str]] = {}
        for old, (section, name) in RENAMED_VARIABLES.items():
            value = os.environ.get(old)
            if value:  # empty = unset, as it always was
                new = f"FRAMESTREAM_{section.upper()}__{name.upper()}"
                warnings.warn(f"{old} is deprecated: set {new} instead", DeprecationWarning, stacklevel=2)
                out.setdefault(section, {})[name] = value
        return out


class Settings(BaseSettings):
    """Everything configurable, with defaults for the embedded (laptop) mode."""

    # hide_input_in_errors: a rejected value may be a secret (an API token, a Redis password), and
    # replicas log these errors; our own messages name what was wrong without repeating secrets
    model_config = SettingsConfigDict(
        env_prefix="FRAMESTREAM_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
    )

    redis: RedisSettings = RedisSettings()
    streams: StreamSettings = StreamSettings()
    ingest: IngestSettings = IngestSettings()
    infer: InferSettings = InferSettings()
    postprocess: PostprocessSettings = PostprocessSettings()
    models: ModelSettings = ModelSettings()
    dead_letters: DeadLetterSettings = DeadLetterSettings()
    api: ApiSettings = ApiSettings()
    sinks: list[SinkSettings] = Field(
        default_factory=list,
        description="where results (events, segments) are delivered at least once (docs/sinks.md)",
    )

    @field_validator("sinks")
    @classmethod
    def _unique_sinks(cls, sinks: list[SinkSettings]) -> list[SinkSettings]:
        return check_sink_names(sinks)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            _RenamedVariables(settings_cls),
        ]
        if settings_cls.model_config.get("yaml_file"):
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)

    def dump_without_secrets(self) -> dict[str, Any]:
        """These settings as JSON-ready values for other processes (replicas, stage processes),
        without any secret: a secret (`SecretStr`) dumps as ``**********``, which read back would
        replace the real one. Secrets travel through the environment instead."""
        dumped = self.model_dump(mode="json", exclude=_secret_fields(self))
        return {name: value for name, value in dumped.items() if value not in ({}, [])}


def _secret_fields(model: BaseModel) -> dict[str, Any]:
    """`model_dump`'s ``exclude`` for every secret field of `model`, its sections and the models
    of its lists (the sinks)."""
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            inner = _secret_fields(value)
            if inner:
                out[name] = inner
        elif isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
            per_item = {i: _secret_fields(v) for i, v in enumerate(value) if isinstance(v, BaseModel)}
            per_item = {i: inner for i, inner in per_item.items() if inner}
            if per_item:
                out[name] = per_item
        elif _holds_secret(field.annotation):
            out[name] = True
    return out


def _holds_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_holds_secret(arg) for arg in get_args(annotation))


def load_settings(yaml_file: Path | None = None, **overrides: object) -> Settings:
    """Settings from `yaml_file` (if any), then env (``FRAMESTREAM_*``), then `overrides`."""
    if yaml_file is not None and not Path(yaml_file).is_file():
        from stream.errors import ConfigError

        raise ConfigError(f"config file {yaml_file} does not exist")
    if yaml_file is None:
        return Settings(**overrides)  # type: ignore[arg-type]

    class _FromFile(Settings):
        model_config = SettingsConfigDict(yaml_file=yaml_file)

    return _FromFile(**overrides)  # type: ignore[arg-type]
