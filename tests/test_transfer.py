"""copy_store between LMDB directories: byte for byte, private files stay private, new paths."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lmdbstate import CheckpointStore, ConfigError, StoreError, StoreNotFoundError, copy_store
from lmdbstate.kv import TABLES, ReadTxn
from lmdbstate.lmdbfile import DATA_FILE
from lmdbstate.memory import MEMORY_PATH


def tables(path: Path) -> dict[str, list[tuple[bytes, bytes]]]:
    def read(txn: ReadTxn) -> dict[str, list[tuple[bytes, bytes]]]:
        return {table: list(txn.scan(table)) for table in TABLES}

    with CheckpointStore(path, readonly=True) as store:
        return store._read_txn(read)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source"
    with CheckpointStore(path) as store:
        for n in range(3):
            for step in range(4):
                store.put(f"wf-{n}", {"n": n, "step": step, "pad": "x" * 700 * step}, step=step)
        store.set_status("wf-2", "completed")
    os.chmod(path / DATA_FILE, 0o600)
    return path


def test_a_copy_into_a_new_nested_directory_is_byte_identical_and_as_private(
    tmp_path: Path, source: Path
) -> None:
    dest = tmp_path / "new" / "nested" / "copy"
    report = copy_store(source, dest)
    assert (report.workflows, report.checkpoints) == (3, 12)
    assert report.items == sum(len(items) for items in tables(dest).values())
    assert tables(dest) == tables(source)
    assert stat.S_IMODE(os.stat(dest / DATA_FILE).st_mode) == 0o600
    progress: list[tuple[int, int]] = []
    copy_store(
        source, tmp_path / "again", progress=lambda done, total: progress.append((done, total))
    )
    assert progress[-1] == (report.items, report.items)


def test_copy_refuses_what_it_cannot_copy_into(tmp_path: Path, source: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    with pytest.raises(StoreError, match="already exists"):
        copy_store(source, taken)
    with pytest.raises(StoreError, match="source itself"):
        copy_store(source, source)
    with pytest.raises(StoreNotFoundError):
        copy_store(tmp_path / "nowhere", tmp_path / "dest")
    with pytest.raises(ConfigError):
        copy_store(MEMORY_PATH, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_a_backup_of_a_memory_store_is_private_and_writers_go_on(tmp_path: Path) -> None:
    with CheckpointStore(MEMORY_PATH) as store:
        store.put("wf", {"secret": "s3cret"})
        store.backup(tmp_path / "deep" / "backup")
        store.put("wf", {"after": True})  # the store is still usable, its copy unchanged
    assert stat.S_IMODE(os.stat(tmp_path / "deep" / "backup" / DATA_FILE).st_mode) == 0o600
    with CheckpointStore(tmp_path / "deep" / "backup", readonly=True) as copy:
        assert [info.seq for info in copy.history("wf")] == [1]
