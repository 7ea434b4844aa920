from __future__ import annotations

import collections
import datetime as dt
import enum
import math
import uuid
import zoneinfo
from decimal import Decimal
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmdbstate import CodecError
from lmdbstate.codec import MAX_NESTED_EXTENSIONS, decode, encode

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.datetimes()
    | st.datetimes(timezones=st.timezones())
    | st.dates()
    | st.uuids()
    | st.decimals(allow_nan=False)
)
hashables = st.recursive(
    scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4), max_leaves=8
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.text(max_size=8) | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
            inner,
            max_size=5,
        )
        | st.tuples(inner, inner)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
    ),
    max_leaves=25,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of exactly the same types all the way down (1 == True, but not here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dt.datetime):
        return (
            a == b and a.tzinfo == b.tzinfo and a.fold == b.fold and a.utcoffset() == b.utcoffset()
        )
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@given(values)
def test_every_supported_value_round_trips_with_its_type(value: Any) -> None:
    assert same(decode(encode(value)), value)


@given(values)
def test_encoding_is_deterministic(value: Any) -> None:
    assert encode(value) == encode(value)


def test_plain_values_are_plain_msgpack() -> None:
    value = {"a": [1, 2.5, "x", b"y", None, True]}
    assert encode(value) == msgpack.packb(value, use_bin_type=True)


@pytest.mark.parametrize(
    "moment",
    [
        dt.datetime(2026, 11, 27, 10, 0, 0, 123456),
        dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
        dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")),
        dt.datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
    ],
)
def test_datetimes_keep_their_zone(moment: dt.datetime) -> None:
    back = decode(encode(moment))
    assert same(back, moment)
    assert back.tzname() == moment.tzname()


def test_zoneinfo_comes_back_as_the_same_zone() -> None:
    moment = dt.datetime(2026, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    assert decode(encode(moment)).tzinfo is zoneinfo.ZoneInfo("Europe/Paris")


class Color(enum.IntEnum):
    RED = 1


class Thing:
    pass


@pytest.mark.parametrize(
    ("state", "path", "reason"),
    [
        ({"a": [1, 2, 3, Thing()]}, "state['a'][3]", "Thing"),
        ({"a": Color.RED}, "state['a']", "Color"),
        ([collections.OrderedDict()], "state[0]", "OrderedDict"),
        ({"n": 1 << 64}, "state['n']", "64-bit"),
        ({"s": "\ud800"}, "state['s']", "UTF-8"),
        ({(1, Thing()): 1}, "state key (1, ", "Thing"),
        ({"x": {Thing()}}, "state['x'] element", "Thing"),
    ],
)
def test_unencodable_values_name_their_path(state: Any, path: str, reason: str) -> None:
    with pytest.raises(CodecError) as caught:
        encode(state)
    assert caught.value.path.startswith(path)
    assert reason in caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_a_cycle_is_named() -> None:
    state: dict[str, Any] = {"a": []}
    state["a"].append(state)
    with pytest.raises(CodecError, match="cycle"):
        encode(state)


def test_too_deep_nesting_is_a_codec_error() -> None:
    state: Any = []
    for _ in range(2000):
        state = [state]
    with pytest.raises(CodecError):
        encode(state)


def test_unknown_extension_type_is_refused_on_decode() -> None:
    with pytest.raises(CodecError, match="unknown extension type 99"):
        decode(msgpack.packb(msgpack.ExtType(99, b"")))


@pytest.mark.parametrize("garbage", [b"\xc1", b"\x92\x01", b""])
def test_garbage_is_a_codec_error(garbage: bytes) -> None:
    with pytest.raises(CodecError):
        decode(garbage)


def test_decoding_never_imports_by_name() -> None:
    # A payload in the shape pickle-style loaders obey must come back as data, not an object.
    payload = msgpack.packb({"__class__": "os.system", "args": ["true"]})
    assert decode(payload) == {"__class__": "os.system", "args": ["true"]}


def test_bytearray_comes_back_as_bytes() -> None:
    assert same(decode(encode({"b": bytearray(b"xy")})), {"b": b"xy"})


def test_extension_values() -> None:
    value = (uuid.UUID(int=5), Decimal("1.10"), dt.date(2020, 2, 29), {3, 1, 2}, frozenset("ab"))
    assert same(decode(encode(value)), value)


def test_tuples_and_sets_nested_deeper_than_the_limit_are_refused() -> None:
    """Deeper nesting crashed the process on read (the C stack, at 200 levels): refused now."""
    deepest: object = 1
    for level in range(MAX_NESTED_EXTENSIONS):
        deepest = (deepest,) if level % 2 else frozenset({deepest})
    assert decode(encode(deepest)) == deepest
    for too_deep in ((deepest,), [{"a": frozenset({deepest})}]):
        with pytest.raises(CodecError, match="nested more than 64 levels deep"):
            encode(too_deep)
    lists: object = 1
    for _ in range(3000):
        lists = [lists]
    with pytest.raises(CodecError):  # msgpack's own limit, as a typed error
        encode(lists)
