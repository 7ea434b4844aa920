"""The store's contract, in every configuration of conftest.CONFIGURATIONS."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from lmdbstate import (
    CheckpointNotFoundError,
    CheckpointStore,
    CodecError,
    InvalidInputError,
    InvalidSeqError,
    InvalidStatusError,
    InvalidWorkflowIdError,
    ReadOnlyStoreError,
    SequenceConflictError,
    StoreClosedError,
    WorkflowNotFoundError,
)
from lmdbstate.kv import AGE, CKPT, WF
from lmdbstate.memory import MEMORY_PATH


def rich_state(n: int) -> dict[str, Any]:
    return {
        "n": n,
        "items": [{"i": i, "name": f"item-{i}"} for i in range(n)],
        "when": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "id": uuid.UUID(int=n),
        "amount": Decimal("1.5") * n,
        "pair": (n, "x"),
        "tags": {"a", "b"},
        "blob": bytes([n % 256]) * 10,
    }


def table_sizes(store: CheckpointStore) -> tuple[int, int, int]:
    return store._backend.read(lambda txn: (txn.count(CKPT), txn.count(WF), txn.count(AGE)))


def test_put_assigns_growing_seqs_and_latest_returns_the_newest(store: CheckpointStore) -> None:
    for n in range(1, 6):
        info = store.put("wf", rich_state(n), step=f"s{n}", schema=2, meta={"by": "test"})
        assert (info.workflow_id, info.seq, info.step, info.schema) == ("wf", n, f"s{n}", 2)
    latest = store.latest("wf")
    assert latest is not None
    assert latest.seq == 5
    assert latest.state == rich_state(5)
    assert latest.step == "s5"
    assert latest.meta == {"by": "test"}
    assert latest.info == info


def test_get_returns_each_checkpoint(store: CheckpointStore) -> None:
    infos = [store.put("wf", rich_state(n), step=n) for n in range(3)]
    for n, info in enumerate(infos):
        ckpt = store.get("wf", info.seq)
        assert ckpt.state == rich_state(n)
        assert ckpt.step == n
        assert ckpt.info == info


def test_workflows_are_independent(store: CheckpointStore) -> None:
    store.put("a", 1)
    store.put("b", 2)
    store.put("a", 3)
    # "a" and "a\x01"-like prefixes must not bleed into each other.
    store.put("ab", 4)
    latest_a, latest_b, latest_ab = store.latest("a"), store.latest("b"), store.latest("ab")
    assert latest_a is not None
    assert (latest_a.seq, latest_a.state) == (2, 3)
    assert latest_b is not None
    assert (latest_b.seq, latest_b.state) == (1, 2)
    assert latest_ab is not None
    assert (latest_ab.seq, latest_ab.state) == (1, 4)


def test_latest_of_unknown_workflow_is_none(store: CheckpointStore) -> None:
    store.put("other", 1)
    assert store.latest("missing") is None


def test_get_missing(store: CheckpointStore) -> None:
    store.put("wf", 1)
    with pytest.raises(CheckpointNotFoundError) as caught:
        store.get("wf", 2)
    assert (caught.value.workflow_id, caught.value.seq) == ("wf", 2)
    with pytest.raises(WorkflowNotFoundError):
        store.get("nope", 1)


def test_history_forward_reverse_and_limit(store: CheckpointStore) -> None:
    for n in range(600):  # more than one read chunk
        store.put("wf", n, step=f"s{n}")
    store.put("wf2", "other")
    forward = list(store.history("wf"))
    assert [info.seq for info in forward] == list(range(1, 601))
    assert forward[0].step == "s0"
    assert [info.seq for info in store.history("wf", reverse=True)] == list(range(600, 0, -1))
    assert [info.seq for info in store.history("wf", limit=257)] == list(range(1, 258))
    assert [info.seq for info in store.history("wf", reverse=True, limit=3)] == [600, 599, 598]
    assert list(store.history("wf", limit=0)) == []
    assert list(store.history("wf2")) == [store.get("wf2", 1).info]


def test_history_of_unknown_workflow_raises_at_the_call(store: CheckpointStore) -> None:
    with pytest.raises(WorkflowNotFoundError):
        store.history("missing")


@pytest.mark.parametrize("limit", [-1, 1.5, True])
def test_history_refuses_bad_limits(store: CheckpointStore, limit: Any) -> None:
    store.put("wf", 1)
    with pytest.raises(InvalidInputError):
        store.history("wf", limit=limit)


def test_workflow_index_tracks_counts_bytes_and_status(store: CheckpointStore) -> None:
    a1 = store.put("a", "x" * 100)
    a2 = store.put("a", "y" * 50, schema=3)
    store.put("b", 1)
    info = store.workflow("a")
    assert (info.status, info.head_seq, info.last_seq, info.checkpoints) == ("running", 2, 2, 2)
    assert info.bytes == a1.size + a2.size
    assert info.schema == 3
    store.set_status("a", "completed")
    assert [w.workflow_id for w in store.workflows()] == ["a", "b"]
    assert [w.workflow_id for w in store.workflows(status="completed")] == ["a"]
    assert [w.workflow_id for w in store.workflows(status="running")] == ["b"]
    assert store.workflow("a").updated_ns >= info.updated_ns


def test_many_workflows_list_across_chunks(store: CheckpointStore) -> None:
    with store.batch() as batch:
        for n in range(700):
            batch.put(f"wf-{n:04d}", n)
    assert [w.workflow_id for w in store.workflows()] == [f"wf-{n:04d}" for n in range(700)]


def test_set_status_refuses_unknown(store: CheckpointStore) -> None:
    store.put("wf", 1)
    with pytest.raises(InvalidStatusError):
        store.set_status("wf", "paused")  # type: ignore[arg-type]
    with pytest.raises(WorkflowNotFoundError):
        store.set_status("missing", "failed")
    with pytest.raises(InvalidStatusError):
        store.workflows(status="done")  # type: ignore[arg-type]


def test_expect_seq_is_a_compare_and_swap(store: CheckpointStore) -> None:
    assert store.put("wf", 1, expect_seq=0).seq == 1
    with pytest.raises(SequenceConflictError) as caught:
        store.put("wf", 2, expect_seq=0)
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    assert store.put("wf", 2, expect_seq=1).seq == 2
    with pytest.raises(SequenceConflictError):
        store.put("wf", 3, expect_seq=1)
    assert table_sizes(store) == (2, 1, 2)


def test_delete_one_checkpoint_keeps_seqs_growing(store: CheckpointStore) -> None:
    for n in range(3):
        store.put("wf", n)
    assert store.delete("wf", seq=3) == 1
    info = store.workflow("wf")
    assert (info.head_seq, info.last_seq, info.checkpoints) == (2, 3, 2)
    latest = store.latest("wf")
    assert latest is not None
    assert latest.seq == 2
    assert store.put("wf", "next").seq == 4
    store.delete("wf", seq=1)
    assert [i.seq for i in store.history("wf")] == [2, 4]
    assert store.workflow("wf").bytes == sum(i.size for i in store.history("wf"))
    with pytest.raises(CheckpointNotFoundError):
        store.delete("wf", seq=1)


def test_delete_every_checkpoint_one_by_one(store: CheckpointStore) -> None:
    store.put("wf", 1)
    store.delete("wf", seq=1)
    info = store.workflow("wf")
    assert (info.head_seq, info.checkpoints, info.bytes) == (0, 0, 0)
    assert store.latest("wf") is None
    assert store.put("wf", 2, expect_seq=0).seq == 2


def test_delete_workflow_removes_every_index_entry(store: CheckpointStore) -> None:
    for n in range(5):
        store.put("gone", n)
    store.put("kept", 1)
    assert store.delete("gone") == 5
    assert table_sizes(store) == (1, 1, 1)
    with pytest.raises(WorkflowNotFoundError):
        store.workflow("gone")
    with pytest.raises(WorkflowNotFoundError):
        store.delete("gone")
    # A new workflow under the same id starts again at seq 1.
    assert store.put("gone", "again").seq == 1


def test_batch_is_all_or_nothing(store: CheckpointStore) -> None:
    store.put("wf", 0)
    with store.batch() as batch:
        batch.put("wf", 1, step="a")
        batch.put("wf", 2, step="b", expect_seq=2)
        batch.put("other", 3)
    assert [(c.workflow_id, c.seq) for c in batch.checkpoints] == [
        ("wf", 2),
        ("wf", 3),
        ("other", 1),
    ]

    def give_up() -> None:
        with store.batch() as failed:
            failed.put("wf", 4)
            raise RuntimeError("the caller gave up")

    with pytest.raises(RuntimeError):
        give_up()

    def conflict() -> None:
        with store.batch() as conflicting:
            conflicting.put("wf", 4)
            conflicting.put("new", 5)
            conflicting.put("wf", 6, expect_seq=3)  # the head is 4 by then

    with pytest.raises(SequenceConflictError):
        conflict()
    assert store.workflow("wf").head_seq == 3
    with pytest.raises(WorkflowNotFoundError):
        store.workflow("new")


def test_batch_refuses_a_bad_state_at_put(store: CheckpointStore) -> None:
    with store.batch() as batch:
        batch.put("wf", 1)
        with pytest.raises(CodecError):
            batch.put("wf", object())
    assert [c.seq for c in batch.checkpoints] == [1]


def test_empty_batch_writes_nothing(store: CheckpointStore) -> None:
    with store.batch() as batch:
        pass
    assert batch.checkpoints == ()
    assert table_sizes(store) == (0, 0, 0)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"workflow_id": ""}, InvalidWorkflowIdError),
        ({"workflow_id": "a\x00"}, InvalidWorkflowIdError),
        ({"workflow_id": "x" * 501}, InvalidWorkflowIdError),
        ({"workflow_id": 7}, InvalidWorkflowIdError),
        ({"state": {"f": lambda: 1}}, CodecError),
        ({"meta": {"f": object()}}, CodecError),
        ({"meta": ["not", "a", "dict"]}, InvalidInputError),
        ({"step": 1.5}, InvalidInputError),
        ({"step": True}, InvalidInputError),
        ({"schema": 0}, InvalidInputError),
        ({"schema": True}, InvalidInputError),
        ({"expect_seq": -1}, InvalidSeqError),
        ({"expect_seq": True}, InvalidSeqError),
    ],
)
def test_bad_input_writes_nothing(
    store: CheckpointStore, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    store.put("wf", "first")
    arguments: dict[str, Any] = {"workflow_id": "wf", "state": {"ok": 1}, **kwargs}
    with pytest.raises(error):
        store.put(arguments.pop("workflow_id"), arguments.pop("state"), **arguments)
    assert table_sizes(store) == (1, 1, 1)
    assert store.workflow("wf").head_seq == 1


@pytest.mark.parametrize("seq", [0, -3, True, "1"])
def test_reads_refuse_bad_seqs(store: CheckpointStore, seq: Any) -> None:
    store.put("wf", 1)
    with pytest.raises(InvalidSeqError):
        store.get("wf", seq)
    with pytest.raises(InvalidSeqError):
        store.delete("wf", seq=seq)


def test_stats_counts(store: CheckpointStore) -> None:
    sizes = [store.put("big", "x" * 5000).size for _ in range(3)]
    store.put("small", 1)
    store.set_status("small", "failed")
    stats = store.stats()
    assert stats.workflows == 2
    assert stats.workflows_by_status == {"running": 1, "completed": 0, "failed": 1, "cancelled": 0}
    assert stats.checkpoints == 4
    assert stats.record_bytes == sum(sizes) + store.workflow("small").bytes
    assert [w.workflow_id for w in stats.largest] == ["big", "small"]
    assert stats.oldest_ns is not None
    assert stats.newest_ns is not None
    assert stats.oldest_ns <= stats.newest_ns
    assert stats.record_bytes < stats.live_bytes
    assert stats.format_version == 2
    if store.path == MEMORY_PATH:  # no file, no pages, no reader slots
        assert stats.file_bytes == stats.page_size == stats.map_size == stats.max_readers == 0
    else:
        assert stats.page_size >= 4096
        assert stats.live_bytes <= stats.file_bytes
        assert stats.readers_used <= stats.max_readers


def test_stats_of_empty_store(store: CheckpointStore) -> None:
    stats = store.stats()
    assert (stats.workflows, stats.checkpoints, stats.oldest_ns, stats.largest) == (0, 0, None, ())


def test_closed_store_refuses_everything(store_path: Path) -> None:
    store = CheckpointStore(store_path)
    store.put("wf", 1)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreClosedError):
        store.put("wf", 2)
    with pytest.raises(StoreClosedError):
        store.latest("wf")
    with CheckpointStore(store_path, readonly=True) as reopened:
        latest = reopened.latest("wf")
        assert latest is not None
        assert latest.state == 1


def test_read_only_store_reads_and_refuses_writes(store_path: Path) -> None:
    with CheckpointStore(store_path) as store:
        store.put("wf", {"a": 1})
    with CheckpointStore(store_path, readonly=True) as readonly:
        assert readonly.readonly
        latest = readonly.latest("wf")
        assert latest is not None
        assert latest.state == {"a": 1}
        assert readonly.stats().checkpoints == 1
        for write in (
            lambda: readonly.put("wf", 2),
            lambda: readonly.delete("wf"),
            lambda: readonly.set_status("wf", "completed"),
        ):
            with pytest.raises(ReadOnlyStoreError):
                write()
        with pytest.raises(ReadOnlyStoreError), readonly.batch() as batch:
            batch.put("wf", 3)
        assert readonly.workflow("wf").head_seq == 1


def test_repr_names_path_and_mode(store: CheckpointStore) -> None:
    assert store.path in repr(store)
    assert store.durability in repr(store)
