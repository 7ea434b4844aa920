from __future__ import annotations

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from lmdbstate import CodecError, IntegrityError
from lmdbstate.keys import checkpoint_key
from lmdbstate.records import (
    HEADER,
    HEADER_SIZE,
    build,
    check,
    decode_body,
    decode_body_without_state,
    digest,
    encode_body,
    is_chunked,
    record_format,
)

KEY = checkpoint_key(b"wf", 7)
bodies = st.binary(max_size=300)
states = st.recursive(
    st.none() | st.integers(-1000, 1000) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


def test_header_is_24_bytes_little_endian() -> None:
    record = build(KEY, b"body", 0x0102030405060708)
    assert HEADER_SIZE == 24
    assert record[:4] == b"LS\x01\x00"
    assert record[12:20] == bytes.fromhex("0807060504030201")
    assert record[20:24] == (4).to_bytes(4, "little")
    assert record[24:] == b"body"


@given(bodies, st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_build_then_check_round_trips(body: bytes, created_ns: int) -> None:
    record = build(KEY, body, created_ns)
    stored_ns, digest_value, checked = check(KEY, record)
    assert bytes(checked) == body
    assert stored_ns == created_ns
    assert digest_value == int.from_bytes(record[4:12], "little")
    assert HEADER.unpack_from(record)[:3] == (b"LS", 1, 0)


@given(bodies, st.data())
def test_any_flipped_byte_is_detected(body: bytes, data: st.DataObject) -> None:
    record = bytearray(build(KEY, body, 123456789))
    position = data.draw(st.integers(min_value=0, max_value=len(record) - 1), label="position")
    record[position] ^= data.draw(st.integers(min_value=1, max_value=255), label="xor")
    with pytest.raises(IntegrityError) as caught:
        check(KEY, bytes(record))
    assert (caught.value.workflow_id, caught.value.seq) == ("wf", 7)


def test_a_record_under_another_key_is_detected() -> None:
    record = build(KEY, b"body", 1)
    with pytest.raises(IntegrityError, match="digest mismatch"):
        check(checkpoint_key(b"wf", 8), record)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (b"", "shorter than"),
        (b"LS\x01", "shorter than"),
        (b"XX" + bytes(22), "bad magic"),
        (build(KEY, b"body", 1)[:-1], "body length"),
        (build(KEY, b"body", 1) + b"!", "body length"),
    ],
)
def test_malformed_records_say_why(record: bytes, reason: str) -> None:
    with pytest.raises(IntegrityError, match=reason):
        check(KEY, record)


@pytest.mark.parametrize("version", [0, 3, 255])
def test_a_whole_record_of_another_format_is_refused(version: int) -> None:
    # A record whose digest holds but whose format byte is neither 1 nor 2: rebuilt by hand.
    record = bytearray(build(KEY, b"body", 1))
    record[2] = version
    record[4:12] = digest(KEY, bytes(record[:4]), bytes(record[12:])).to_bytes(8, "little")
    with pytest.raises(IntegrityError, match=f"format {version} "):
        check(KEY, bytes(record))


def test_records_of_both_formats_check_and_say_which() -> None:
    whole = build(KEY, b"body", 1)
    chunked = build(KEY, b"body", 1, chunked=True)
    assert (record_format(whole), record_format(chunked)) == (1, 2)
    assert (is_chunked(whole), is_chunked(chunked)) == (False, True)
    assert whole[4:12] != chunked[4:12]  # the format byte is under the digest
    assert bytes(check(KEY, chunked)[2]) == b"body"


def test_large_bodies_use_the_same_digest() -> None:
    body = bytes(range(256)) * 1024  # above the streaming threshold
    record = build(KEY, body, 5)
    _, digest_value, checked = check(KEY, record)
    assert bytes(checked) == body
    assert HEADER.unpack_from(record)[3] == digest_value
    # The streamed digest equals the one-shot digest over the same bytes.
    assert digest_value == xxhash.xxh3_64_intdigest(KEY + record[:4] + record[12:])


@given(
    states,
    st.none() | st.text(max_size=10) | st.integers(0, 100),
    st.integers(1, 9),
    st.dictionaries(st.text(max_size=5), states, max_size=3),
)
def test_body_round_trips(
    state: object, step: object, schema: int, meta: dict[str, object]
) -> None:
    body = encode_body(state, step, schema, meta)
    assert decode_body(body) == {"step": step, "schema": schema, "meta": meta, "state": state}
    assert decode_body_without_state(body) == {"step": step, "schema": schema, "meta": meta}


def test_body_error_names_the_argument_path() -> None:
    with pytest.raises(CodecError) as caught:
        encode_body({"ok": 1}, None, 1, {"bad": object()})
    assert caught.value.path == "meta['bad']"


@pytest.mark.parametrize("body", [b"\x01", b"\xc1", b"\x81\xa4step\xc1"])
def test_undecodable_bodies_are_codec_errors(body: bytes) -> None:
    with pytest.raises(CodecError):
        decode_body(body)
    with pytest.raises(CodecError):
        decode_body_without_state(body)


def test_reading_without_state_stops_before_the_state() -> None:
    # The state's bytes are cut short: only a full decode reads far enough to notice.
    body = b"\x82\xa4step\x01\xa5state\x92\x01"
    assert decode_body_without_state(body) == {"step": 1}
    with pytest.raises(CodecError):
        decode_body(body)
