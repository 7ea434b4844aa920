"""msgpack with an explicit registry of extension types.

Plain msgpack carries dict, list, str, bytes, int, float, bool and None. The types below travel
as msgpack extension types whose codes are fixed forever (they are part of the on-disk format,
``docs/format.md``). Decoding maps a code to a constructor from this table only: stored data
never names a class to import.

Packing is strict: a subclass of a supported type (an ``IntEnum``, an ``OrderedDict``) is
refused rather than silently stored as its base type, so what comes back equals what went in.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgpack

from .errors import CodecError

EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3
EXT_DATETIME = 4
EXT_DATE = 5
EXT_UUID = 6
EXT_DECIMAL = 7
EXT_LIST_REF = 16
"""Record format 2 only: a list kept as chunks (``chunking.py``), named by its node's digest.
Only ``chunking.split`` writes it, into the top-level map of a record's state; the codec
decodes it but refuses to encode a ``ListRef``, so a user's state can never hold one."""


@dataclass(frozen=True, slots=True)
class ListRef:
    """In a format-2 record's state: the list whose node chunk has this digest."""

    digest: bytes


MAX_NESTED_EXTENSIONS = 64
"""Tuples, sets and frozensets nested in one another at most this deep. Each level is packed,
and unpacked, by a call of its own: far deeper nesting exhausts Python's recursion limit when
packing and the C stack when unpacking (a crash, measured at 200 levels), so it is refused."""

_nesting = threading.local()
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1
_PLAIN_SCALARS = (str, bytes, int, float, bool, type(None))
_EXTENSION_SCALARS = (dt.datetime, dt.date, uuid.UUID, Decimal)


def _pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(
        value, default=_to_extension, strict_types=True, use_bin_type=True
    )
    return packed


def sorted_if_possible(items: set[Any] | frozenset[Any]) -> list[Any]:
    """A set's items in the order the codec stores them.

    Sorted, so that equal sets encode to equal bytes; as iterated when they cannot be sorted
    (mixed types).
    """
    try:
        return sorted(items)
    except TypeError:
        return list(items)


def _encode_tzinfo(value: dt.datetime) -> object:
    tzinfo = value.tzinfo
    if tzinfo is None:
        return None
    if isinstance(tzinfo, zoneinfo.ZoneInfo) and tzinfo.key:
        return tzinfo.key
    offset = value.utcoffset()
    assert offset is not None  # an aware datetime always has one
    name = tzinfo.tzname(value) if isinstance(tzinfo, dt.timezone) else None
    if name == dt.timezone(offset).tzname(None):
        name = None  # the default name: keep the payload small and the object identical
    return [offset // dt.timedelta(microseconds=1), name]


def _decode_tzinfo(payload: object) -> dt.tzinfo | None:
    if payload is None:
        return None
    if isinstance(payload, str):
        return zoneinfo.ZoneInfo(payload)
    offset_us: int
    name: str | None
    offset_us, name = payload  # type: ignore[misc]
    offset = dt.timedelta(microseconds=offset_us)
    return dt.timezone(offset) if name is None else dt.timezone(offset, name)


def _to_extension(value: object) -> msgpack.ExtType:
    kind = type(value)
    if kind is tuple:
        return msgpack.ExtType(EXT_TUPLE, _pack_nested(list(value)))  # type: ignore[call-overload]
    if kind is set:
        return msgpack.ExtType(EXT_SET, _pack_nested(sorted_if_possible(value)))  # type: ignore[arg-type]
    if kind is frozenset:
        return msgpack.ExtType(EXT_FROZENSET, _pack_nested(sorted_if_possible(value)))  # type: ignore[arg-type]
    if kind is dt.datetime:
        assert isinstance(value, dt.datetime)
        fields = [
            value.year, value.month, value.day, value.hour, value.minute, value.second,
            value.microsecond, value.fold, _encode_tzinfo(value),
        ]  # fmt: skip
        return msgpack.ExtType(EXT_DATETIME, _pack(fields))
    if kind is dt.date:
        assert isinstance(value, dt.date)
        return msgpack.ExtType(EXT_DATE, _pack([value.year, value.month, value.day]))
    if kind is uuid.UUID:
        assert isinstance(value, uuid.UUID)
        return msgpack.ExtType(EXT_UUID, value.bytes)
    if kind is Decimal:
        return msgpack.ExtType(EXT_DECIMAL, str(value).encode("ascii"))
    raise TypeError(f"unsupported type {kind.__module__}.{kind.__qualname__}")


def _pack_nested(items: list[Any]) -> bytes:
    """The payload of a tuple or set: its items packed, one level deeper than their container."""
    depth: int = getattr(_nesting, "depth", 0)
    if depth >= MAX_NESTED_EXTENSIONS:
        raise ValueError(f"tuples and sets nested more than {MAX_NESTED_EXTENSIONS} levels deep")
    _nesting.depth = depth + 1
    try:
        return _pack(items)
    finally:
        _nesting.depth = depth


def _decode_datetime(data: bytes) -> dt.datetime:
    year, month, day, hour, minute, second, microsecond, fold, tz = _unpack(data)
    return dt.datetime(
        year, month, day, hour, minute, second, microsecond, _decode_tzinfo(tz), fold=fold
    )


_DECODERS: dict[int, Callable[[bytes], object]] = {
    EXT_TUPLE: lambda data: tuple(_unpack(data)),
    EXT_SET: lambda data: set(_unpack(data)),
    EXT_FROZENSET: lambda data: frozenset(_unpack(data)),
    EXT_DATETIME: _decode_datetime,
    EXT_DATE: lambda data: dt.date(*_unpack(data)),
    EXT_UUID: lambda data: uuid.UUID(bytes=bytes(data)),
    EXT_DECIMAL: lambda data: Decimal(bytes(data).decode("ascii")),
    EXT_LIST_REF: lambda data: ListRef(bytes(data)),
}


def decode_extension(code: int, data: bytes) -> object:
    """Msgpack's ``ext_hook``: build the value of extension type ``code`` from its payload."""
    decoder = _DECODERS.get(code)
    if decoder is None:
        raise ValueError(f"unknown extension type {code}")
    return decoder(data)


def _unpack(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=decode_extension)


def encode(value: object, *, root: str = "state") -> bytes:
    """Pack ``value`` to msgpack bytes.

    Raises:
        CodecError: ``value`` holds something the codec cannot carry; the error names the
            path to it inside ``value`` (``root`` is its first part).
    """
    try:
        return _pack(value)
    except (TypeError, ValueError, OverflowError, UnicodeError) as exc:
        path, reason = _find_unencodable(value, root) or (root, str(exc))
        raise CodecError(path, reason) from exc
    except RecursionError as exc:  # nested deeper than Python's stack allows
        raise CodecError(root, "nested too deeply to encode") from exc


def decode(data: bytes | memoryview) -> Any:
    """Unpack msgpack bytes written by :func:`encode`.

    Raises:
        CodecError: the bytes are not msgpack, or use an extension type this version does not
            know.
    """
    try:
        return _unpack(data)
    except Exception as exc:  # msgpack raises many unrelated types for malformed input
        raise CodecError("stored bytes", f"cannot decode: {exc}") from exc


def _children(value: object, path: str) -> Iterator[tuple[object, str]]:
    if type(value) is dict:
        for key, item in value.items():
            yield key, f"{path} key {key!r}"
            yield item, f"{path}[{key!r}]"
    elif type(value) in (list, tuple):
        for index, item in enumerate(value):  # type: ignore[arg-type]
            yield item, f"{path}[{index}]"
    elif type(value) in (set, frozenset):
        for item in value:  # type: ignore[attr-defined]
            yield item, f"{path} element {item!r}"


def _scalar_problem(value: object) -> str | None:
    kind = type(value)
    if kind is int and not _INT_MIN <= value <= _INT_MAX:  # type: ignore[operator]
        return "int outside the 64-bit range msgpack carries"
    if kind is str:
        try:
            value.encode("utf-8")  # type: ignore[attr-defined]
        except UnicodeEncodeError:
            return "str not encodable as UTF-8 (a lone surrogate)"
    if kind in _PLAIN_SCALARS or kind in _EXTENSION_SCALARS:
        return None
    return f"unsupported type {kind.__module__}.{kind.__qualname__}"


def _find_unencodable(value: object, root: str) -> tuple[str, str] | None:
    """Walk ``value`` depth first and return (path, reason) of the first thing msgpack refuses."""
    containers = (dict, list, tuple, set, frozenset)
    stack: list[tuple[object, str, frozenset[int]]] = [(value, root, frozenset())]
    while stack:
        item, path, ancestors = stack.pop()
        if type(item) in containers:
            if id(item) in ancestors:
                return path, "refers to itself (a cycle)"
            inner = ancestors | {id(item)}
            children = list(_children(item, path))
            stack.extend((child, child_path, inner) for child, child_path in reversed(children))
            continue
        problem = _scalar_problem(item)
        if problem is not None:
            return path, problem
    return None
