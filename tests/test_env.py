"""LMDB handling: map growth, full maps, sharing, processes, fork, files that are not stores."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lmdb
import msgpack
import pytest

from lmdbstate import (
    CheckpointStore,
    ConfigError,
    ForkedStoreError,
    ReadOnlyStoreError,
    StoreCorruptedError,
    StoreError,
    StoreFullError,
    StoreInUseError,
    StoreNotFoundError,
    UnsupportedFormatError,
)
from lmdbstate.kv import AGE, CKPT, WF

from .conftest import TINY_MAP

WRITER = textwrap.dedent(
    """
    import sys
    from lmdbstate import CheckpointStore

    path, workflow_id, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with CheckpointStore(path, durability="async", map_size=64 * 1024) as store:
        for n in range(count):
            store.put(workflow_id, {"n": n, "pad": "x" * size})
    """
)


def run_writers(path: Path, workflows: list[str], count: int, size: int) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), wf, str(count), str(size)])
        for wf in workflows
    ]
    assert [proc.wait(timeout=120) for proc in procs] == [0] * len(procs)


def test_map_grows_from_tiny(store_path: Path) -> None:
    with CheckpointStore(store_path, durability="async", map_size=TINY_MAP) as store:
        for n in range(20):
            store.put("wf", {"n": n, "pad": "x" * 50_000})
        assert store.stats().map_size > TINY_MAP
        assert [i.seq for i in store.history("wf")] == list(range(1, 21))
        latest = store.latest("wf")
        assert latest is not None
        assert latest.state["n"] == 19


def test_full_map_raises_and_leaves_nothing_half_written(store_path: Path) -> None:
    cap = 256 * 1024
    with CheckpointStore(store_path, durability="async", map_size=cap, max_map_size=cap) as store:
        acked: list[int] = []

        def fill() -> None:
            for n in range(100):
                acked.append(store.put("wf", {"n": n, "pad": "x" * 20_000}).seq)

        with pytest.raises(StoreFullError) as caught:
            fill()
        assert caught.value.hint
        written = len(acked)
        assert 0 < written < 100
        counts = store._backend.read(lambda txn: (txn.count(CKPT), txn.count(WF), txn.count(AGE)))
        assert counts == (written, 1, written)
        assert store.workflow("wf").head_seq == written
        # The store keeps working: deleting frees room for new checkpoints.
        store.delete("wf", seq=1)
        store.delete("wf", seq=2)
        assert store.put("wf", {"n": "after"}).seq == written + 1


def test_four_processes_write_concurrently_from_a_tiny_map(store_path: Path) -> None:
    with CheckpointStore(store_path, durability="async", map_size=TINY_MAP):
        pass
    workflows = ["one", "two", "three", "four"]
    run_writers(store_path, workflows, count=300, size=2000)
    with CheckpointStore(store_path, readonly=True) as store:
        for workflow_id in workflows:
            infos = list(store.history(workflow_id))
            assert [i.seq for i in infos] == list(range(1, 301))
            assert [store.get(workflow_id, i.seq).state["n"] for i in infos] == list(range(300))
        assert store.stats().checkpoints == 1200
        assert store.stats().map_size > 2 * 1024 * 1024  # grown many times over, by four processes
        assert store.verify().ok


def test_a_store_adopts_growth_by_another_process(store_path: Path) -> None:
    with CheckpointStore(store_path, durability="async", map_size=TINY_MAP) as store:
        store.put("mine", 1)
        before = store.stats().map_size
        run_writers(store_path, ["theirs"], count=200, size=10_000)
        # This process's map is smaller than the data now: reads and writes adopt the new size.
        latest = store.latest("theirs")
        assert latest is not None
        assert latest.state["n"] == 199
        assert store.put("mine", 2).seq == 2
        assert store.stats().map_size > before


def test_same_path_twice_shares_one_environment(store_path: Path) -> None:
    first = CheckpointStore(store_path)
    second = CheckpointStore(store_path)
    first.put("wf", 1)
    latest = second.latest("wf")
    assert latest is not None
    assert latest.state == 1
    first.close()
    second.put("wf", 2)  # still open: the environment closes with its last user
    reader = CheckpointStore(store_path, readonly=True)
    with pytest.raises(ReadOnlyStoreError):
        reader.put("wf", 3)
    reader.close()
    second.close()


def test_conflicting_options_on_one_path_are_refused(store_path: Path) -> None:
    with CheckpointStore(store_path):
        pass
    with (
        CheckpointStore(store_path, durability="sync"),
        pytest.raises(StoreInUseError, match="durability"),
    ):
        CheckpointStore(store_path, durability="async")
    with (
        CheckpointStore(store_path, readonly=True),
        pytest.raises(StoreInUseError, match="read-only"),
    ):
        CheckpointStore(store_path)


def test_store_used_after_fork_raises_in_the_child(store_path: Path) -> None:
    store = CheckpointStore(store_path)
    store.put("wf", 1)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        outcomes = []
        for attempt in (lambda: store.latest("wf"), lambda: CheckpointStore(store_path)):
            try:
                attempt()
                outcomes.append("no error")
            except ForkedStoreError:
                outcomes.append("ForkedStoreError")
            except BaseException as exc:
                outcomes.append(type(exc).__name__)
        os.write(write_end, ",".join(outcomes).encode())
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    reported = os.read(read_end, 1000).decode()
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert reported == "ForkedStoreError,ForkedStoreError"
    # The parent is untouched: its reader slots and data are intact.
    assert store.put("wf", 2).seq == 2
    store.close()


def test_missing_store_read_only(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError) as caught:
        CheckpointStore(tmp_path / "nothing", readonly=True)
    assert caught.value.path == tmp_path / "nothing"


def test_path_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("hello")
    with pytest.raises(StoreError, match="not a directory"):
        CheckpointStore(target)


def test_garbage_data_file_is_a_typed_error(store_path: Path) -> None:
    store_path.mkdir()
    (store_path / "data.mdb").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(StoreCorruptedError):
        CheckpointStore(store_path, readonly=True)


def test_lmdb_environment_that_is_not_a_store(store_path: Path) -> None:
    env = lmdb.open(str(store_path), max_dbs=2)
    env.close()
    with pytest.raises(StoreError, match="not an lmdbstate store") as caught:
        CheckpointStore(store_path, readonly=True)
    assert type(caught.value) is StoreError


def test_newer_store_format_is_refused(store_path: Path) -> None:
    with CheckpointStore(store_path):
        pass
    env = lmdb.open(str(store_path), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(b"format", msgpack.packb(3), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(UnsupportedFormatError, match="format 3"):
        CheckpointStore(store_path)


@pytest.mark.parametrize(
    "options",
    [
        {"durability": "fast"},
        {"map_size": 10},
        {"max_map_size": "big"},
        {"map_size": 1 << 30, "max_map_size": 1 << 20},
    ],
)
def test_bad_options_are_config_errors(store_path: Path, options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        CheckpointStore(store_path, **options)  # type: ignore[arg-type]
    assert not store_path.exists()
