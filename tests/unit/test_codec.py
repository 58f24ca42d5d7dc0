"""Codec: exact round trips, and nothing but CodecError out of hostile bytes."""

from __future__ import annotations

import contextlib
import struct

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stream.core.codec import (
    ALLOWED_DTYPES,
    MAGIC,
    VERSION,
    Message,
    PayloadError,
    decode_message,
    encode_message,
)
from stream.errors import CodecError

_meta_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**62), 2**62)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
_meta = st.dictionaries(st.text(max_size=10), _meta_values, max_size=6)
_arrays = hnp.arrays(
    dtype=st.sampled_from(sorted(ALLOWED_DTYPES)).map(np.dtype),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
)


@given(meta=_meta, array=_arrays | st.none())
def test_round_trip_keeps_dtype_shape_values_and_meta(meta, array):
    decoded = decode_message(encode_message(Message(meta=meta, array=array)))
    assert decoded.meta == meta
    if array is None:
        assert decoded.array is None
    else:
        assert decoded.array is not None
        assert decoded.array.dtype == array.dtype
        assert decoded.array.shape == array.shape
        np.testing.assert_array_equal(decoded.array, array)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_codec_error(data):
    with contextlib.suppress(CodecError):
        decode_message(data)


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(0, 199))
def test_mutated_valid_message_raises_only_codec_error(noise, cut):
    good = encode_message(
        Message({"source": "cam", "seq": 3}, np.arange(24, dtype=np.uint8).reshape(2, 4, 3))
    )
    for data in (good[:cut], good[:cut] + noise, good[: cut % len(good)] + noise + good[cut % len(good) :]):
        with contextlib.suppress(CodecError):
            decode_message(data)


def _frame() -> bytes:
    return encode_message(Message({"seq": 1}, np.zeros((4, 4, 3), np.uint8)))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (_frame()[:5], "truncated"),
        (_frame()[:-1], "wrong payload length"),
        (_frame() + b"x", "wrong payload length"),
        (b"XX" + _frame()[2:], "bad magic"),
        (MAGIC + bytes([VERSION + 1]) + _frame()[3:], "unknown version"),
    ],
)
def test_malformed_input_names_the_problem(data, words):
    with pytest.raises(CodecError, match=words):
        decode_message(data)


def _raw(header: object, payload: bytes = b"") -> bytes:
    packed = msgpack.packb(header)
    return struct.pack(">2sBI", MAGIC, VERSION, len(packed)) + packed + payload


def test_disallowed_dtype_is_rejected_both_ways():
    with pytest.raises(CodecError, match="not allowed"):
        encode_message(Message({}, np.zeros(3, dtype=object)))
    with pytest.raises(CodecError, match="not allowed"):
        decode_message(_raw({"dtype": "object", "shape": [1], "meta": {}}, b"x" * 8))


def test_oversize_shape_is_rejected_before_reading_payload():
    with pytest.raises(CodecError, match="oversize"):
        decode_message(
            _raw({"dtype": "uint8", "shape": [100_000, 100_000], "meta": {}}), max_payload_bytes=10**6
        )


def test_header_fields_are_checked():
    with pytest.raises(CodecError, match="exactly dtype, shape and meta"):
        decode_message(_raw({"dtype": "uint8", "shape": [1], "meta": {}, "x": 1}, b"a"))
    with pytest.raises(CodecError, match="non-negative ints"):
        decode_message(_raw({"dtype": "uint8", "shape": [-1], "meta": {}}))
    with pytest.raises(CodecError, match="meta must be a map"):
        decode_message(_raw({"dtype": None, "shape": [], "meta": [1]}))


def test_pickle_payloads_are_never_executed():
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    with pytest.raises(CodecError):
        decode_message(pickle.dumps(Boom()))


def test_a_payload_that_does_not_match_its_header_still_says_which_frame_it_was() -> None:
    """So a stage can send the skip marker for a raw frame cut short (`PayloadError.meta`)."""
    meta = {"kind": "frame", "source": "cam", "seq": 7}
    data = encode_message(Message(meta=meta, array=np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(PayloadError, match="needs 192 bytes, got 100") as cut:
        decode_message(data[:-92])
    assert cut.value.meta == meta
    with pytest.raises(PayloadError) as longer:
        decode_message(data + b"x")
    assert longer.value.meta == meta
    with pytest.raises(CodecError) as garbage:
        decode_message(data[:12])
    assert not isinstance(garbage.value, PayloadError)
    decoded = decode_message(data).array
    assert decoded is not None and decoded.shape == (8, 8, 3) and not decoded.flags.writeable
