"""One frozen settings model: YAML file + ``FRAMESTREAM_*`` environment overrides.

Read it once at the entry point (`load_settings`) and pass values down; nothing below the CLI and
the Ray deployments reads the environment.
Nested sections use ``__`` in environment names: ``FRAMESTREAM_INFER__MAX_BATCH_SIZE=16``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

__all__ = [
    "IngestSettings",
    "InferSettings",
    "DeadLetterSettings",
    "ModelSettings",
    "PostprocessSettings",
    "RedisSettings",
    "Settings",
    "StreamSettings",
    "load_settings",
]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RedisSettings(_Section):
    url: str = Field("auto", description="redis://, rediss:// URL, or 'auto' for a private redis-server")
    password: str | None = Field(None, description="overrides the URL's password when set")
    username: str | None = None
    aof: bool = Field(False, description="private server only: appendonly everysec")
    maxmemory_mb: int = Field(0, ge=0, description="private server only: 0 = no cap")
    cluster: bool | None = Field(
        None,
        description="Redis Cluster client: None = ask the server (INFO cluster), true/false = force",
    )


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


class IngestSettings(_Section):
    high_water: int = Field(
        256,
        ge=1,
        description="frames waiting in any stage (frames, tensors or scores stream) that pause file "
        "sources; enough to keep a few inference replicas fed, raise it when many share a pipeline",
    )
    target_fps: float | None = Field(None, gt=0)
    every_nth: int = Field(1, ge=1)
    live_policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    live_queue: int = Field(8, ge=1, description="frames a live source buffers before dropping")
    thumbnail_interval_ms: int = Field(
        1_000,
        ge=0,
        description="at most one thumbnail per source this often: the JPEG bytes of a published frame, "
        "kept in Redis for the console (no extra encode; raw encoding has none); 0 = no thumbnails",
    )
    thumbnail_max_bytes: int = Field(
        1_048_576, ge=1024, description="frames larger than this are not kept as thumbnails"
    )
    thumbnail_ttl_s: int = Field(
        30, ge=1, description="a thumbnail expires this long after the source's last one (stopped sources)"
    )
    jpeg_quality: int = Field(90, ge=1, le=100)
    encoding: Literal["jpeg", "raw"] = "jpeg"
    frame_short_side_px: int | Literal["auto"] | None = Field(
        "auto",
        description=(
            "make decoded frames smaller before publishing, keeping the shorter side >= this "
            "(video planes are halved while they stay that large, other pixels scaled to it); "
            "'auto' = the largest size any model reading the frames stream needs (JPEG sources "
            "pass on untouched); 0 or None = keep every frame as it is"
        ),
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
    weights_dir: Path | None = None
    cache_dir: Path = Path.home() / ".cache" / "framestream" / "models"


class Settings(BaseSettings):
    """Everything configurable, with defaults for the embedded (laptop) mode."""

    model_config = SettingsConfigDict(
        env_prefix="FRAMESTREAM_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    redis: RedisSettings = RedisSettings()
    streams: StreamSettings = StreamSettings()
    ingest: IngestSettings = IngestSettings()
    infer: InferSettings = InferSettings()
    postprocess: PostprocessSettings = PostprocessSettings()
    models: ModelSettings = ModelSettings()
    dead_letters: DeadLetterSettings = DeadLetterSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("yaml_file"):
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


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
