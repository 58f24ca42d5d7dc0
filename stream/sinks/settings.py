"""What one sink is (`SinkSettings`): its kind, destination, secret, what it sends, filters, batching,
retries and backlog limit. `Settings.sinks` holds a list of them (the ``sinks:`` list of the
settings YAML); docs/sinks.md describes every field.

Checked when the settings are read: the name, the URL's scheme for the kind. Whether a kind
exists and a secret given through `secret_env` is there are checked when the sinks are built
(`stream.sinks.registry.build_destination`, at the start of `framestream run` and of the sinks
process): plug-in kinds come from entry points.
"""

from __future__ import annotations

import os
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from stream.sinks.destination import ITEM_KINDS, ItemKind

__all__ = ["URL_SCHEMES", "SinkSettings", "check_sink_names", "secret_variable"]

_NAME = re.compile(r"[a-z0-9-]{1,63}")

_SEND: tuple[ItemKind, ...] = ("results",)

URL_SCHEMES: dict[str, tuple[str, ...]] = {
    "webhook": ("http", "https"),
    "mqtt": ("mqtt", "mqtts"),
}
"""The URL schemes of the built-in kinds that take a `url` (postgres takes a `dsn`)."""


class SinkSettings(BaseModel):
    """One sink: results (and events, segments) of the pipeline delivered to the user's system."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: str = Field(description="unique, [a-z0-9-]+; names the sink's consumer group sink:<name>")
    kind: str = Field(description="webhook, mqtt, postgres or a plug-in kind (entry point framestream.sinks)")
    url: str | None = Field(None, description="webhook: http(s)://...; mqtt: mqtt://host:port or mqtts://")
    dsn: str | None = Field(
        None, description="postgres: postgresql://host/db (put the password in secret, not here)"
    )
    secret: SecretStr | None = Field(
        None, description="webhook: HMAC key; mqtt: password; never logged or returned"
    )
    secret_env: str | None = Field(None, description="name of an environment variable holding the secret")
    send: list[ItemKind] = Field(default_factory=lambda: list(_SEND), description="results, events, segments")
    sources: str = Field("*", description="glob over source ids; only matching sources are sent")
    models: list[str] | None = Field(None, description="only these models (None: all)")
    min_score: float | None = Field(None, ge=0, le=1, description="results only: top-1 score at least this")
    topic: str = Field("framestream/{source}/{model}", description="mqtt: the topic of each item")
    table_prefix: str = Field("framestream_", description="postgres: prefix of the tables written")
    max_items: int = Field(100, ge=1, le=10_000, description="items per send at most")
    max_wait_ms: int = Field(200, ge=0, description="a batch waits this long to fill before it is sent")
    timeout_s: float = Field(10.0, gt=0, description="longest one send may take")
    verify_tls: bool = Field(True, description="check the destination's TLS certificate")
    max_attempts: int = Field(10, ge=1, description="sends of one batch before its items become dead letters")
    max_age_s: float = Field(600.0, gt=0, description="an item older than this is dead-lettered, not retried")
    backoff_initial_s: float = Field(0.5, gt=0, description="first wait before a retry (full jitter)")
    backoff_max_s: float = Field(30.0, gt=0, description="cap on the wait between retries")
    max_backlog: int = Field(100_000, ge=1, description="entries waiting for this sink before on_full")
    on_full: Literal["pause", "drop"] = Field(
        "pause", description="pause: file sources wait; drop: the oldest waiting items become dead letters"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError(f"sink name {name!r} must be 1-63 characters of a-z, 0-9 and '-'")
        return name

    @field_validator("send")
    @classmethod
    def _send(cls, send: list[str]) -> list[str]:
        if not send:
            raise ValueError(f"send must name at least one of {', '.join(ITEM_KINDS)}")
        return list(dict.fromkeys(send))

    @model_validator(mode="after")
    def _destination(self) -> SinkSettings:
        schemes = URL_SCHEMES.get(self.kind)
        if schemes is not None:
            parsed = urlsplit(self.url or "")
            if parsed.scheme not in schemes or not parsed.hostname:
                raise ValueError(
                    f"sink {self.name!r}: url must be {' or '.join(s + '://host...' for s in schemes)} "
                    f"for kind {self.kind}, got {_shown(self.url)}"
                )
            try:
                parsed.port  # noqa: B018 - a bad port raises here
            except ValueError as e:
                raise ValueError(f"sink {self.name!r}: url has a bad port: {e}") from None
        if self.kind == "postgres" and self.dsn is None:
            raise ValueError(f"sink {self.name!r}: kind postgres needs dsn (postgresql://...)")
        if self.secret is not None and self.secret_env is not None:
            raise ValueError(f"sink {self.name!r}: give secret or secret_env, not both")
        return self

    def missing_secret(self) -> str | None:
        """Why the secret cannot be had (`secret_env` names a variable that is not set), or None.
        Checked where the sink is built (`stream.sinks.registry`), not when settings are read:
        other stages read the same settings without the sinks' secrets in their environment."""
        if self.secret_env is not None and not os.environ.get(self.secret_env):
            return (
                f"sink {self.name!r}: secret_env names {self.secret_env}, which is not set in the environment"
            )
        return None

    def secret_value(self) -> str | None:
        """The secret itself (from `secret` or the `secret_env` variable), for the destination
        only: never log or return it."""
        if self.secret is not None:
            return self.secret.get_secret_value()
        if self.secret_env is not None:
            return os.environ.get(self.secret_env) or None
        return None

    @property
    def group(self) -> str:
        """The sink's consumer group on every stream it reads."""
        return f"sink:{self.name}"

    def public(self) -> dict[str, object]:
        """These settings for an API reply or a log line: without the secret."""
        return self.model_dump(mode="json", exclude={"secret"})


def _shown(url: str | None) -> str:
    """A URL for an error message, without user info (it may hold a password)."""
    if not url:
        return "nothing"
    parsed = urlsplit(url)
    host = parsed.netloc.rpartition("@")[2]
    return repr(f"{parsed.scheme}://{host}{parsed.path}" if parsed.scheme else url[:40])


def secret_variable(sink: str) -> str:
    """The environment variable a runner hands sink `sink`'s secret to the process delivering it
    through (the settings it writes for that process name it as the sink's `secret_env`)."""
    return "FRAMESTREAM_SINK_SECRET_" + sink.upper().replace("-", "_")


def check_sink_names(sinks: list[SinkSettings]) -> list[SinkSettings]:
    """`sinks` when every name is unique, else ValueError naming the repeated ones."""
    seen: set[str] = set()
    twice = sorted({s.name for s in sinks if s.name in seen or seen.add(s.name)})  # type: ignore[func-returns-value]
    if twice:
        raise ValueError(f"sink names must be unique: {', '.join(twice)} used more than once")
    return sinks
