"""lmdb's exceptions become lmdbstate's in one place; damaged index entries and bodies."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import lmdb
import msgpack
import pytest

from lmdbstate import (
    CheckpointStore,
    IntegrityError,
    ReadOnlyStoreError,
    StoreCorruptedError,
    StoreDiskFullError,
    StoreError,
    StoreFullError,
    UnsupportedFormatError,
)
from lmdbstate.env import translated_errors
from lmdbstate.keys import checkpoint_key
from lmdbstate.records import build

from .conftest import TINY_MAP


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (lmdb.MapFullError, StoreFullError),
        (lmdb.DiskError, StoreDiskFullError),
        (lmdb.ReadonlyError, ReadOnlyStoreError),
        (lmdb.VersionMismatchError, UnsupportedFormatError),
        (lmdb.CorruptedError, StoreCorruptedError),
        (lmdb.PageNotFoundError, StoreCorruptedError),
        (lmdb.InvalidError, StoreCorruptedError),
        (lmdb.PanicError, StoreError),
        (lmdb.ReadersFullError, StoreError),
        (lmdb.BadTxnError, StoreError),
        (lmdb.Error, StoreError),
    ],
)
def test_every_lmdb_error_is_translated(
    raised: type[lmdb.Error], expected: type[StoreError]
) -> None:
    with pytest.raises(expected) as caught, translated_errors("/some/store"):
        raise raised("boom")
    assert type(caught.value) is expected
    assert isinstance(caught.value.__cause__, raised)
    assert str(caught.value.path) == "/some/store"
    assert caught.value.hint


def raw_put(path: Path, db: bytes, key: bytes, value: bytes) -> None:
    env = lmdb.open(str(path), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(key, value, db=env.open_db(db, txn=txn))
    env.close()


def raw_delete(path: Path, db: bytes, key: bytes) -> None:
    env = lmdb.open(str(path), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.delete(key, db=env.open_db(db, txn=txn))
    env.close()


@pytest.mark.parametrize(
    "entry",
    [
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"status": "weird"}),
        msgpack.packb({"status": "running"}),
    ],
)
def test_a_damaged_index_entry_is_reported(store_path: Path, entry: bytes) -> None:
    with CheckpointStore(store_path) as store:
        store.put("wf", 1)
    raw_put(store_path, b"wf", b"wf", entry)
    with CheckpointStore(store_path) as store:
        with pytest.raises(StoreCorruptedError, match="index entry of workflow 'wf'"):
            store.workflow("wf")
        with pytest.raises(StoreCorruptedError):
            store.put("wf", 2)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xc1", "cannot decode"),
        (msgpack.packb([1]), "not a map"),
        (msgpack.packb({"state": 1}), "lacks"),
    ],
)
def test_a_body_that_verifies_but_does_not_decode(
    store_path: Path, body: bytes, reason: str
) -> None:
    with CheckpointStore(store_path) as store:
        store.put("wf", 1)
    key = checkpoint_key(b"wf", 1)
    raw_put(store_path, b"ckpt", key, build(key, body, 1))
    with CheckpointStore(store_path) as store, pytest.raises(IntegrityError, match=reason):
        store.get("wf", 1)


def test_records_without_a_format_entry_are_refused(store_path: Path) -> None:
    with CheckpointStore(store_path) as store:
        store.put("wf", 1)
    raw_delete(store_path, b"meta", b"format")
    for readonly in (True, False):
        with pytest.raises(StoreCorruptedError, match="no format entry"):
            CheckpointStore(store_path, readonly=readonly)


def test_an_empty_store_without_a_format_entry_is_initialised(store_path: Path) -> None:
    with CheckpointStore(store_path):
        pass
    raw_delete(store_path, b"meta", b"format")
    with CheckpointStore(store_path, readonly=True) as store:
        assert store.stats().format_version == 2
    with CheckpointStore(store_path) as store:
        store.put("wf", 1)
    with CheckpointStore(store_path, readonly=True) as store:
        assert store.stats().checkpoints == 1


@pytest.mark.parametrize("round_", range(5))
def test_reads_in_other_threads_survive_map_growth(tmp_path: Path, round_: int) -> None:
    failures: list[BaseException] = []
    done = threading.Event()
    with CheckpointStore(tmp_path / "store", durability="async", map_size=TINY_MAP) as store:
        store.put("wf", {"n": 0})

        def read_until_done() -> None:
            try:
                while not done.is_set():
                    latest = store.latest("wf")
                    assert latest is not None
                    list(store.history("wf", reverse=True, limit=5))
                    # A pause between reads: two threads spinning in Python would starve the
                    # writer of the GIL (a convoy), not test anything more.
                    time.sleep(0.0002)
            except BaseException as exc:  # reported below
                failures.append(exc)

        readers = [threading.Thread(target=read_until_done) for _ in range(2)]
        for reader in readers:
            reader.start()
        for n in range(1, 300):
            store.put("wf", {"n": n, "pad": "x" * 30_000})
        done.set()
        for reader in readers:
            reader.join()
        assert store.stats().map_size >= 8 * 1024 * 1024
    assert failures == []


def test_a_put_never_overwrites_records_whose_index_entry_is_lost(store_path: Path) -> None:
    with CheckpointStore(store_path) as store:
        for n in range(3):
            store.put("wf", n)
    raw_delete(store_path, b"wf", b"wf")
    with CheckpointStore(store_path) as store:
        with pytest.raises(StoreCorruptedError, match="no index entry"):
            store.put("wf", "new")
        assert store.get("wf", 1).state == 0  # untouched
        store.repair(backup_dir=store_path.parent / "bak")
        assert store.put("wf", "new").seq == 4


VIEW_READS_WHILE_THE_MAP_GROWS = """
import os, sys, threading
from lmdbstate import CheckpointStore, RetentionPolicy

with CheckpointStore(sys.argv[1], durability="async", map_size=1 << 20) as store:
    for n in range(4):
        store.put(f"wf{n}", {"x": os.urandom(4 << 20)})
    stop = threading.Event()

    def view_reads():
        while not stop.is_set():
            store.gc(RetentionPolicy(keep_last=1000), dry_run=True)  # headers read as views
            list(store.history("wf0"))

    reader = threading.Thread(target=view_reads)
    reader.start()
    big = os.urandom(2 << 20)
    for n in range(120):
        store.put(f"g{n % 3}", {"x": big})  # the map doubles again and again
    stop.set()
    reader.join()
print("done")
"""


def test_view_reads_survive_map_growth_in_another_thread(tmp_path: Path) -> None:
    """Regression (review): view reads hand out memoryviews into the map; a resize in another
    thread unmapped it under them and the process died of SIGSEGV. Run in a child process so a
    crash fails the test instead of killing the run."""
    result = subprocess.run(
        [sys.executable, "-c", VIEW_READS_WHILE_THE_MAP_GROWS, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (result.returncode, result.stdout) == (0, "done\n"), result.stderr[-2000:]
