"""The in-memory backend: all-or-nothing writes, own-writes visibility, ordered scans, close.

The store's whole contract also runs on it (conftest.CONFIGURATIONS["memory"]); these tests hold
the backend itself to the ``kv`` interface, against a plain dict as the model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmdbstate import CheckpointStore, ReadOnlyStoreError, StoreClosedError, StoreError
from lmdbstate.kv import CKPT, META, WF, ReadTxn, WriteTxn
from lmdbstate.memory import MEMORY_PATH, MemoryBackend


@pytest.fixture
def backend() -> Iterator[MemoryBackend]:
    opened = MemoryBackend()
    yield opened
    opened.close()


def put_items(txn: WriteTxn, items: dict[bytes, bytes]) -> None:
    for key, value in items.items():
        txn.put(CKPT, key, value)


def everything(txn: ReadTxn) -> list[tuple[bytes, bytes]]:
    return list(txn.scan(CKPT))


class GaveUp(Exception):
    pass


# -- all or nothing ---------------------------------------------------------------------------


def test_a_write_that_raises_leaves_nothing(backend: MemoryBackend) -> None:
    backend.write(put_items, {b"a": b"1", b"b": b"2"})
    before = backend.storage_info()

    def change_then_fail(txn: WriteTxn) -> None:
        txn.put(CKPT, b"a", b"changed")
        txn.put(CKPT, b"c", b"new")
        txn.put(WF, b"w", b"new table")
        assert txn.delete(CKPT, b"b")
        raise GaveUp

    with pytest.raises(GaveUp):
        backend.write(change_then_fail)
    assert backend.read(everything) == [(b"a", b"1"), (b"b", b"2")]
    assert backend.read(lambda txn: txn.count(WF)) == 0
    assert backend.storage_info() == before


def test_an_interrupted_write_leaves_nothing(backend: MemoryBackend) -> None:
    def interrupted(txn: WriteTxn) -> None:
        txn.put(CKPT, b"a", b"1")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backend.write(interrupted)
    assert backend.read(everything) == []


def test_an_unknown_table_fails_before_anything_is_applied(backend: MemoryBackend) -> None:
    def stray(txn: WriteTxn) -> None:
        txn.put(CKPT, b"a", b"1")
        txn.put("nope", b"a", b"1")

    with pytest.raises(KeyError):
        backend.write(stray)
    assert backend.read(everything) == []


def test_a_write_returns_its_function_result_and_commits(backend: MemoryBackend) -> None:
    assert backend.write(lambda txn, n: txn.put(CKPT, b"k", b"v") or n * 2, 21) == 42
    assert backend.read(lambda txn, key: txn.get(CKPT, key), b"k") == b"v"


# -- reads inside a write see its changes -----------------------------------------------------


def test_a_write_sees_its_own_puts_and_deletes(backend: MemoryBackend) -> None:
    backend.write(put_items, {b"a": b"1", b"b": b"2", b"c": b"3"})

    def check(txn: WriteTxn) -> None:
        txn.put(CKPT, b"b", b"two")
        txn.put(CKPT, b"bb", b"new")
        assert txn.delete(CKPT, b"c")
        assert not txn.delete(CKPT, b"c")  # already deleted in this transaction
        assert not txn.delete(CKPT, b"zz")  # never there
        assert (txn.get(CKPT, b"b"), txn.get(CKPT, b"bb"), txn.get(CKPT, b"c")) == (
            b"two",
            b"new",
            None,
        )
        assert txn.count(CKPT) == 3
        assert list(txn.scan(CKPT)) == [(b"a", b"1"), (b"b", b"two"), (b"bb", b"new")]
        assert list(txn.scan(CKPT, reverse=True)) == [(b"bb", b"new"), (b"b", b"two"), (b"a", b"1")]
        assert txn.last(CKPT, b"a", b"z") == (b"bb", b"new")
        assert txn.last(CKPT, b"a", b"b") == (b"a", b"1")
        txn.put(CKPT, b"c", b"back")  # a key deleted, then put again
        assert txn.last(CKPT, b"", b"z") == (b"c", b"back")
        assert txn.count(CKPT) == 4

    backend.write(check)
    assert backend.read(everything) == [
        (b"a", b"1"),
        (b"b", b"two"),
        (b"bb", b"new"),
        (b"c", b"back"),
    ]


def test_a_read_from_inside_a_write_sees_the_last_commit(backend: MemoryBackend) -> None:
    backend.write(put_items, {b"a": b"1"})

    def nested(txn: WriteTxn) -> list[tuple[bytes, bytes]]:
        txn.put(CKPT, b"b", b"2")
        return backend.read(everything)

    assert backend.write(nested) == [(b"a", b"1")]
    assert backend.read(everything) == [(b"a", b"1"), (b"b", b"2")]


KEYS = st.lists(st.sampled_from(b"ab\x00\xff"), min_size=1, max_size=3).map(bytes)
OPS = st.lists(
    st.tuples(st.sampled_from(["put", "delete"]), KEYS, st.binary(max_size=3)), max_size=12
)


@given(
    committed=st.dictionaries(KEYS, st.binary(max_size=3), max_size=12),
    ops=OPS,
    bounds=st.lists(st.tuples(KEYS | st.just(b""), st.none() | KEYS), min_size=1, max_size=4),
    fail=st.booleans(),
)
def test_reads_inside_a_write_match_a_dict_model(
    committed: dict[bytes, bytes],
    ops: list[tuple[str, bytes, bytes]],
    bounds: list[tuple[bytes, bytes | None]],
    fail: bool,
) -> None:
    backend = MemoryBackend()
    backend.write(put_items, committed)
    model = dict(committed)

    def in_range(key: bytes, low: bytes, high: bytes | None) -> bool:
        return low <= key and (high is None or key < high)

    def check(txn: ReadTxn) -> None:
        assert txn.count(CKPT) == len(model)
        for low, high in bounds:
            expected = sorted((k, v) for k, v in model.items() if in_range(k, low, high))
            assert list(txn.scan(CKPT, low, high)) == expected
            assert list(txn.scan(CKPT, low, high, reverse=True)) == expected[::-1]
            if high is not None:
                assert txn.last(CKPT, low, high) == (expected[-1] if expected else None)

    def apply(txn: WriteTxn) -> None:
        for op, key, value in ops:
            if op == "put":
                txn.put(CKPT, key, value)
                model[key] = value
            else:
                assert txn.delete(CKPT, key) == (key in model)
                model.pop(key, None)
            assert txn.get(CKPT, key) == model.get(key)
            check(txn)
        if fail:
            raise GaveUp

    if fail:
        with pytest.raises(GaveUp):
            backend.write(apply)
        model = committed
    else:
        backend.write(apply)
    backend.read(check)
    live = sum(len(key) + len(value) for key, value in model.items())
    assert backend.storage_info().live_bytes == live


# -- plain reads ------------------------------------------------------------------------------


def test_scans_in_both_directions_with_bounds(backend: MemoryBackend) -> None:
    backend.write(put_items, {bytes([n]): bytes([n]) * 2 for n in range(0, 20, 2)})

    def keys(txn: ReadTxn, low: bytes, high: bytes | None, reverse: bool) -> list[int]:
        return [key[0] for key, _ in txn.scan(CKPT, low, high, reverse=reverse)]

    assert backend.read(keys, b"", None, False) == list(range(0, 20, 2))
    assert backend.read(keys, b"", None, True) == list(range(18, -1, -2))
    assert backend.read(keys, bytes([3]), bytes([9]), False) == [4, 6, 8]
    assert backend.read(keys, bytes([4]), bytes([10]), True) == [8, 6, 4]  # low in, high out
    assert backend.read(keys, bytes([9]), bytes([3]), False) == []
    assert backend.read(keys, bytes([30]), None, True) == []
    assert backend.read(lambda txn: txn.last(CKPT, bytes([5]), bytes([6]))) is None
    assert backend.read(lambda txn: txn.last(CKPT, bytes([4]), bytes([7]))) == (
        b"\x06",
        b"\x06" * 2,
    )
    assert backend.read(lambda txn: txn.last(CKPT, b"", b"\xff")) == (b"\x12", b"\x12" * 2)


def test_a_read_waits_for_a_write_in_progress(backend: MemoryBackend) -> None:
    backend.write(put_items, {b"a": b"old"})
    staged, release = threading.Event(), threading.Event()
    seen: list[list[tuple[bytes, bytes]]] = []

    def slow_write(txn: WriteTxn) -> None:
        txn.put(CKPT, b"a", b"new")
        staged.set()
        release.wait(10)
        txn.put(CKPT, b"b", b"new")

    writer = threading.Thread(target=backend.write, args=(slow_write,))
    reader = threading.Thread(target=lambda: seen.append(backend.read(everything)))
    writer.start()
    assert staged.wait(10)
    reader.start()
    reader.join(0.2)
    assert reader.is_alive()  # it does not see half a transaction: it waits for the commit
    release.set()
    writer.join(10)
    reader.join(10)
    assert seen == [[(b"a", b"new"), (b"b", b"new")]]


def test_storage_info_counts_keys_and_values(backend: MemoryBackend) -> None:
    backend.write(put_items, {b"ab": b"123", b"c": b""})
    assert backend.storage_info().live_bytes == 6
    backend.write(put_items, {b"ab": b"1"})
    assert backend.storage_info().live_bytes == 4
    backend.write(lambda txn: txn.delete(CKPT, b"ab"))
    info = backend.storage_info()
    assert info.live_bytes == 1
    assert (info.file_bytes, info.map_size, info.max_map_size, info.page_size) == (0, 0, 0, 0)
    assert (info.readers_used, info.max_readers) == (0, 0)


# -- lifecycle --------------------------------------------------------------------------------


def test_close_is_idempotent_and_refuses_later_use(tmp_path: Path) -> None:
    backend = MemoryBackend()
    backend.write(put_items, {b"a": b"1"})
    backend.close()
    backend.close()
    for use in (
        lambda: backend.read(everything),
        lambda: backend.write(put_items, {}),
        backend.storage_info,
        lambda: backend.copy_to(str(tmp_path / "copy")),
    ):
        with pytest.raises(StoreClosedError):
            use()


def test_read_only_refuses_writes() -> None:
    backend = MemoryBackend(readonly=True)
    with pytest.raises(ReadOnlyStoreError):
        backend.write(put_items, {b"a": b"1"})
    assert backend.read(everything) == []


def test_every_memory_store_is_fresh_and_private() -> None:
    with CheckpointStore(MEMORY_PATH) as first, CheckpointStore(":memory:") as second:
        first.put("wf", 1)
        assert second.latest("wf") is None
        assert (first.path, first.stats().checkpoints, second.stats().checkpoints) == (
            MEMORY_PATH,
            1,
            0,
        )
    with CheckpointStore(MEMORY_PATH) as third:
        assert list(third.workflows()) == []


def test_a_read_only_memory_store_is_empty() -> None:
    with CheckpointStore(MEMORY_PATH, readonly=True) as store:
        assert store.readonly
        assert store.stats().checkpoints == 0
        with pytest.raises(ReadOnlyStoreError):
            store.put("wf", 1)


def test_copy_to_writes_an_lmdb_store(tmp_path: Path) -> None:
    with CheckpointStore(MEMORY_PATH) as store:
        for n in range(3):
            store.put("wf", {"n": n}, step=n)
        store.put("other", "x")
        store.set_status("other", "completed")
        store._backend.copy_to(str(tmp_path / "copy"))
        with pytest.raises(StoreError, match="already exists"):
            store._backend.copy_to(str(tmp_path / "copy"))
        expected = (list(store.workflows()), list(store.history("wf")), store.latest("wf"))
        meta = store._backend.read(lambda txn: list(txn.scan(META)))
    with CheckpointStore(tmp_path / "copy", readonly=True) as copy:
        assert (list(copy.workflows()), list(copy.history("wf")), copy.latest("wf")) == expected
        assert copy._backend.read(lambda txn: list(txn.scan(META))) == meta
