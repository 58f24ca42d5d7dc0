"""Wire format: a small msgpack header plus raw array bytes. Never pickle.

Layout of one message::

    b"FS" | version (1 byte) | header length (uint32, big-endian) | msgpack header | payload

The header is a map ``{"dtype": str | None, "shape": [int, ...], "meta": {...}}``. The payload is
the array's C-order bytes (empty when ``dtype`` is None, e.g. end-of-stream markers). Decoding
checks every field against limits, so bytes from an untrusted source can only ever produce a
valid `Message` or a `CodecError`.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from stream.errors import CodecError

__all__ = [
    "ALLOWED_DTYPES",
    "MAGIC",
    "VERSION",
    "Message",
    "PayloadError",
    "decode_message",
    "encode_message",
]

MAGIC = b"FS"
VERSION = 1
ALLOWED_DTYPES = frozenset({"uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "float32"})
_PREFIX = struct.Struct(">2sBI")
MAX_HEADER_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
MAX_DIMS = 4


@dataclass
class Message:
    """One stream entry: metadata plus an optional array (frame, tensor or scores)."""

    meta: dict[str, Any] = field(default_factory=dict)
    array: np.ndarray | None = None


class PayloadError(CodecError):
    """A message whose header decoded but whose array bytes do not match it (too short, too
    long, oversize): `meta` is what the header said, to tell later stages which frame is lost."""

    def __init__(self, reason: str, meta: dict[str, Any]) -> None:
        super().__init__(reason)
        self.meta = meta


def encode_message(message: Message) -> bytes:
    """Encode `message`; raises `CodecError` for arrays the decoder would refuse."""
    array = message.array
    payload: bytes | memoryview
    if array is None:
        dtype_name, shape, payload = None, [], b""
    else:
        dtype_name = array.dtype.name
        if dtype_name not in ALLOWED_DTYPES:
            raise CodecError(f"dtype {dtype_name!r} not allowed; allowed: {sorted(ALLOWED_DTYPES)}")
        if array.ndim > MAX_DIMS:
            raise CodecError(f"array has {array.ndim} dims, at most {MAX_DIMS} allowed")
        shape = list(array.shape)
        # the array's own bytes, copied once, into the message (not first into a bytes of their own)
        payload = np.ascontiguousarray(array).reshape(-1).view(np.uint8).data
        if payload.nbytes > MAX_PAYLOAD_BYTES:
            raise CodecError(f"payload of {payload.nbytes} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        header = msgpack.packb({"dtype": dtype_name, "shape": shape, "meta": message.meta})
    except (TypeError, ValueError, OverflowError) as e:
        raise CodecError(f"metadata is not msgpack-serialisable: {e}") from e
    if len(header) > MAX_HEADER_BYTES:
        raise CodecError(f"header of {len(header)} bytes exceeds {MAX_HEADER_BYTES}")
    return b"".join((_PREFIX.pack(MAGIC, VERSION, len(header)), header, payload))


def decode_message(data: bytes, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> Message:
    """Decode bytes made by `encode_message`. Anything else raises `CodecError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _PREFIX.size:
        raise CodecError(f"truncated: {len(data)} bytes is shorter than the {_PREFIX.size}-byte prefix")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise CodecError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise CodecError(f"unknown version {version}, this build reads version {VERSION}")
    if header_len > MAX_HEADER_BYTES:
        raise CodecError(f"header length {header_len} exceeds {MAX_HEADER_BYTES}")
    body_start = _PREFIX.size + header_len
    if len(data) < body_start:
        raise CodecError(f"truncated header: need {header_len} bytes, have {len(data) - _PREFIX.size}")
    header = _unpack_header(data[_PREFIX.size : body_start])
    dtype_name, shape, meta = _check_header(header)
    payload_len = len(data) - body_start
    if dtype_name is None:
        if payload_len:
            raise PayloadError(f"message without an array carries {payload_len} payload bytes", meta)
        return Message(meta=meta, array=None)
    dtype = np.dtype(dtype_name)
    expected = math.prod(shape) * dtype.itemsize
    if expected > max_payload_bytes:
        raise PayloadError(
            f"oversize: shape {shape} {dtype_name} is {expected} bytes, limit {max_payload_bytes}", meta
        )
    if payload_len != expected:
        raise PayloadError(
            f"wrong payload length: shape {shape} {dtype_name} needs {expected} bytes, got {payload_len}",
            meta,
        )
    # a view into the entry's bytes, not a copy of them (a raw v2 frame is 150 KB)
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=body_start).reshape(shape)
    return Message(meta=meta, array=array)


def _unpack_header(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises many types (ExtraData, ValueError, UnicodeError, ...)
        raise CodecError(f"header is not valid msgpack: {type(e).__name__}: {e}") from e


def _check_header(header: Any) -> tuple[str | None, list[int], dict[str, Any]]:
    if not isinstance(header, dict) or set(header) != {"dtype", "shape", "meta"}:
        raise CodecError("header must be a map with exactly dtype, shape and meta")
    dtype_name, shape, meta = header["dtype"], header["shape"], header["meta"]
    if dtype_name is not None and dtype_name not in ALLOWED_DTYPES:
        raise CodecError(f"dtype {dtype_name!r} not allowed; allowed: {sorted(ALLOWED_DTYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise CodecError(f"shape must be a list of at most {MAX_DIMS} dims, got {shape!r}")
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in shape):
        raise CodecError(f"shape dims must be non-negative ints, got {shape!r}")
    if dtype_name is None and shape:
        raise CodecError(f"message without dtype must have an empty shape, got {shape!r}")
    if not isinstance(meta, dict):
        raise CodecError(f"meta must be a map, got {type(meta).__name__}")
    return dtype_name, shape, meta
