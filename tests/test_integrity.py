"""verify, repair and backup against real damage in data.mdb."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import msgpack
import pytest

from lmdbstate import (
    CheckpointStore,
    IntegrityError,
    ReadOnlyStoreError,
    StoreCorruptedError,
    StoreError,
    WorkflowNotFoundError,
    recover,
)
from lmdbstate.keys import age_key, checkpoint_key
from lmdbstate.records import build

from .damage import flip_record, raw_delete, raw_items, raw_put


def fill(path: Path, workflows: int = 20, per_workflow: int = 100, big_every: int = 0) -> None:
    rng = random.Random(7)
    with CheckpointStore(path, durability="async") as store, store.batch() as batch:
        for w in range(workflows):
            for n in range(per_workflow):
                size = 6000 if big_every and n % big_every == 0 else rng.randrange(50, 400)
                batch.put(f"wf-{w:02d}", {"n": n, "w": w, "pad": "x" * size}, step=n)


def file_hash(path: Path) -> str:
    return hashlib.sha256((path / "data.mdb").read_bytes()).hexdigest()


def test_a_clean_store_verifies(store_path: Path) -> None:
    fill(store_path, workflows=5, per_workflow=40)
    with CheckpointStore(store_path, readonly=True) as store:
        seen: list[tuple[int, int]] = []
        report = store.verify(progress=lambda records, size: seen.append((records, size)))
        assert report.ok
        assert (report.workflows, report.records) == (5, 200)
        assert report.bytes == store.stats().record_bytes
        assert seen[-1] == (200, report.bytes)
        assert len(seen) == 5
        assert store.verify(deep=True).ok
        one = store.verify(workflow_id="wf-03")
        assert (one.workflows, one.records) == (1, 40)
        with pytest.raises(WorkflowNotFoundError):  # a typo is not a clean bill of health
            store.verify(workflow_id="missing")


@pytest.mark.parametrize("seed", range(4))
def test_verify_finds_exactly_the_flipped_records(store_path: Path, seed: int) -> None:
    fill(store_path, big_every=10)
    originals = raw_items(store_path, b"ckpt")
    rng = random.Random(seed)
    victims = rng.sample(sorted(originals), 10)
    for key in victims:
        record = originals[key]
        flip_record(store_path, record, rng.randrange(len(record)), mask=1 << rng.randrange(8))
    before = file_hash(store_path)
    with CheckpointStore(store_path, readonly=True) as store:
        report = store.verify()
        assert not report.ok
        assert sorted(d.key for d in report.damaged) == sorted(victims)  # precision and recall 1
        assert report.records == 2000
        for damaged in report.damaged:
            with pytest.raises(IntegrityError):
                store.get(damaged.workflow_id or "", damaged.seq or 1)
    assert file_hash(store_path) == before  # verify never writes


def test_deep_verify_decodes_bodies(store_path: Path) -> None:
    with CheckpointStore(store_path) as store:
        store.put("wf", 1)
        store.put("wf", 2)
    key = checkpoint_key(b"wf", 2)
    old = raw_items(store_path, b"ckpt")[key]
    # A record whose digest holds but whose body is not msgpack (a foreign or buggy writer).
    created_ns = int.from_bytes(old[12:20], "little")
    new = build(key, b"\xc1", created_ns)
    raw_put(store_path, b"ckpt", key, new)
    raw_put(store_path, b"wf", b"wf", _entry_with(store_path, bytes_delta=len(new) - len(old)))
    with CheckpointStore(store_path, readonly=True) as store:
        assert store.verify().ok
        deep = store.verify(deep=True)
        assert [(d.workflow_id, d.seq) for d in deep.damaged] == [("wf", 2)]
        assert "does not decode" in deep.damaged[0].reason


def _entry_with(path: Path, *, bytes_delta: int = 0, count_delta: int = 0) -> bytes:
    entry = msgpack.unpackb(raw_items(path, b"wf")[b"wf"])
    entry[5] += count_delta
    entry[6] += bytes_delta
    return msgpack.packb(entry)


def test_verify_reports_index_problems(store_path: Path) -> None:
    fill(store_path, workflows=3, per_workflow=5)
    entry = msgpack.unpackb(raw_items(store_path, b"wf")[b"wf-00"])
    entry[5] += 1  # count
    raw_put(store_path, b"wf", b"wf-00", msgpack.packb(entry))
    ages = sorted(raw_items(store_path, b"age"))
    raw_delete(store_path, b"age", ages[0])  # a checkpoint without its age entry
    raw_put(store_path, b"age", age_key(1, checkpoint_key(b"wf-02", 99)), b"")  # a stale one
    raw_put(store_path, b"wf", b"wf-01", b"\xc1")  # a damaged entry
    with CheckpointStore(store_path, readonly=True) as store:
        report = store.verify()
    assert report.damaged == ()
    problems = sorted(
        (p.table, p.workflow_id, p.reason.split(",")[0]) for p in report.index_problems
    )
    assert problems == [
        ("age", "wf-00", "no age entry for checkpoint 1"),
        ("age", "wf-02", "age entry for checkpoint 99 does not match a record created at 1"),
        ("wf", "wf-00", "count is 6"),
        ("wf", "wf-01", "the index entry is damaged"),
    ]


def test_repair_removes_damage_and_keeps_every_intact_record(
    store_path: Path, tmp_path: Path
) -> None:
    fill(store_path, big_every=10)
    originals = raw_items(store_path, b"ckpt")
    rng = random.Random(3)
    victims = set(rng.sample(sorted(originals), 10))
    for key in victims:
        flip_record(store_path, originals[key], rng.randrange(len(originals[key])))
    raw_delete(store_path, b"wf", b"wf-05")  # and one lost index entry
    damaged_copy = file_hash(store_path)
    with CheckpointStore(store_path) as store:
        report = store.repair(backup_dir=tmp_path / "backup")
        assert sorted(d.key for d in report.removed) == sorted(victims)
        assert report.workflows_rebuilt >= 1
        assert report.age_removed == len(victims)
        assert store.verify(deep=True).ok
        assert store.workflow("wf-05").checkpoints == 100 - sum(
            k.startswith(b"wf-05\x00") for k in victims
        )
        # Seqs of deleted records never come back.
        assert store.put("wf-00", "after").seq == 101
    after = raw_items(store_path, b"ckpt")
    intact = {k: v for k, v in originals.items() if k not in victims}
    assert {k: v for k, v in after.items() if k in intact} == intact  # byte-identical
    assert set(after) - set(intact) == {checkpoint_key(b"wf-00", 101)}
    assert file_hash(tmp_path / "backup") != damaged_copy  # compacted, but the same records:
    with CheckpointStore(tmp_path / "backup", readonly=True) as backup:
        assert sorted(d.key for d in backup.verify().damaged) == sorted(victims)


def test_repair_refuses_read_only_and_an_existing_backup(store_path: Path, tmp_path: Path) -> None:
    fill(store_path, workflows=1, per_workflow=3)
    with CheckpointStore(store_path, readonly=True) as store, pytest.raises(ReadOnlyStoreError):
        store.repair()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with CheckpointStore(store_path) as store:
        with pytest.raises(StoreError, match="already exists"):
            store.repair(backup_dir=tmp_path / "taken")
        report = store.repair()  # the default backup directory, beside the store
        assert report.backup_path is not None
        assert Path(report.backup_path).parent == store_path.parent
        assert report.removed == ()
        assert report.workflows_rebuilt == 0


WRITER = textwrap.dedent(
    """
    import sys
    from lmdbstate import CheckpointStore

    with CheckpointStore(sys.argv[1], durability="async") as store:
        n = 0
        while True:
            store.put("busy", {"n": n, "pad": "y" * 3000})
            n += 1
            if n == 50:
                print("ready", flush=True)
    """
)


def test_backup_while_a_writer_runs_is_consistent(store_path: Path, tmp_path: Path) -> None:
    with CheckpointStore(store_path) as store:
        store.put("busy", {"n": -1})
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store_path)], stdout=subprocess.PIPE
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"ready\n"
        with CheckpointStore(store_path, durability="async") as store:
            copies = [store.backup(tmp_path / f"copy-{i}") for i in range(3)]
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    for copy in copies:
        with CheckpointStore(copy, readonly=True) as backup:
            report = backup.verify(deep=True)
            assert report.ok
            info = backup.workflow("busy")
            assert info.checkpoints == report.records >= 50
            latest = backup.latest("busy")
            assert latest is not None
            assert latest.state["n"] == info.head_seq - 2


def tree_page(path: Path, table: bytes, kind: int) -> int:
    """A page of ``table``'s B-tree of the given kind (lmdbfile.P_LEAF or P_BRANCH)."""
    from lmdbstate.lmdbfile import P_BRANCH, DataFile

    with DataFile(path) as data:
        record = data.databases().databases[table]
        pending = [record.root]
        while pending:
            page = data.read_page(pending.pop())
            if page.flags == kind:
                return page.pgno
            if page.flags == P_BRANCH:
                pending.extend(data._child(page, i) for i in range(page.node_count))
    raise AssertionError("no such page")


def overwrite_key_byte(path: Path, pgno: int, offset: int, byte: bytes) -> None:
    """Overwrite byte ``offset`` of the key of node 1 of page ``pgno``, in place."""
    from lmdbstate.lmdbfile import DataFile

    with DataFile(path) as data:
        node = data._node(data.read_page(pgno), 1)
        key_at = node.data_at - len(node.key)
    with open(path / "data.mdb", "r+b") as data_file:
        data_file.seek(pgno * 4096 + key_at + offset)
        data_file.write(byte)


@pytest.mark.parametrize("kind", ["leaf", "branch"])
def test_verify_reports_damaged_pages_without_reading_through_them(
    store_path: Path, tmp_path: Path, kind: str
) -> None:
    from lmdbstate.lmdbfile import P_BRANCH, P_LEAF

    fill(store_path, workflows=10, per_workflow=60)
    victim = tree_page(store_path, b"ckpt", P_LEAF if kind == "leaf" else P_BRANCH)
    with open(store_path / "data.mdb", "r+b") as data:
        data.seek(victim * 4096)
        data.write(random.Random(victim).randbytes(4096))
    with CheckpointStore(store_path) as store:
        report = store.verify()
        assert not report.ok
        assert report.structure_problems
        assert all(problem.startswith("ckpt: page") for problem in report.structure_problems)
        assert f"page {victim}" in report.structure_problems[0]
        assert report.records == 0  # LMDB was not let loose on the damaged tree
        with pytest.raises(StoreCorruptedError, match="damaged pages") as caught:
            store.repair(backup_dir=tmp_path / "bak")
        assert "recover" in caught.value.hint
        assert not (tmp_path / "bak").exists()


def test_check_tree_finds_keys_out_of_order_and_wrong_counts(store_path: Path) -> None:
    from lmdbstate.lmdbfile import P_LEAF, DataFile

    fill(store_path, workflows=2, per_workflow=30)
    victim = tree_page(store_path, b"age", P_LEAF)
    overwrite_key_byte(store_path, victim, 0, b"\x00")  # node 1 now sorts before node 0
    with DataFile(store_path) as data:
        record = data.databases().databases[b"age"]
        problems = data.check_tree(record)
    assert [str(p) for p in problems] == [
        f"page {victim} node 1: its key does not sort after the one before"
    ]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, "order-kept"])
def test_a_flipped_key_byte_is_caught(store_path: Path, tmp_path: Path, seed: int | str) -> None:
    fill(store_path, big_every=10)
    originals = raw_items(store_path, b"ckpt")
    rng = random.Random(str(seed))
    if seed == "order-kept":
        # The last checkpoint of a workflow, its seq raised by 256: the key still sorts in place.
        victim = max(key for key in originals if key.startswith(b"wf-07\x00"))
        offset, mask = len(victim) - 2, 0x01
    else:
        in_leaves = sorted(key for key, value in originals.items() if len(value) < 1000)
        victim = rng.choice(in_leaves)
        offset, mask = rng.randrange(len(victim)), 1 << rng.randrange(8)
    # In a leaf page a small value follows its key: key + header finds only the ckpt node.
    flip_record(store_path, victim + originals[victim][:24], offset, mask=mask)
    before = file_hash(store_path)
    with CheckpointStore(store_path, readonly=True) as store:
        report = store.verify()
    assert not report.ok
    if seed == "order-kept":
        assert report.structure_problems == ()
        moved = victim[:offset] + bytes([victim[offset] ^ mask]) + victim[offset + 1 :]
        assert [(d.key, d.reason.split(" (")[0]) for d in report.damaged] == [
            (moved, "digest mismatch")
        ]
    else:  # the key no longer sorts where it stands: a damaged page, found before any read
        assert report.structure_problems
    result = recover(store_path, tmp_path / "dest")
    copied = raw_items(tmp_path / "dest", b"ckpt")
    assert copied == {k: v for k, v in originals.items() if k != victim}
    assert result.recovered == 1999
    assert file_hash(store_path) == before


def test_a_damaged_branch_key_is_found_and_never_loops(store_path: Path) -> None:
    """Regression (fuzz seed 2, file 3717): a branch key that sorts above its subtree sent
    LMDB's seek back to keys already read, and verify went round forever."""
    from lmdbstate.lmdbfile import P_BRANCH

    fill(store_path, workflows=10, per_workflow=60)
    branch = tree_page(store_path, b"ckpt", P_BRANCH)
    overwrite_key_byte(store_path, branch, 3, b"~")  # "wf-0..." becomes "wf-~...": too high
    with CheckpointStore(store_path, readonly=True) as store:
        report = store.verify()
        assert any("outside its branch keys' range" in p for p in report.structure_problems)
        read = 0
        try:  # LMDB may misplace seeks through the damaged key; it must never read in circles
            for info in store.workflows():
                read += sum(1 for _ in store.history(info.workflow_id))
        except (StoreCorruptedError, IntegrityError):
            pass
        assert read <= 600


def test_repair_keeps_a_record_that_verifies_but_does_not_decode_here(store_path: Path) -> None:
    """Regression (review): a body this host cannot decode (a time zone it lacks) is whole."""
    import msgpack

    with CheckpointStore(store_path) as store:
        store.put("wf", 1)
        store.put("wf", 2)
    key = checkpoint_key(b"wf", 2)
    old = raw_items(store_path, b"ckpt")[key]
    moment = msgpack.ExtType(4, msgpack.packb([2026, 1, 1, 0, 0, 0, 0, 0, "Mars/Olympus"]))
    body = msgpack.packb({"step": None, "schema": 1, "meta": {}, "state": moment})
    record = build(key, body, int.from_bytes(old[12:20], "little"))
    raw_put(store_path, b"ckpt", key, record)
    entry = msgpack.unpackb(raw_items(store_path, b"wf")[b"wf"])
    entry[6] += len(record) - len(old)
    raw_put(store_path, b"wf", b"wf", msgpack.packb(entry))
    with CheckpointStore(store_path) as store:
        assert store.verify().ok
        assert [d.seq for d in store.verify(deep=True).damaged] == [2]
        report = store.repair(backup_dir=store_path.parent / "bak")
        assert report.removed == ()
        assert [info.seq for info in store.history("wf")] == [1, 2]


def test_a_malformed_key_is_reported_once(store_path: Path) -> None:
    with CheckpointStore(store_path) as store:
        for name in ("a", "b", "c"):
            store.put(name, 1)
            store.delete(name, seq=1)
    raw_put(store_path, b"ckpt", b"zzz", b"junk")
    with CheckpointStore(store_path, readonly=True) as store:
        report = store.verify()
    assert [d.key for d in report.damaged] == [b"zzz"]
