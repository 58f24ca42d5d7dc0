"""The `mqtt` sink kind: each item is one QoS 1 PUBLISH, and `send` returns only once the broker
sent a PUBACK for every one of them (aiomqtt's `publish` awaits paho's `on_publish`, which paho calls
for QoS 1 when the PUBACK arrives).

Topics come from a template (`{source}`, `{model}`, `{kind}`); each value is escaped so that it
stays one topic level and never acts as a wildcard. The last item of each topic in a batch is also
published, retained, on `{topic}/last`, so a dashboard that subscribes late sees the current label
at once. The payload is the item's JSON body with its idempotency key added as `"key"`.

The connection is opened on `start` (or the first `send`) and kept; a failure drops it, and the
next `send` connects again: no retries here, the delivery loop decides when to call again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import ssl
import string
from collections.abc import Iterable, Sequence
from urllib.parse import unquote, urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from stream.errors import ConfigError
from stream.sinks.destination import DeliveryError, SinkItem
from stream.sinks.settings import SinkSettings

__all__ = [
    "DEFAULT_TOPIC",
    "LAST_SUFFIX",
    "MqttDestination",
    "build",
    "escape_topic_level",
    "topic_for",
]

DEFAULT_TOPIC = "framestream/{source}/{model}"
LAST_SUFFIX = "/last"
"""Appended to an item's topic for the retained copy of the last item published there."""

_PLACEHOLDERS = frozenset({"source", "model", "kind"})
_ESCAPED = {c: f"%{ord(c):02X}" for c in "%/+#$\x00"}
"""`/` separates levels, `+` and `#` are wildcards, a leading `$` marks broker topics, NUL is not
allowed in a topic; `%` is escaped so that percent-decoding gives the value back."""
_REFUSED_FOR_GOOD = frozenset({1, 2, 4, 5, 132, 133, 134, 135, 138, 140})
"""CONNACK codes (MQTT 3.1.1, and paho's MQTT 5 equivalents) that a retry cannot change: bad
protocol version, client id rejected, bad username or password, not authorised, banned, bad auth
method. "Server unavailable" (3, 136) is not among them."""


def escape_topic_level(value: str) -> str:
    """`value` as one literal topic level: `%`, `/`, `+`, `#`, `$` and NUL percent-encoded
    (`cam/1` -> `cam%2F1`); `urllib.parse.unquote` reverses it."""
    return "".join(_ESCAPED.get(c, c) for c in value)


def topic_for(template: str, item: SinkItem) -> str:
    """The topic `item` is published on: `template` with its placeholders escaped and filled."""
    model = item.body.get("model")
    return template.format(
        source=escape_topic_level(item.source),
        model=escape_topic_level("" if model is None else str(model)),
        kind=escape_topic_level(item.kind),
    )


def _check_template(template: str) -> str:
    fields = []
    try:
        for literal, field, spec, conversion in string.Formatter().parse(template):
            if any(c in literal for c in "+#\x00"):
                raise ConfigError(f"mqtt topic {template!r}: no wildcards (+, #) or NUL in a topic")
            if field is not None:
                if field not in _PLACEHOLDERS or spec or conversion:
                    raise ConfigError(
                        f"mqtt topic {template!r}: unknown placeholder {{{field}}}; "
                        f"use {{source}}, {{model}}, {{kind}}"
                    )
                fields.append(field)
    except ValueError as e:
        raise ConfigError(f"mqtt topic {template!r}: {e}") from e
    if not template or template.startswith("$"):
        raise ConfigError(f"mqtt topic {template!r}: must be non-empty and not start with $")
    return template


def _payload(item: SinkItem) -> bytes:
    # the same encoding as `framestream run --results` lines, plus the idempotency key
    return json.dumps({**item.body, "key": item.key}, separators=(",", ":"), default=str).encode()


def _messages(template: str, items: Sequence[SinkItem]) -> list[tuple[str, bytes, bool]]:
    """(topic, payload, retain) in publish order: every item, then the last one per topic, retained
    on `{topic}/last`."""
    out: list[tuple[str, bytes, bool]] = []
    last: dict[str, bytes] = {}
    for item in items:
        topic, payload = topic_for(template, item), _payload(item)
        out.append((topic, payload, False))
        last.pop(topic, None)  # keep the topics in the order their last items came
        last[topic] = payload
    out += [(topic + LAST_SUFFIX, payload, True) for topic, payload in last.items()]
    return out


def _connect_retryable(error: aiomqtt.MqttError) -> bool:
    rc = getattr(error, "rc", None)
    code = getattr(rc, "value", rc)
    return not (isinstance(error, MqttConnectError) and code in _REFUSED_FOR_GOOD)


async def _until_lost(client: aiomqtt.Client) -> None:
    # Nothing is subscribed, so the iterator yields nothing: it ends (raises) only when the
    # connection does. aiomqtt leaves a pending publish waiting for its timeout when the connection
    # drops; this is what lets `send` fail at once instead.
    async for _ in client.messages:
        pass


class MqttDestination:
    """Publishes items at QoS 1 to an MQTT broker (`mqtt://` or `mqtts://`; TLS verified against
    the system's CAs, or the file `SSL_CERT_FILE` names, unless `verify_tls` is False)."""

    kind = "mqtt"

    def __init__(
        self,
        *,
        name: str,
        url: str,
        password: str | None = None,
        topic: str | None = None,
        timeout_s: float = 10.0,
        verify_tls: bool = True,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ConfigError(f"sink {name!r}: url {url!r} must start with mqtt:// or mqtts://")
        if parts.password is not None:
            raise ConfigError(f"sink {name!r}: put the MQTT password in the sink's secret, not in its url")
        try:
            port = parts.port
        except ValueError as e:
            raise ConfigError(f"sink {name!r}: url {url!r}: {e}") from e
        if not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise ConfigError(f"sink {name!r}: url {url!r} must be mqtt[s]://[user@]host[:port]")
        if not timeout_s > 0:
            raise ConfigError(f"sink {name!r}: timeout_s must be > 0, got {timeout_s}")
        self.name = name
        self.tls = parts.scheme == "mqtts"
        self.host = parts.hostname
        self.port = port or (8883 if self.tls else 1883)
        self.username = unquote(parts.username) if parts.username else None
        self.password = password
        self.topic = _check_template(topic or DEFAULT_TOPIC)
        self.timeout_s = timeout_s
        self.verify_tls = verify_tls
        self._client: aiomqtt.Client | None = None
        self._lost: asyncio.Task[None] | None = None

    def _where(self) -> str:
        return f"mqtt sink {self.name!r} ({'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port})"

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()  # the system's CAs, or SSL_CERT_FILE's
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def start(self) -> None:
        """Connect now, so that a wrong address or password shows at start-up."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._connection()
        except TimeoutError as e:
            await self._drop()
            raise DeliveryError(f"{self._where()}: no CONNACK within {self.timeout_s:g} s") from e

    async def _connection(self) -> tuple[aiomqtt.Client, asyncio.Task[None]]:
        if self._client is not None and self._lost is not None and not self._lost.done():
            return self._client, self._lost
        await self._drop()
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            timeout=self.timeout_s,
            tls_context=self._tls_context() if self.tls else None,
        )
        # a whole batch is in flight at once on purpose: no warning per publish past aiomqtt's 10
        client.pending_calls_threshold = 1 << 30
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as e:
            raise DeliveryError(
                f"{self._where()}: cannot connect: {e}", retryable=_connect_retryable(e)
            ) from e
        self._client, self._lost = client, asyncio.create_task(_until_lost(client))
        return client, self._lost

    async def send(self, items: Sequence[SinkItem]) -> None:
        """Publish every item (and the retained last ones); return once each has its PUBACK."""
        if not items:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._publish(_messages(self.topic, items))
        except TimeoutError as e:
            await self._drop()
            raise DeliveryError(
                f"{self._where()}: no PUBACK for every item within {self.timeout_s:g} s"
            ) from e

    async def _publish(self, messages: Iterable[tuple[str, bytes, bool]]) -> None:
        client, lost = await self._connection()
        # one task per message, created in order: paho numbers and writes them in that order, and
        # keeps at most its inflight window unacknowledged, queueing the rest in order
        publishes = asyncio.gather(
            *(client.publish(t, p, qos=1, retain=r, timeout=math.inf) for t, p, r in messages)
        )
        try:
            await asyncio.wait((publishes, lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not publishes.done():
                publishes.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await publishes
        if publishes.cancelled() or publishes.exception() is not None:
            why = lost.exception() if lost.done() and not lost.cancelled() else None
            why = why or (None if publishes.cancelled() else publishes.exception())
            await self._drop()
            raise DeliveryError(f"{self._where()}: connection lost before every PUBACK arrived: {why}")

    async def _drop(self) -> None:
        client, lost = self._client, self._lost
        self._client = self._lost = None
        if lost is not None:
            lost.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await lost
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout_s):
                    await client.__aexit__(None, None, None)

    async def close(self) -> None:
        """Disconnect (DISCONNECT, then close the socket); never raises."""
        with contextlib.suppress(Exception):
            await self._drop()


def build(sink: SinkSettings) -> MqttDestination:
    """The `mqtt` entry point of `framestream.sinks`: a destination from a sink's settings."""
    return MqttDestination(
        name=sink.name,
        url=sink.url or "",
        password=sink.secret_value(),
        topic=sink.topic,
        timeout_s=sink.timeout_s,
        verify_tls=sink.verify_tls,
    )
