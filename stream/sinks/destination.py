"""What a sink's destination must do: take a batch of items, return only once the destination
confirmed all of them (HTTP 2xx, MQTT PUBACK at QoS 1, a committed SQL transaction), else raise
`DeliveryError`. The delivery loop acks entries in Redis only after `send` returned, so delivery is
at least once; each item's `key` lets the receiver (or an upsert) drop repeats.

A destination never retries on its own: retries, backoff, dead letters and backlog limits belong to
the delivery loop, so every kind behaves the same way when its destination is down.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from stream.errors import FramestreamError

__all__ = ["ITEM_KINDS", "DeliveryError", "Destination", "ItemKind", "SinkItem", "item_key"]

ItemKind = Literal["results", "events", "segments"]
ITEM_KINDS: tuple[ItemKind, ...] = ("results", "events", "segments")


def item_key(kind: ItemKind, body: Mapping[str, Any]) -> str:
    """The idempotency key of one item: `source/model/seq` for results and label changes,
    `source/status/time_ms` for a source's status change (an event of no model or frame), the
    segment's own `id` for segments. Stable across redeliveries, so a receiver can drop repeats
    by it."""
    if kind == "segments":
        return str(body["id"])
    if kind == "events" and "seq" not in body:
        return f"{body['source']}/status/{body.get('time_ms')}"
    return f"{body['source']}/{body['model']}/{body['seq']}"


@dataclass(frozen=True)
class SinkItem:
    """One thing to deliver: `body` is the JSON object a user sees (for results, the same object as
    a `framestream run --results` JSONL line); `key` is its idempotency key (`item_key`)."""

    kind: ItemKind
    key: str
    source: str
    body: Mapping[str, Any]


class DeliveryError(FramestreamError):
    """The destination did not confirm a batch. `retryable` False means sending the same items again
    cannot succeed (HTTP 4xx other than 408/429, a rejected row): the loop dead-letters them at
    once, with `reason`, instead of retrying until `max_attempts`."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class Destination(Protocol):
    """One sink kind's connection to its destination. Built from the sink's settings; `start`
    connects (or prepares lazily) and may raise DeliveryError; `send` is called with at most the
    sink's `max_items` items, all of one partition, in stream order, never concurrently with itself;
    `close` releases connections and never raises."""

    kind: str

    async def start(self) -> None: ...

    async def send(self, items: Sequence[SinkItem]) -> None: ...

    async def close(self) -> None: ...
