"""Dead letters on Redis: list, show, retry and trim the dead-letter stream of every partition.

The one implementation behind ``framestream dead`` and the HTTP routes ``/v1/dead-letters``. A
dead letter is an entry of a partition's ``keys.dead``, written by `StreamTransport.dead_letter`
with the fields ``stage``, ``reason``, ``stream`` and ``group`` (where the entry was read from),
``id`` (its id there), ``deliveries``, ``d`` (its original bytes, when at most 1 MiB) and
``bytes`` (their size; letters written before that field existed take it from ``d``).

Nothing here unpickles or evaluates what it reads: a payload is decoded as a framestream message
(msgpack header, checked against the codec's limits) only to show its header; otherwise it is
summarised by its size.

A dead letter is named ``<partition>:<entry id>`` (``0:1764495011234-0``); a bare entry id is
accepted when exactly one partition has it.

Retrying adds the original bytes to the stream they came from and deletes the letter in one Lua
script on the partition's slot (both keys share its hash tag): the letter is deleted only once
its re-drive is written, and it is re-driven once even when two operators retry it together.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from msgpack import ExtType
from redis.exceptions import ResponseError

from stream.adapters.redis.entries import text
from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import decode_message
from stream.core.keys import FIELD, PipelineKeys, is_stream_id
from stream.errors import CodecError, DeadLetterError, UnknownDeadLetter

__all__ = ["DeadLetterRecord", "DeadLetters", "RetryOutcome", "parse_ref"]

_PAGE = 100

_REDRIVE = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return {0, ''} end
local flat = found[1][2]
for i = 1, #flat, 2 do
  if flat[i] == ARGV[2] then
    local new_id = redis.call('XADD', KEYS[2], '*', ARGV[2], flat[i + 1])
    redis.call('XDEL', KEYS[1], ARGV[1])
    return {2, new_id}
  end
end
return {1, ''}
"""
"""Re-add dead letter ARGV[1]'s payload (field ARGV[2]) of KEYS[1] to KEYS[2], then delete it:
{0} no such letter, {1} no payload kept, {2, new id} done."""


def parse_ref(ref: str) -> tuple[int | None, str]:
    """(partition or None, entry id) of a dead letter's name; ValueError names a bad one."""
    partition, sep, entry_id = ref.strip().rpartition(":")
    if not is_stream_id(entry_id) or (sep and not (partition.isascii() and partition.isdigit())):
        raise ValueError(f"{ref!r} is not a dead letter id: expected <partition>:<ms>-<seq> or <ms>-<seq>")
    return (int(partition) if sep else None), entry_id


def _text(value: bytes) -> str:
    """A field's value as text: UTF-8 without control characters, else its size."""
    try:
        decoded = value.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(value)} bytes>"
    return decoded if decoded.isprintable() else f"<{len(value)} bytes>"


def _plain(value: Any) -> Any:
    """JSON-safe copy of a decoded message header (bytes and msgpack extensions summarised)."""
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, ExtType):
        return f"<msgpack extension {value.code}, {len(value.data)} bytes>"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _int(value: bytes | None) -> int | None:
    digits = text(value) if value is not None else ""
    return int(digits) if digits.lstrip("-").isdigit() else None


@dataclass(frozen=True)
class DeadLetterRecord:
    """One dead letter as read back: where it came from, why, and a safe view of its payload."""

    ref: str
    partition: int
    entry_id: str
    stage: str
    reason: str
    stream: str | None
    group: str | None
    original_id: str | None
    deliveries: int | None
    payload_bytes: int | None
    payload_kept: bool
    header: dict[str, Any] | None
    """The payload's message header (``meta`` plus dtype/shape), None when not kept or undecodable."""
    payload_error: str | None
    other_fields: dict[str, str]

    @property
    def dead_ms(self) -> int:
        """When it was dead-lettered (epoch ms, from its entry id)."""
        return int(self.entry_id.partition("-")[0])

    @property
    def source(self) -> str | None:
        value = (self.header or {}).get("meta", {}).get("source")
        return value if isinstance(value, str) else None

    @property
    def seq(self) -> int | None:
        value = (self.header or {}).get("meta", {}).get("seq")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def summary(self, now_ms: float) -> dict[str, Any]:
        """What a listing shows (JSON-safe)."""
        return {
            "id": self.ref,
            "partition": self.partition,
            "stage": self.stage,
            "reason": self.reason,
            "source": self.source,
            "seq": self.seq,
            "stream": self.stream,
            "group": self.group,
            "original_id": self.original_id,
            "deliveries": self.deliveries,
            "dead_ms": self.dead_ms,
            "age_s": round(max(0.0, now_ms - self.dead_ms) / 1000.0, 3),
            "payload_bytes": self.payload_bytes,
            "retryable": self.payload_kept and self.stream is not None,
        }

    def detail(self, now_ms: float) -> dict[str, Any]:
        """Everything about it (JSON-safe): the summary, the payload's header, other fields."""
        payload: dict[str, Any] = {"bytes": self.payload_bytes, "kept": self.payload_kept}
        if self.header is not None:
            payload["message"] = self.header
        if self.payload_error is not None:
            payload["undecodable"] = self.payload_error
        return {**self.summary(now_ms), "payload": payload, "fields": self.other_fields}


@dataclass(frozen=True)
class RetryOutcome:
    """One retry: the letter, and the new entry id on its stream or why it was not retried."""

    ref: str
    stream: str | None
    new_id: str | None = None
    error: str | None = None


_KNOWN = {"stage", "reason", "stream", "group", "id", "deliveries", "bytes", FIELD}


def _record(keys: PipelineKeys, entry_id: str, fields: Mapping[bytes, bytes]) -> DeadLetterRecord:
    by_name = {text(k): v for k, v in fields.items()}
    payload = by_name.get(FIELD)
    header: dict[str, Any] | None = None
    error: str | None = None
    if payload is not None:
        try:
            message = decode_message(payload)
        except CodecError as e:
            error = str(e)
        else:
            array = message.array
            header = {
                "meta": _plain(message.meta),
                "dtype": None if array is None else array.dtype.name,
                "shape": None if array is None else list(array.shape),
            }
    size = _int(by_name.get("bytes"))
    stream, group, original = (by_name.get(k) for k in ("stream", "group", "id"))
    return DeadLetterRecord(
        ref=f"{keys.index}:{entry_id}",
        partition=keys.index,
        entry_id=entry_id,
        stage=text(by_name.get("stage", b"?")),
        reason=text(by_name.get("reason", b"")),
        stream=text(stream) if stream is not None else None,
        group=text(group) if group is not None else None,
        original_id=text(original) if original is not None else None,
        deliveries=_int(by_name.get("deliveries")),
        payload_bytes=len(payload) if payload is not None else size,
        payload_kept=payload is not None,
        header=header,
        payload_error=error,
        other_fields={k: _text(v) for k, v in by_name.items() if k not in _KNOWN},
    )


class DeadLetters:
    """The dead letters of every partition of the pipeline `keys` (its recorded partition count:
    `stream.adapters.redis.partitions.recorded_keys`)."""

    def __init__(self, client: aioredis.Redis, keys: PipelineKeys) -> None:
        self.client = client
        self.keys = keys
        self.transport = StreamTransport(client, keys, stage="dead-letters")

    async def count(self) -> int:
        """Dead letters kept, over every partition."""
        return sum([int(await self.client.xlen(k.dead)) for k in self.keys.all_partitions])

    async def newest(self, *, limit: int, stage: str | None = None) -> list[DeadLetterRecord]:
        """The newest `limit` dead letters (of `stage`, when given) over every partition, oldest
        first."""
        found: list[DeadLetterRecord] = []
        for keys in self.keys.all_partitions:
            upper, mine = "+", 0
            while mine < limit:
                page: Any = await self.client.xrevrange(keys.dead, max=upper, min="-", count=_PAGE)
                for raw_id, fields in page:
                    record = _record(keys, text(raw_id), fields)
                    if stage is None or record.stage == stage:
                        found.append(record)
                        mine += 1
                        if mine >= limit:
                            break
                if len(page) < _PAGE:
                    break
                upper = f"({text(page[-1][0])}"
        found.sort(key=lambda r: (r.dead_ms, r.partition, r.entry_id))
        return found[-limit:] if limit else []

    async def each(self, *, stage: str | None = None) -> AsyncIterator[DeadLetterRecord]:
        """Every dead letter (of `stage`) there is now, partition by partition, oldest first; ones
        added while iterating are not included (a retry that fails again adds one)."""
        for keys in self.keys.all_partitions:
            newest: Any = await self.client.xrevrange(keys.dead, max="+", min="-", count=1)
            if not newest:
                continue
            last, lower = text(newest[0][0]), "-"
            while True:
                page: Any = await self.client.xrange(keys.dead, min=lower, max=last, count=_PAGE)
                for raw_id, fields in page:
                    record = _record(keys, text(raw_id), fields)
                    if stage is None or record.stage == stage:
                        yield record
                if len(page) < _PAGE:
                    break
                lower = f"({text(page[-1][0])}"

    async def get(self, ref: str) -> DeadLetterRecord:
        """The dead letter named `ref`; `UnknownDeadLetter` when there is none (ValueError for a
        malformed name)."""
        partition, entry_id = parse_ref(ref)
        if partition is not None and not 0 <= partition < self.keys.partitions:
            raise UnknownDeadLetter(
                f"no dead letter {ref!r}: the pipeline has partitions 0..{self.keys.partitions - 1}"
            )
        candidates = self.keys.all_partitions if partition is None else [self.keys.partition(partition)]
        found = []
        for keys in candidates:
            rows: Any = await self.client.xrange(keys.dead, min=entry_id, max=entry_id)
            found += [_record(keys, entry_id, fields) for _, fields in rows]
        if not found:
            raise UnknownDeadLetter(f"no dead letter {ref!r} (retried, trimmed, or never there)")
        if len(found) > 1:
            names = ", ".join(r.ref for r in found)
            raise UnknownDeadLetter(f"{ref!r} names a dead letter in several partitions: use one of {names}")
        return found[0]

    async def retry(self, ref: str) -> RetryOutcome:
        """Re-drive one dead letter into the stream it came from and delete it (atomically).

        `UnknownDeadLetter` when it is gone; `DeadLetterError` when it cannot be re-driven (no
        payload kept, no origin recorded, an origin outside its partition).
        """
        record = await self.get(ref)
        keys = self.keys.partition(record.partition)
        origin = record.stream
        if origin is None:
            raise DeadLetterError(f"dead letter {record.ref} does not record the stream it came from")
        if not record.payload_kept:
            size = f"{record.payload_bytes} bytes, " if record.payload_bytes is not None else ""
            raise DeadLetterError(
                f"dead letter {record.ref} kept no payload ({size}entry deleted before it was read, "
                "or over the 1 MiB kept); nothing to retry"
            )
        if not origin.startswith(keys.prefix + ":") or origin == keys.dead:
            raise DeadLetterError(
                f"dead letter {record.ref} came from {origin!r}, not a stream of partition "
                f"{record.partition} of pipeline {self.keys.pipeline!r}; not re-driving it there"
            )
        reply: Any = await self.client.eval(_REDRIVE, 2, keys.dead, origin, record.entry_id, FIELD)
        status, new_id = int(reply[0]), text(reply[1])
        if status == 0:
            raise UnknownDeadLetter(f"no dead letter {record.ref} (retried or trimmed meanwhile)")
        if status == 1:
            raise DeadLetterError(f"dead letter {record.ref} kept no payload; nothing to retry")
        return RetryOutcome(record.ref, origin, new_id=new_id)

    async def retry_all(self, *, stage: str | None = None) -> list[RetryOutcome]:
        """Retry every dead letter there is now (of `stage`); one that cannot be retried is
        reported with its reason and left in place."""
        refs = [record.ref async for record in self.each(stage=stage)]
        outcomes = []
        for ref in refs:
            try:
                outcomes.append(await self.retry(ref))
            except DeadLetterError as e:
                outcomes.append(RetryOutcome(ref, None, error=str(e)))
        return outcomes

    async def trim(self, *, max_len: int, max_age_s: float, now_ms: float | None = None) -> int:
        """Keep at most `max_len` dead letters per partition, none older than `max_age_s`.

        Trims by MINID/MAXLEN like the other streams: when a consumer group reads a dead-letter
        stream (an operator's tool), nothing it has not acked or read is deleted. Returns how many
        letters were deleted.
        """
        now_ms = time.time() * 1000.0 if now_ms is None else now_ms
        oldest_kept = f"{max(0, int(now_ms - max_age_s * 1000.0))}-0"
        deleted = 0
        for keys in self.keys.all_partitions:
            try:
                groups = await self.client.xinfo_groups(keys.dead)
            except ResponseError:  # no such stream: nothing dead-lettered there yet
                continue
            if groups:
                needed = await self.transport.safe_trim_id(keys.dead)
                boundary = oldest_kept if needed is None else min(oldest_kept, needed, key=_id_key)
                deleted += int(await self.client.xtrim(keys.dead, minid=boundary, approximate=False))
                deleted += await self.transport.trim(keys.dead, keep=max_len)
                continue
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xtrim(keys.dead, minid=oldest_kept, approximate=False)
                pipe.xtrim(keys.dead, maxlen=max_len, approximate=False)
                deleted += sum(int(n) for n in await pipe.execute())
        return deleted


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
