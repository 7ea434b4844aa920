"""chunkstore: reference counts equal a recount after any sequence of puts and deletes."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lmdbstate import chunking, chunkstore
from lmdbstate.chunking import MIN_ITEMS, ListNode
from lmdbstate.kv import CHUNK, ReadTxn, WriteTxn
from lmdbstate.memory import MemoryBackend
from lmdbstate.records import encode_body

from .chunk_oracle import node_references, stored_counts


def recount(txn: ReadTxn, records: list[tuple[bytes, ...]]) -> Counter[bytes]:
    """References by walking from the records: each record's nodes, each stored node's links."""
    counts = node_references(txn)
    for refs in records:
        counts.update(refs)
    return counts


class Workflow:
    """A chat history growing by one message per put, its lists carried from put to put."""

    def __init__(self, name: str) -> None:
        self.messages = [f"{name} opening {n}" for n in range(MIN_ITEMS)]
        self.previous: dict[Any, ListNode] = {}

    def next_split(self) -> chunking.Chunked:
        self.messages.append(f"message {len(self.messages)}")
        state = {"messages": list(self.messages)}
        chunked = chunking.split(encode_body(state, None, 1, {}), self.previous)
        assert chunked is not None
        self.previous = chunked.lists
        return chunked


@settings(max_examples=60)
@given(st.lists(st.tuples(st.sampled_from("put delete"), st.integers(0, 2)), max_size=60))
def test_counts_equal_a_recount_after_any_puts_and_deletes(ops: list[tuple[str, int]]) -> None:
    backend = MemoryBackend()
    workflows = [Workflow(f"w{n}") for n in range(3)]
    records: list[tuple[bytes, ...]] = []  # the refs of each live record, oldest first
    for op, which in ops:
        if op == "put":
            chunked = workflows[which].next_split()

            def put(txn: WriteTxn, chunked: chunking.Chunked = chunked) -> None:
                chunkstore.acquire(txn, chunked.refs, chunked)

            backend.write(put)
            records.append(chunked.refs)
        elif records:
            refs = records.pop(which % len(records))
            backend.write(lambda txn, refs=refs: chunkstore.release(txn, refs))
        assert backend.read(stored_counts) == +backend.read(recount, records)
    for refs in records:  # every list still reads back whole
        for digest in refs:
            items = backend.read(
                lambda txn, d=digest: chunking.list_items(d, lambda c: chunkstore.payload(txn, c))
            )
            counts = backend.read(stored_counts)
            assert all(counts[item] > 0 for item in items)
    for refs in records:
        backend.write(lambda txn, refs=refs: chunkstore.release(txn, refs))
    assert backend.read(lambda txn: txn.count(CHUNK)) == 0
