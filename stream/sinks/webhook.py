"""The webhook sink kind: POST each batch as a JSON array to the sink's `url`.

Each element is ``{"key": <idempotency key>, "kind": "results"|"events"|"segments", "item": {...}}``
where ``item`` is the object a ``framestream run --results`` JSONL line holds (for results). With a
secret, ``X-Framestream-Signature: sha256=<hex>`` is the HMAC-SHA256 of the exact body bytes under
it, so the receiver can check the batch came from this pipeline. A 2xx reply confirms the batch;
408, 429, 5xx and connection errors are retryable; any other status is not (sending the same
body again cannot succeed).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Sequence

import httpx

from stream.sinks.destination import DeliveryError, SinkItem
from stream.sinks.settings import SinkSettings

__all__ = ["SIGNATURE_HEADER", "WebhookDestination", "build", "sign", "webhook_body"]

SIGNATURE_HEADER = "X-Framestream-Signature"
# httpx logs every request's URL at INFO; a webhook URL may carry credentials, and one line per
# batch says nothing the sink metrics do not
logging.getLogger("httpx").setLevel(logging.WARNING)
_RETRYABLE = {408, 429}


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for `body`: ``sha256=`` and the HMAC-SHA256 hex digest."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(items: Sequence[SinkItem]) -> bytes:
    """The JSON array a webhook receives for `items` (compact, UTF-8)."""
    array = [{"key": item.key, "kind": item.kind, "item": dict(item.body)} for item in items]
    return json.dumps(array, separators=(",", ":"), default=str).encode()


class WebhookDestination:
    """POSTs batches with one `httpx.AsyncClient` (kept alive between sends)."""

    kind = "webhook"

    def __init__(self, sink: SinkSettings) -> None:
        if sink.url is None:
            raise ValueError("kind webhook needs url (http:// or https://)")
        self.name = sink.name
        self.url = sink.url
        self.secret = sink.secret_value()
        self.timeout_s = sink.timeout_s
        self.verify_tls = sink.verify_tls
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout_s, verify=self.verify_tls, follow_redirects=False, trust_env=False
            )

    async def send(self, items: Sequence[SinkItem]) -> None:
        if not items:
            return
        await self.start()
        assert self._client is not None
        body = webhook_body(items)
        headers = {"Content-Type": "application/json", "X-Framestream-Sink": self.name}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        try:
            reply = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as e:  # connection refused or reset, timeout, TLS failure
            raise DeliveryError(f"{type(e).__name__}: {e or 'no reply'}") from e
        if 200 <= reply.status_code < 300:
            return
        status = reply.status_code
        retryable = status in _RETRYABLE or status >= 500
        raise DeliveryError(f"HTTP {status} from the webhook", retryable=retryable)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):  # closing never raises (Destination)
                await client.aclose()


def build(sink: SinkSettings) -> WebhookDestination:
    """The entry point of kind ``webhook``."""
    return WebhookDestination(sink)
