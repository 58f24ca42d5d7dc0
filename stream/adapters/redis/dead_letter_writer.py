"""How a dead letter is written: its fields and the dead-letter stream of its partition.

A letter holds the stage, the reason, the stream, group and id the entry came from, how often it
was delivered, its size and (up to 1 MiB) its bytes, which `framestream dead retry` re-drives
(`stream.adapters.redis.dead_letters` lists, retries and trims them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from stream.adapters.redis.entries import DeadLetter, hash_tag
from stream.core.keys import FIELD, PipelineKeys

__all__ = ["dead_stream", "letter_fields", "write_dead_letters"]

MAX_DEAD_PAYLOAD = 1024 * 1024
"""Entries larger than this are dead-lettered without their bytes."""


def letter_fields(letter: DeadLetter, stage: str, group: str) -> dict[str, Any]:
    """The fields of `letter`'s entry in the dead-letter stream (``stream`` is where a retry
    re-drives it: `DeadLetter.redrive_to`, else the stream it was read from)."""
    e = letter.entry
    fields: dict[str, Any] = {
        "stage": stage,
        "reason": letter.reason,
        "stream": letter.redrive_to or e.stream,
        "group": group,
        "id": e.id,
        "deliveries": e.deliveries,
    }
    if e.data is not None:
        fields["bytes"] = len(e.data)
        if len(e.data) <= MAX_DEAD_PAYLOAD:
            fields[FIELD] = e.data  # what `framestream dead retry` re-drives
    return fields


def dead_stream(keys: PipelineKeys, stream: str) -> str:
    """The dead-letter stream of `stream`'s partition (the pipeline's first for a foreign key)."""
    try:
        return keys.of_key(stream).dead
    except ValueError:
        return keys.dead


async def write_dead_letters(
    client: aioredis.Redis, keys: PipelineKeys, stage: str, letters: Sequence[DeadLetter], group: str
) -> None:
    """Write each letter to its partition's dead-letter stream and ack its entry, atomically
    (one MULTI/EXEC per partition)."""
    by_tag: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        by_tag.setdefault(hash_tag(letter.entry.stream), []).append(letter)
    for tagged in by_tag.values():
        dead = dead_stream(keys, tagged[0].entry.stream)
        async with client.pipeline(transaction=True) as pipe:
            for letter in tagged:
                pipe.xadd(dead, letter_fields(letter, stage, group))  # type: ignore[arg-type]
                pipe.xack(letter.entry.stream, group, letter.entry.id)
            pipe.hincrby(keys.of_key(dead).counters, f"dead:{stage}", len(tagged))  # per-stage count
            await pipe.execute()
