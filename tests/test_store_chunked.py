"""Record format 2 through the store: growing histories chunked, read back, deleted, collected."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from lmdbstate import CheckpointStore, RetentionPolicy
from lmdbstate.kv import CHUNK, CKPT, ReadTxn
from lmdbstate.records import HEADER_SIZE, chunk_refs, is_chunked

from .chunk_oracle import node_references, stored_counts


def recount(txn: ReadTxn) -> Counter[bytes]:
    counts = node_references(txn)
    for _, record in txn.scan(CKPT):
        if is_chunked(record):
            counts.update(chunk_refs(record[HEADER_SIZE:]))
    return counts


def test_growing_histories_read_back_and_their_chunks_go_with_them(store: CheckpointStore) -> None:
    """In every configuration of the store contract (LMDB, memory, PostgreSQL)."""
    rng = random.Random(10)
    written: dict[tuple[str, int], dict[str, object]] = {}
    histories: dict[str, list[dict[str, str]]] = {f"chat-{n}": [] for n in range(3)}
    for step in range(60):
        for workflow_id, messages in histories.items():
            messages.append({"role": "user", "content": f"{workflow_id} {step} " * 20})
            state = {"messages": list(messages), "step": step}
            written[workflow_id, store.put(workflow_id, state).seq] = state
    for (workflow_id, seq), state in written.items():
        assert store.get(workflow_id, seq).state == state
    assert store._read_txn(stored_counts) == +store._read_txn(recount)
    for workflow_id in histories:  # delete a random third of each workflow's checkpoints
        for seq in rng.sample(range(1, 60), 20):
            store.delete(workflow_id, seq=seq)
            del written[workflow_id, seq]
    assert store._read_txn(stored_counts) == +store._read_txn(recount)
    assert store.verify().ok
    store.gc(RetentionPolicy(keep_last=5))
    assert store._read_txn(stored_counts) == +store._read_txn(recount)
    for workflow_id in histories:
        latest = store.latest(workflow_id)
        assert latest is not None
        assert latest.state == written[workflow_id, 60]
    for workflow_id in histories:
        store.delete(workflow_id)
    assert store._read_txn(lambda txn: txn.count(CHUNK)) == 0
    assert store.verify().ok


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 2), st.integers(1, 3)),
        st.tuples(st.just("delete"), st.integers(0, 2), st.integers(0, 40)),
        st.tuples(st.just("gc"), st.integers(1, 4), st.just(0)),
        st.tuples(st.just("drop"), st.integers(0, 2), st.just(0)),
    ),
    max_size=50,
)


@settings(max_examples=40, deadline=None)
@given(OPS)
def test_any_puts_deletes_and_collections_keep_counts_and_every_state(
    ops: list[tuple[str, int, int]],
) -> None:
    """Shared chunks survive deleting any subset of checkpoints; counts equal a recount."""
    with CheckpointStore(":memory:") as store:
        histories: dict[str, list[str]] = {f"chat-{n}": [] for n in range(3)}
        written: dict[tuple[str, int], dict[str, object]] = {}
        for op, which, amount in ops:
            workflow_id = f"chat-{which}"
            if op == "put":
                messages = histories[workflow_id]
                if amount == 3:
                    del messages[: len(messages) // 2]  # not an extension: a flat node
                messages.extend(f"{workflow_id} {len(messages) + n} " * 30 for n in range(amount))
                state = {"messages": list(messages), "n": len(messages)}
                written[workflow_id, store.put(workflow_id, state).seq] = state
            elif op == "delete" and (workflow_id, amount) in written:
                store.delete(workflow_id, seq=amount)
                del written[workflow_id, amount]
            elif op == "gc":
                report = store.gc(RetentionPolicy(keep_last=which))
                for gone in report.deletions:
                    del written[gone.workflow_id, gone.seq]
            elif op == "drop" and any(w == workflow_id for w, _ in written):
                store.delete(workflow_id)
                written = {key: s for key, s in written.items() if key[0] != workflow_id}
                histories[workflow_id] = []
            assert store._read_txn(stored_counts) == +store._read_txn(recount)
        for (workflow_id, seq), state in written.items():
            assert store.get(workflow_id, seq).state == state
        assert store.verify(deep=True).ok


def test_a_cap_below_what_the_heads_share_ends_over_cap_with_the_heads_kept(
    tmp_path: Path,
) -> None:
    with CheckpointStore(tmp_path / "store", durability="async") as store:
        heads = {}
        for step in range(60):
            for n in range(4):
                messages = [f"chat-{n} message {i} " * 25 for i in range(step + 1)]
                heads[f"chat-{n}"] = {"messages": messages}
                store.put(f"chat-{n}", heads[f"chat-{n}"])
        cap = store.stats().live_bytes // 3
        report = store.gc(RetentionPolicy(max_size=cap))
        assert report.over_cap > 0  # the heads hold every message: nothing more may go
        assert report.checkpoints_removed == 4 * 59
        for workflow_id, state in heads.items():
            assert store.latest(workflow_id).state == state  # type: ignore[union-attr]
        assert store.verify().ok
