"""Record format version 1: a fixed header, then a msgpack body (``docs/format.md``).

Pure functions, no I/O. The header is little-endian::

    magic      2  b"LS"
    format     1  record format version (1)
    flags      1  codec and compression bits (0: msgpack, uncompressed)
    digest     8  xxh3_64 over key + the header without this field + body
    created_ns 8  wall clock at write, ns since the epoch
    body_len   4  length of the body

The digest covers the key, so a record moved under another key is caught, and every other
header field, so no single damaged byte of a record goes unnoticed.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import xxhash

from . import codec
from .errors import CodecError, IntegrityError
from .keys import split_checkpoint_key

MAGIC = b"LS"
FORMAT_VERSION = 1
CHUNKED_FORMAT = 2
REF_SIZE = 16
"""Bytes of a chunk's key, as a format-2 record's state names its list nodes."""
"""Record format 2: the state's long lists are ``codec.ListRef``s to chunks (``chunking.py``)."""
KNOWN_FLAGS = 0
HEADER = struct.Struct("<2sBBQQI")
HEADER_SIZE = HEADER.size
MAX_BODY_SIZE = (1 << 32) - 1

_LEADING = struct.Struct("<2sBB")  # magic, format, flags: the bytes before the digest
_DIGEST_END = _LEADING.size + 8
_STREAM_DIGEST_FROM = 64 * 1024  # above this, hashing in pieces beats one copy of the body


def digest(key: bytes, leading: bytes | memoryview, rest: bytes | memoryview) -> int:
    """The record digest: xxh3_64 of ``key + leading + rest``.

    ``leading`` is the header before the digest field (magic, format, flags); ``rest`` is
    everything after it (created_ns, body_len, body).
    """
    if len(rest) < _STREAM_DIGEST_FROM:
        return xxhash.xxh3_64_intdigest(b"".join((key, leading, rest)))
    hasher = xxhash.xxh3_64(key)
    hasher.update(leading)
    hasher.update(rest)
    return hasher.intdigest()


def build(
    key: bytes, body: bytes, created_ns: int, *, flags: int = 0, chunked: bool = False
) -> bytes:
    """Return the record to store under ``key``: header followed by ``body``.

    ``chunked``: the body's state holds references to chunks (record format 2).
    """
    leading = _LEADING.pack(MAGIC, CHUNKED_FORMAT if chunked else FORMAT_VERSION, flags)
    rest = b"".join((created_ns.to_bytes(8, "little"), len(body).to_bytes(4, "little"), body))
    return b"".join((leading, digest(key, leading, rest).to_bytes(8, "little"), rest))


def _damaged(key: bytes, reason: str) -> IntegrityError:
    workflow_key, seq = split_checkpoint_key(key)
    return IntegrityError(workflow_key.decode("utf-8", "replace"), seq, reason)


def check(key: bytes, record: bytes | memoryview) -> tuple[int, int, memoryview]:
    """Verify the record stored under ``key``; return its created_ns, digest and body.

    The body is a view into ``record``, not a copy.

    Raises:
        IntegrityError: the record is too short, has the wrong magic or length, fails its
            digest, or names a format or flags this version does not write.
    """
    size = len(record)
    if size < HEADER_SIZE:
        raise _damaged(key, f"{size} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, flags, stored, created_ns, body_len = HEADER.unpack_from(record)
    if magic != MAGIC:
        raise _damaged(key, f"bad magic {bytes(magic)!r}")
    if body_len != size - HEADER_SIZE:
        raise _damaged(key, f"body length {body_len} but {size - HEADER_SIZE} bytes follow")
    view = memoryview(record)
    computed = digest(key, view[: _LEADING.size], view[_DIGEST_END:])
    if computed != stored:
        raise _damaged(key, f"digest mismatch (stored {stored:016x}, computed {computed:016x})")
    # Checked after the digest: a damaged byte here is damage, and a record whose digest holds
    # but whose format differs cannot exist in a format-1 store (the store's format is checked
    # on open).
    if version not in (FORMAT_VERSION, CHUNKED_FORMAT) or flags & ~KNOWN_FLAGS:
        raise _damaged(key, f"record format {version} with flags {flags:#04x} is not 1 or 2")
    return created_ns, stored, view[HEADER_SIZE:]


def whole_digest(
    key: bytes, state: object, step: object, schema: int, meta: object, created_ns: int
) -> int:
    """The digest of the checkpoint stored whole (record format 1), whatever its stored format.

    Exports carry it: it depends on what the checkpoint holds, not on how a store split it.

    Raises:
        CodecError: a field the codec cannot carry.
    """
    record = build(key, encode_body(state, step, schema, meta), created_ns)
    return int.from_bytes(record[4:12], "little")


def record_format(record: bytes | memoryview) -> int:
    """The format byte of a record (checked by ``check``): 1 whole, 2 with chunked lists."""
    return record[2] if len(record) > 2 else 0


def is_chunked(record: bytes | memoryview) -> bool:
    """True for a record of format 2, whose state refers to chunks (checked by ``check``)."""
    return record_format(record) == CHUNKED_FORMAT


def chunk_refs(body: bytes | memoryview) -> tuple[bytes, ...]:
    """The node chunks a format-2 record's body references (its state's top-level lists).

    Read without decoding any extension type but the references: a body holding a value this
    host cannot decode (a time zone it lacks) still gives them.

    Raises:
        CodecError: the body is not msgpack.
    """
    try:
        fields = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many unrelated types for malformed input
        raise CodecError("stored body", f"cannot decode: {exc}") from exc
    state = fields.get("state") if type(fields) is dict else None
    if type(state) is not dict:
        return ()
    return tuple(
        value.data
        for value in state.values()
        if type(value) is msgpack.ExtType
        and value.code == codec.EXT_LIST_REF
        and len(value.data) == REF_SIZE
    )


def encode_body(state: object, step: object, schema: int, meta: object) -> bytes:
    """The msgpack body map; ``state`` goes last so that readers of the other fields stop early.

    Raises:
        CodecError: something in ``state``, ``step`` or ``meta`` cannot be encoded.
    """
    try:
        body = codec.encode({"step": step, "schema": schema, "meta": meta, "state": state})
    except Exception:
        # Name the path inside the argument the caller knows, not inside the body map.
        for name, value in (("state", state), ("meta", meta), ("step", step)):
            codec.encode(value, root=name)
        raise
    if len(body) > MAX_BODY_SIZE:
        raise CodecError("state", f"encodes to {len(body)} bytes, more than a record holds")
    return body


def decode_body(body: bytes | memoryview) -> dict[str, Any]:
    """Decode a whole body map.

    Raises:
        CodecError: the body does not decode.
    """
    decoded = codec.decode(body)
    if type(decoded) is not dict:
        raise CodecError("stored body", f"a {type(decoded).__name__}, not a map")
    return decoded


def decode_body_without_state(body: bytes | memoryview) -> dict[str, Any]:
    """Decode the body's fields other than ``state``, skipping the state's bytes.

    Raises:
        CodecError: the body does not decode.
    """
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, ext_hook=codec.decode_extension)
    unpacker.feed(body)
    fields: dict[str, Any] = {}
    try:
        count = unpacker.read_map_header()
        for index in range(count):
            name = unpacker.unpack()
            if name != "state":
                fields[name] = unpacker.unpack()
            elif index == count - 1:
                break  # the state is last, as this version writes it: nothing more to read
            else:
                unpacker.skip()
    except Exception as exc:  # msgpack raises many unrelated types for malformed input
        raise CodecError("stored body", f"cannot decode: {exc}") from exc
    return fields
