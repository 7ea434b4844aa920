"""chunking: any state round-trips through split and join; a growing list adds one element."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmdbstate import chunking, records
from lmdbstate.chunking import FLAT_EVERY, MIN_ITEMS, ListNode, join
from lmdbstate.codec import ListRef, encode
from lmdbstate.errors import CodecError

LEAVES = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
LONG_LISTS = st.lists(VALUES, min_size=MIN_ITEMS, max_size=MIN_ITEMS + 4)
STATES = st.dictionaries(st.text(max_size=3), VALUES | LONG_LISTS, max_size=4)


class Chunks(dict[bytes, bytes]):
    """A chunk store: what splits made, kept by digest; counts how many reads a join does."""

    reads = 0

    def keep(self, chunked: chunking.Chunked | None) -> None:
        if chunked is not None:
            self.update(chunked.chunks)

    def payload(self, digest: bytes) -> bytes:
        self.reads += 1
        return self[digest]

    def packed_list(self, node: bytes) -> bytes:
        return chunking.pack_list(chunking.list_items(node, self.payload), self.payload)


def split(state: Any, previous: dict[Any, ListNode]) -> chunking.Chunked | None:
    """``chunking.split`` of the state's record body: the other fields come through untouched,
    each chunked list is a ``ListRef`` to its node, every other value is as it was."""
    chunked = chunking.split(records.encode_body(state, "step", 1, {"m": 1}), previous)
    if chunked is not None:
        fields = records.decode_body(chunked.body)
        assert (fields["step"], fields["schema"], fields["meta"]) == ("step", 1, {"m": 1})
        assert fields["state"] == {
            key: ListRef(chunked.lists[key].digest) if key in chunked.lists else value
            for key, value in state.items()
        }
    return chunked


def stored(state: Any, chunked: chunking.Chunked | None) -> Any:
    """The state as a record would hold it, ListRefs included."""
    return state if chunked is None else records.decode_body(chunked.body)["state"]


@given(STATES)
def test_any_state_round_trips(state: dict[str, Any]) -> None:
    chunks = Chunks()
    chunked = split(state, {})
    chunks.keep(chunked)
    assert join(stored(state, chunked), chunks) == state


@given(st.lists(STATES, min_size=1, max_size=4))
def test_a_series_of_states_round_trips_whatever_the_previous_lists(
    states: list[dict[str, Any]],
) -> None:
    chunks = Chunks()
    previous: dict[Any, ListNode] = {}
    for state in states:
        chunked = split(state, previous)
        chunks.keep(chunked)
        previous = {} if chunked is None else chunked.lists
        assert join(stored(state, chunked), chunks) == state


def test_a_growing_list_adds_its_new_element_and_one_small_node() -> None:
    chunks = Chunks()
    previous: dict[Any, ListNode] = {}
    messages = [{"role": "user", "content": f"message {n} " * 20} for n in range(MIN_ITEMS)]
    depths = []
    for step in range(3 * FLAT_EVERY):
        messages.append({"role": "assistant", "content": f"reply {step} " * 30})
        state = {"messages": list(messages), "step": step}
        chunked = split(state, previous)
        assert chunked is not None
        new = {digest: data for digest, data in chunked.chunks.items() if digest not in chunks}
        chunks.keep(chunked)
        node = chunked.lists["messages"]
        depths.append(node.depth)
        if node.depth:  # only the new message and a node of two digests are new
            assert len(new) == 2
            assert sum(map(len, new.values())) < len(encode(messages[-1])) + 60
            assert chunked.links[node.digest] == (previous["messages"].digest, node.items[-1])
        previous = chunked.lists
        chunks.reads = 0
        assert join(stored(state, chunked), chunks) == state
        assert chunks.reads <= FLAT_EVERY + len(messages)  # nodes followed, then the elements
    assert max(depths) == FLAT_EVERY - 1
    assert depths.count(0) == 3  # flat every FLAT_EVERY nodes


def test_an_unchanged_list_names_the_same_node_and_a_changed_one_a_flat_node() -> None:
    items = list(range(MIN_ITEMS + 2))
    first = split({"xs": items}, {})
    assert first is not None
    same = split({"xs": list(items)}, first.lists)
    assert same is not None
    assert same.lists["xs"] == first.lists["xs"]
    assert same.links == {}
    edited = split({"xs": [99, *items[1:]]}, first.lists)  # not an extension: flat again
    assert edited is not None
    assert edited.lists["xs"].depth == 0
    assert len(edited.links[edited.lists["xs"].digest]) == len(items)


def test_small_states_and_short_lists_stay_inline() -> None:
    assert split({"xs": list(range(MIN_ITEMS - 1))}, {}) is None
    assert split([1] * 100, {}) is None
    assert split({"n": 1}, {}) is None


def test_bad_nodes_are_typed_errors() -> None:
    for payload in (b"\xc1", encode([None, [b"short"]]), encode(["x", []])):
        with pytest.raises(CodecError):
            join({"xs": ListRef(b"n" * 16)}, Chunks({b"n" * 16: payload}))
    looped = chunking.encode_node(b"n" * 16, [])  # a node that names itself: never ends
    with pytest.raises(CodecError, match="chain"):
        join({"xs": ListRef(b"n" * 16)}, Chunks({b"n" * 16: looped}))
