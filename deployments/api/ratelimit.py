"""Per-client token buckets for the ingress (pure: the caller passes `now_s`), and who the client
is: the peer's address, or what ``X-Forwarded-For`` says when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RateLimiter", "TrustedProxies", "retry_after_s"]


class TrustedProxies:
    """The reverse proxies (``api.trusted_proxies``: addresses or CIDR ranges) whose
    ``X-Forwarded-For`` names the client; any other peer is the client itself, whatever it sends."""

    def __init__(self, networks: Sequence[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in n for n in self.networks)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client to rate-limit: from a trusted peer, the right-most address of
        `forwarded_for` that is not itself a trusted proxy (the ones left of it could be forged
        by the client); otherwise `peer`."""
        if not forwarded_for or not self._trusted(peer):
            return peer
        client = peer
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return client  # not an address: nothing left of it can be believed
            client = hop
            if not self._trusted(hop):
                return hop
        return client


def retry_after_s(wait_s: float) -> int:
    """The `Retry-After` value for a wait of `wait_s` seconds: whole seconds, rounded up, >= 1.

    Rounding to nearest would tell a client that must wait 0.4 s to retry after 0 s.
    """
    return max(1, math.ceil(wait_s))


@dataclass
class _Bucket:
    tokens: float
    updated_s: float


class RateLimiter:
    """Allow each client `rate_per_s` requests per second on average, bursts up to `burst`.

    Keeps at most `max_clients` buckets; the least recently seen are forgotten first (a forgotten
    client starts again with a full bucket, which errs on the side of serving).
    """

    def __init__(self, rate_per_s: float, burst: int, max_clients: int = 10_000) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, client: str, now_s: float) -> float:
        """0.0 when `client` may go ahead now (one token taken), else seconds until it may."""
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now_s)
        else:
            elapsed = max(0.0, now_s - bucket.updated_s)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate_per_s)
            bucket.updated_s = now_s
        self._buckets[client] = bucket  # re-insert: dict order = least recently seen first
        if len(self._buckets) > self.max_clients:
            del self._buckets[next(iter(self._buckets))]
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_per_s
