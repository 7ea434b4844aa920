"""Record format 2 through the store: growing histories chunked, read back, deleted, collected."""

from __future__ import annotations

import random
from collections import Counter

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
