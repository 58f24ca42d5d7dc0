"""What the Redis Streams transport reads and writes: entries, outputs, dead letters, ids.

`hash_tag` names the part of a key Redis Cluster hashes (every key of a partition shares it);
`last_id` is where a reader starts for what is added from now on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from stream.core.keys import FIELD

__all__ = ["DeadLetter", "Entry", "Output", "entry_of", "hash_tag", "id_tuple", "last_id", "next_id", "text"]


@dataclass(frozen=True)
class Entry:
    """One entry read from `stream`; `data` is None when it was deleted before we read it."""

    stream: str
    id: str
    data: bytes | None
    deliveries: int = 1


@dataclass(frozen=True)
class Output:
    """An entry to add to `stream`."""

    stream: str
    data: bytes


@dataclass(frozen=True)
class DeadLetter:
    entry: Entry
    reason: str
    redrive_to: str | None = None
    """The stream `framestream dead retry` re-drives it into, when not the one it was read from
    (a sink's own retry stream: a sink's dead letter goes back to that sink alone)."""
    meta: dict[str, Any] | None = None
    """What an undecodable entry's header said (`stream.core.codec.PayloadError`), so a stage can
    still send the skip marker for the frame it was; None when not even that decoded."""


def entry_of(stream: str, raw_id: bytes | str, fields: Any, deliveries: int = 1) -> Entry:
    """The `Entry` of one (id, fields) pair of an XREAD/XREADGROUP/XCLAIM reply."""
    return Entry(stream, text(raw_id), fields.get(FIELD.encode()) if fields else None, deliveries)


async def last_id(client: aioredis.Redis, stream: str) -> str:
    """The id of the newest entry of `stream` ("0-0" when empty or missing): read after it for
    what is added from now on."""
    newest: Any = await client.xrevrange(stream, max="+", min="-", count=1)
    return text(newest[0][0]) if newest else "0-0"


def hash_tag(key: str) -> str:
    """The part of `key` Redis Cluster hashes: the first non-empty ``{...}``, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def text(value: object) -> str:
    """A Redis reply value as str: bytes as UTF-8 (an invalid byte becomes U+FFFD, never an
    error), str as it is, a number as its digits. The one bytes-to-str rule of the project."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def id_tuple(entry_id: str) -> tuple[int, int]:
    """A stream id as (ms, seq), for comparing ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: str) -> str:
    """The smallest id after `entry_id`."""
    ms, seq = id_tuple(entry_id)
    return f"{ms}-{seq + 1}"
