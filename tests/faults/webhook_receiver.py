"""A webhook receiver for the sink tests: a real HTTP server on 127.0.0.1 that checks each
request's HMAC signature and keeps every item it accepted, in arrival order.

Its `mode` says how it answers: ``ok`` (200), ``error`` (500, nothing kept), ``slow`` (waits
`delay_s`, then 200). `down` closes its listening socket (connections are refused) and `up`
opens it again on the same port.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Received", "WebhookReceiver"]


@dataclass(frozen=True)
class Received:
    """One item as it arrived: its idempotency key, kind, source, seq and the whole item."""

    key: str
    kind: str
    source: str
    seq: int | None
    item: dict[str, Any]


@dataclass
class WebhookReceiver:
    secret: str
    port: int = 0
    mode: str = "ok"
    delay_s: float = 0.0
    items: list[Received] = field(default_factory=list)
    bad_signatures: int = 0
    requests: int = 0
    on_batch: Callable[[WebhookReceiver], None] | None = None
    """Called after each accepted batch (a test switches modes from here)."""
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.handle(self, body)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            self.requests += 1
            mode, delay = self.mode, self.delay_s
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Framestream-Signature", "")):
            with self._lock:
                self.bad_signatures += 1
            self._reply(request, 401)
            return
        if mode == "error":
            self._reply(request, 500)
            return
        if mode == "slow":
            time.sleep(delay)
        batch = [
            Received(e["key"], e["kind"], e["item"]["source"], e["item"].get("seq"), e["item"])
            for e in json.loads(body)
        ]
        with self._lock:
            self.items += batch
        self._reply(request, 200)
        if self.on_batch is not None:
            self.on_batch(self)

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int) -> None:
        request.send_response(status)
        request.send_header("Content-Length", "0")
        request.end_headers()

    def keys(self) -> set[str]:
        with self._lock:
            return {r.key for r in self.items}

    def first_arrivals(self, source: str) -> list[int]:
        """The seqs of `source`'s results in the order they first arrived."""
        seen: set[str] = set()
        order = []
        with self._lock:
            for r in self.items:
                if r.source == source and r.kind == "results" and r.key not in seen:
                    seen.add(r.key)
                    order.append(int(r.seq or 0))
        return order
