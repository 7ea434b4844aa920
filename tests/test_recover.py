"""recover(): every intact record of a damaged store into a fresh one, read without LMDB."""

from __future__ import annotations

import hashlib
import random
import shutil
import time
from pathlib import Path

import pytest

from lmdbstate import CheckpointStore, RetentionPolicy, StoreError, recover
from lmdbstate.lmdbfile import DataFile, LeafItem

from .damage import flip_record, raw_items


def fill(path: Path, workflows: int = 20, per_workflow: int = 100) -> None:
    """2,000 records by default; every tenth spills onto overflow pages."""
    with CheckpointStore(path, durability="async") as store:
        for w in range(workflows):
            with store.batch() as batch:
                for n in range(per_workflow):
                    pad = "x" * (6000 if n % 10 == 0 else 150)
                    batch.put(f"wf-{w:02d}", {"n": n, "w": w, "pad": pad}, step=n)
        store.set_status("wf-00", "completed")


def file_hash(path: Path) -> str:
    return hashlib.sha256((path / "data.mdb").read_bytes()).hexdigest()


def test_an_intact_store_comes_back_whole(tmp_path: Path) -> None:
    fill(tmp_path / "src")
    report = recover(tmp_path / "src", tmp_path / "dest")
    assert report.complete
    assert (report.recovered, report.from_scan) == (2000, 0)
    assert raw_items(tmp_path / "dest", b"ckpt") == raw_items(tmp_path / "src", b"ckpt")
    with CheckpointStore(tmp_path / "dest", readonly=True) as dest:
        assert dest.verify(deep=True).ok
        assert dest.workflow("wf-00").status == "completed"  # kept from the source's index
        assert [w.lost for w in report.workflows] == [0] * 20


@pytest.mark.parametrize("seed", range(3))
def test_flipped_records_are_left_out_and_the_rest_copied_byte_identical(
    tmp_path: Path, seed: int
) -> None:
    src = tmp_path / "src"
    fill(src)
    originals = raw_items(src, b"ckpt")
    rng = random.Random(seed)
    victims = set(rng.sample(sorted(originals), 10))
    for key in victims:
        flip_record(src, originals[key], rng.randrange(len(originals[key])))
    before = file_hash(src)
    report = recover(src, tmp_path / "dest")
    assert file_hash(src) == before  # the damaged source is never written
    assert sorted(d.key for d in report.damaged) == sorted(victims)
    assert report.recovered == 1990
    assert not report.complete
    copied = raw_items(tmp_path / "dest", b"ckpt")
    assert copied == {k: v for k, v in originals.items() if k not in victims}
    with CheckpointStore(tmp_path / "dest", readonly=True) as dest:
        assert dest.verify(deep=True).ok
    lost = {w.workflow_id: w.lost for w in report.workflows if w.lost}
    assert sum(lost.values()) == 10


@pytest.mark.parametrize("meta", [0, 1])
def test_a_zeroed_meta_page_loses_nothing(tmp_path: Path, meta: int) -> None:
    src = tmp_path / "src"
    fill(src, workflows=4, per_workflow=50)
    with CheckpointStore(src) as store:  # commits after the bulk, one per put
        for n in range(5):
            store.put("late", {"n": n})
    originals = raw_items(src, b"ckpt")
    with open(src / "data.mdb", "r+b") as data:
        data.seek(meta * 4096)
        data.write(bytes(4096))
    with pytest.raises(StoreError):
        CheckpointStore(src, readonly=True)  # LMDB would refuse it; preflight says why
    report = recover(src, tmp_path / "dest")
    assert raw_items(tmp_path / "dest", b"ckpt") == originals  # every record, the newest too
    assert report.recovered == len(originals)
    with CheckpointStore(tmp_path / "dest", readonly=True) as dest:
        assert dest.verify(deep=True).ok
        latest = dest.latest("late")
        assert latest is not None
        assert latest.state == {"n": 4}


def test_records_gc_deleted_stay_deleted_after_the_clock_stepped_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (review): recover takes a record only the page scan found for a new one when
    it was made after its workflow's last update; set_status with the clock stepped back an
    hour set updated_ns below the records, and checkpoints gc had deleted came back."""
    src = tmp_path / "src"
    with CheckpointStore(src) as store:
        for n in range(5):
            store.put("wf", {"n": n, "pad": "p" * 3000})
        real = time.time_ns
        monkeypatch.setattr(time, "time_ns", lambda: real() - 3600 * 10**9)
        store.set_status("wf", "running")
        monkeypatch.undo()
        assert store.gc(RetentionPolicy(keep_last=1)).checkpoints_removed == 4
    with DataFile(src) as data:
        older = min(data.metas, key=lambda meta: meta.txnid)
    with open(src / "data.mdb", "r+b") as file:  # the older meta page: the scan still runs
        file.seek(older.offset + 16)
        file.write(b"\0\0\0\0")
    recover(src, tmp_path / "dest")
    with CheckpointStore(tmp_path / "dest", readonly=True) as dest:
        assert [info.seq for info in dest.history("wf")] == [5]


def record_pages(path: Path) -> dict[bytes, set[int]]:
    """For each ckpt record, the pages its bytes live on (its leaf, and its overflow run)."""
    pages: dict[bytes, set[int]] = {}
    with DataFile(path) as data:
        catalog = data.databases()
        for item in data.walk(catalog.databases[b"ckpt"].root):
            assert isinstance(item, LeafItem)
            on = {item.pgno}
            if item.overflow_pgno is not None:
                run = -(-(len(item.value) + 16) // data.page_size)
                on |= set(range(item.overflow_pgno, item.overflow_pgno + run))
            pages[item.key] = on
    return pages


@pytest.mark.parametrize("seed", range(12))
def test_a_page_of_random_bytes_costs_only_the_records_on_it(tmp_path: Path, seed: int) -> None:
    base = tmp_path / "base"
    fill(base)
    originals = raw_items(base, b"ckpt")
    where = record_pages(base)
    rng = random.Random(seed)
    with DataFile(base) as data:
        victim = rng.randrange(2, data.page_count)
    src = tmp_path / "src"
    shutil.copytree(base, src)
    with open(src / "data.mdb", "r+b") as data:
        data.seek(victim * 4096)
        data.write(rng.randbytes(4096))
    report = recover(src, tmp_path / "dest")
    copied = raw_items(tmp_path / "dest", b"ckpt")
    on_victim = {key for key, pages in where.items() if victim in pages}
    assert set(originals) - on_victim <= set(copied)  # everything not on the damaged page
    assert all(originals[key] == value for key, value in copied.items())  # and nothing made up
    assert report.recovered == len(copied)
    with CheckpointStore(tmp_path / "dest", readonly=True) as dest:
        assert dest.verify(deep=True).ok


def test_destination_must_be_new_and_not_the_source(tmp_path: Path) -> None:
    fill(tmp_path / "src", workflows=1, per_workflow=2)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(StoreError, match="already exists"):
        recover(tmp_path / "src", tmp_path / "taken")
    with pytest.raises(StoreError):
        recover(tmp_path / "src", tmp_path / "src")
    with pytest.raises(StoreError, match="no LMDB data file"):
        recover(tmp_path / "nothing", tmp_path / "dest")


def test_a_damaged_older_meta_page_does_not_bring_deleted_checkpoints_back(tmp_path: Path) -> None:
    """Regression (review): past a complete walk, records only the scan finds are copies LMDB
    freed; only those newer than the snapshot are recovered."""
    src = tmp_path / "src"
    with CheckpointStore(src) as store:
        for n in range(5):
            store.put("w", {"n": n})
        for n in range(3):
            store.put("gone", {"secret": "s" * 20_000, "n": n})
        store.delete("w", seq=2)
        store.delete("gone")
    with DataFile(src) as data:
        older = min(data.metas, key=lambda meta: meta.txnid)
    with open(src / "data.mdb", "r+b") as data_file:
        data_file.seek(older.offset + 16)
        data_file.write(b"\0\0\0\0")  # the magic of the older meta page
    report = recover(src, tmp_path / "dest")
    with CheckpointStore(tmp_path / "dest", readonly=True) as dest:
        assert [info.seq for info in dest.history("w")] == [1, 3, 4, 5]
        assert [w.workflow_id for w in dest.workflows()] == ["w"]
    assert report.from_scan == 0
