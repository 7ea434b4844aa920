"""The pure-Python LMDB reader against files written by the real store and py-lmdb, then damaged."""

from __future__ import annotations

import random
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmdbstate import CheckpointStore, InvalidInputError, StoreCorruptedError, StoreNotFoundError
from lmdbstate.lmdbfile import (
    F_BIGDATA,
    F_SUBDATA,
    P_BRANCH,
    P_INVALID,
    P_LEAF,
    P_META,
    P_OVERFLOW,
    DataFile,
    LeafItem,
    Skipped,
)

TABLES = (b"age", b"chunk", b"ckpt", b"meta", b"wf")
PAGE = 4096  # the page size LMDB picks on this platform (the OS page size)


def write_store(path: Path, records: int, workflows: int) -> None:
    """``records`` checkpoints over ``workflows`` workflows; every 25th goes to overflow pages."""
    with CheckpointStore(path, durability="async") as store:
        for start in range(0, records, 250):
            with store.batch() as batch:
                for n in range(start, min(start + 250, records)):
                    pad = "o" * 6000 if n % 25 == 0 else "s" * 100
                    batch.put(f"workflow-{n % workflows}", {"n": n, "pad": pad}, step=n)


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 checkpoints over 20 workflows: branch pages, overflow pages, several commits."""
    path = tmp_path_factory.mktemp("reader") / "store"
    write_store(path, 2000, 20)
    return path


@pytest.fixture
def store_copy(big_store: Path, tmp_path: Path) -> Path:
    """A copy of the big store that a test may damage."""
    target = tmp_path / "store"
    shutil.copytree(big_store, target)
    return target


def lmdb_view(path: Path) -> tuple[dict[bytes, list[tuple[bytes, bytes]]], dict[str, object]]:
    """What py-lmdb reads: every item of each table, its stats, and the environment's info."""
    env = lmdb.open(str(path), max_dbs=8, readonly=True)
    try:
        items: dict[bytes, list[tuple[bytes, bytes]]] = {}
        stats: dict[str, object] = {"info": env.info(), "main": env.stat()}
        with env.begin() as txn:
            for name in TABLES:
                db = env.open_db(name, txn=txn, create=False)
                items[name] = [(bytes(k), bytes(v)) for k, v in txn.cursor(db)]
                stats[name.decode()] = txn.stat(db)
        return items, stats
    finally:
        env.close()


def pairs(items: Iterator[LeafItem | Skipped]) -> tuple[list[tuple[bytes, bytes]], list[Skipped]]:
    found: list[tuple[bytes, bytes]] = []
    skipped: list[Skipped] = []
    for item in items:
        if isinstance(item, Skipped):
            skipped.append(item)
        else:
            found.append((item.key, item.value))
    return found, skipped


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path / "data.mdb", "r+b") as file:
        file.seek(offset)
        file.write(data)


# -- an intact file ---------------------------------------------------------------------------


def test_meta_pages_match_what_lmdb_reports(big_store: Path) -> None:
    _, stats = lmdb_view(big_store)
    info, main = stats["info"], stats["main"]
    assert isinstance(info, dict)
    assert isinstance(main, dict)
    with DataFile(big_store) as data:
        assert [meta.problem for meta in data.metas] == [None, None]
        assert [meta.offset for meta in data.metas] == [0, PAGE]
        current = data.current
        assert current is not None
        assert data.page_size == current.page_size == main["psize"] == PAGE
        assert current.last_page == info["last_pgno"]
        assert current.txnid == info["last_txnid"]
        # Transaction N writes meta page N % 2; the other holds transaction N - 1.
        assert current.slot == current.txnid % 2
        other = data.metas[1 - current.slot]
        assert other.txnid == current.txnid - 1
        assert current.page_flags == P_META
        db = current.main_db
        assert (db.depth, db.branch_pages, db.leaf_pages, db.overflow_pages, db.entries) == (
            main["depth"],
            main["branch_pages"],
            main["leaf_pages"],
            main["overflow_pages"],
            main["entries"],
        )
        assert data.size == (big_store / "data.mdb").stat().st_size
        assert data.page_count == data.size // PAGE


def test_named_databases_match_lmdb_stat(big_store: Path) -> None:
    _, stats = lmdb_view(big_store)
    with DataFile(big_store) as data:
        catalog = data.databases()
    assert catalog.skipped == ()
    assert sorted(catalog.databases) == list(TABLES)
    for name, record in catalog.databases.items():
        expected = stats[name.decode()]
        assert isinstance(expected, dict)
        shape = (record.depth, record.branch_pages, record.leaf_pages, record.overflow_pages)
        assert shape == (
            expected["depth"],
            expected["branch_pages"],
            expected["leaf_pages"],
            expected["overflow_pages"],
        )
        assert record.entries == expected["entries"]


def test_walking_each_table_yields_exactly_what_lmdb_returns(big_store: Path) -> None:
    items, _ = lmdb_view(big_store)
    with DataFile(big_store) as data:
        catalog = data.databases()
        ckpt = catalog.databases[b"ckpt"]
        # The store is big enough to exercise every kind of page the walk meets.
        assert ckpt.depth >= 2
        assert ckpt.branch_pages >= 1
        assert ckpt.overflow_pages >= 1
        assert len(items[b"ckpt"]) == 2000
        for name in TABLES:
            found, skipped = pairs(data.walk(catalog.databases[name].root))
            assert skipped == []
            assert found == items[name], name
        overflowing = [
            item
            for item in data.walk(ckpt.root)
            if isinstance(item, LeafItem) and item.flags & F_BIGDATA
        ]
    assert len(overflowing) == 2000 // 25
    assert all(item.overflow_pgno is not None and len(item.value) > 6000 for item in overflowing)


def test_the_page_scan_finds_every_live_record(big_store: Path) -> None:
    items, _ = lmdb_view(big_store)
    with DataFile(big_store) as data:
        found, skipped = pairs(data.scan())
    assert skipped == []
    scanned = set(found)
    for name in TABLES:
        assert set(items[name]) <= scanned, name


def test_the_free_list_names_no_page_in_use(big_store: Path) -> None:
    with DataFile(big_store) as data:
        free = data.free_pages()
        assert free.skipped == ()
        in_use: set[int] = set()
        for record in data.databases().databases.values():
            for item in data.walk(record.root):
                assert isinstance(item, LeafItem)
                in_use.add(item.pgno)
                if item.overflow_pgno is not None:
                    in_use.add(item.overflow_pgno)
        assert free.pages
        assert not free.pages & in_use
        assert all(2 <= pgno < data.page_count for pgno in free.pages)


def test_live_bytes_are_the_file_s_pages_less_the_free_ones(tmp_path: Path) -> None:
    """``stats().live_bytes`` (summed from LMDB's per-database statistics) counts exactly the
    pages up to the last one used, less those on LMDB's free list and the free list's own."""
    path = tmp_path / "store"
    rng = random.Random(7)
    with CheckpointStore(path) as store:
        for round_ in range(4):
            for n in range(150):
                store.put(f"wf-{n % 5}", {"pad": "x" * rng.choice((80, 2500, 12000))})
            for info in list(store.workflows()):
                for old in list(store.history(info.workflow_id))[:-3]:
                    store.delete(info.workflow_id, seq=old.seq)
            live_pages = store.stats().live_bytes // PAGE
            with DataFile(path) as data:
                meta = data.current
                assert meta is not None
                free = data.free_pages()
                free_list_tree = (
                    meta.free_db.branch_pages
                    + meta.free_db.leaf_pages
                    + meta.free_db.overflow_pages
                )
                assert free.pages, round_  # deletions freed pages: the identity is not trivial
                assert live_pages == meta.last_page + 1 - len(free.pages) - free_list_tree


def test_an_empty_tree_walks_to_nothing(big_store: Path) -> None:
    with DataFile(big_store) as data:
        assert list(data.walk(P_INVALID)) == []


# -- damage -----------------------------------------------------------------------------------


def ckpt_leaves(path: Path) -> tuple[int, list[int]]:
    """The ckpt root and its leaf pages in key order."""
    with DataFile(path) as data:
        root = data.databases().databases[b"ckpt"].root
        leaves = list(dict.fromkeys(i.pgno for i in data.walk(root) if isinstance(i, LeafItem)))
    return root, leaves


def test_a_page_of_random_bytes_is_skipped_and_the_rest_read(store_copy: Path) -> None:
    items, _ = lmdb_view(store_copy)
    _, leaves = ckpt_leaves(store_copy)
    victim = leaves[len(leaves) // 2]
    with DataFile(store_copy) as data:
        lost = [(i.key, i.value) for i in data.walk(data.databases().databases[b"ckpt"].root)
                if isinstance(i, LeafItem) and i.pgno == victim]  # fmt: skip
    assert lost
    overwrite(store_copy, victim * PAGE, random.Random(7).randbytes(PAGE))

    with DataFile(store_copy) as data:
        found, skipped = pairs(data.walk(data.databases().databases[b"ckpt"].root))
        assert [(s.pgno, s.index) for s in skipped] == [(victim, None)]
        assert "header names page" in skipped[0].reason
        assert found == [pair for pair in items[b"ckpt"] if pair not in lost]

        scanned, scan_skipped = pairs(data.scan())
    assert [s.pgno for s in scan_skipped] == [victim]
    assert set(items[b"ckpt"]) - set(lost) <= set(scanned)


def test_a_zeroed_root_page_is_skipped_and_the_scan_still_finds_everything(
    store_copy: Path,
) -> None:
    items, _ = lmdb_view(store_copy)
    root, _ = ckpt_leaves(store_copy)
    overwrite(store_copy, root * PAGE, bytes(PAGE))
    with DataFile(store_copy) as data:
        found, skipped = pairs(data.walk(root))
        assert found == []
        assert [str(s) for s in skipped] == [f"page {root}: all zero: never written, or wiped"]
        # The page scan does not need the tree: every record is still found.
        scanned, scan_skipped = pairs(data.scan())
    assert [s.pgno for s in scan_skipped] == [root]
    assert set(items[b"ckpt"]) <= set(scanned)


def test_a_cycle_in_the_tree_ends_the_walk(store_copy: Path) -> None:
    items, _ = lmdb_view(store_copy)
    root, _ = ckpt_leaves(store_copy)
    with DataFile(store_copy) as data:
        raw = data.read_page(root).raw
    assert struct.unpack_from("<H", raw, 10)[0] == P_BRANCH
    # Point the branch's second child back at the branch itself.
    (at,) = struct.unpack_from("<H", raw, 16 + 2)
    overwrite(store_copy, root * PAGE + at, struct.pack("<HHH", root & 0xFFFF, root >> 16, 0))
    with DataFile(store_copy) as data:
        found, skipped = pairs(data.walk(root))
    assert [(s.pgno, s.reason) for s in skipped] == [
        (root, "reached a second time: the tree has a cycle")
    ]
    assert 0 < len(found) < len(items[b"ckpt"])
    assert set(found) <= set(items[b"ckpt"])


def test_a_damaged_node_loses_only_that_node(store_copy: Path) -> None:
    items, _ = lmdb_view(store_copy)
    _, leaves = ckpt_leaves(store_copy)
    victim = leaves[0]
    overwrite(store_copy, victim * PAGE + 16 + 2, struct.pack("<H", 3))  # node 1 at byte 3
    with DataFile(store_copy) as data:
        found, skipped = pairs(data.walk(data.databases().databases[b"ckpt"].root))
    assert [(s.pgno, s.index) for s in skipped] == [(victim, 1)]
    assert "starts at byte 3, outside the node area" in skipped[0].reason
    assert len(found) == len(items[b"ckpt"]) - 1


def test_a_damaged_overflow_page_loses_only_its_value(store_copy: Path) -> None:
    items, _ = lmdb_view(store_copy)
    with DataFile(store_copy) as data:
        big = next(
            item
            for item in data.walk(data.databases().databases[b"ckpt"].root)
            if isinstance(item, LeafItem) and item.overflow_pgno is not None
        )
    assert big.overflow_pgno is not None
    overwrite(store_copy, big.overflow_pgno * PAGE + 10, struct.pack("<H", P_LEAF))
    with DataFile(store_copy) as data:
        found, skipped = pairs(data.walk(data.databases().databases[b"ckpt"].root))
    assert [(s.pgno, s.index) for s in skipped] == [(big.pgno, big.index)]
    assert f"value on page {big.overflow_pgno}" in skipped[0].reason
    assert found == [pair for pair in items[b"ckpt"] if pair[0] != big.key]


def test_a_file_with_no_meta_page_is_read_by_its_page_headers(store_copy: Path) -> None:
    items, _ = lmdb_view(store_copy)
    overwrite(store_copy, 0, bytes(2 * PAGE))
    with DataFile(store_copy) as data:
        assert data.current is None
        assert [m.problem for m in data.metas] == ["all zero, as if wiped"] * 2
        assert data.page_size == PAGE  # told by the pages that name themselves
        with pytest.raises(StoreCorruptedError, match="no valid meta page"):
            data.databases()
        scanned, _ = pairs(data.scan())
    assert set(items[b"ckpt"]) <= set(scanned)


def test_garbage_is_not_a_data_file(tmp_path: Path) -> None:
    (tmp_path / "data.mdb").write_bytes(random.Random(3).randbytes(16 * PAGE))
    with pytest.raises(StoreCorruptedError, match="not an LMDB data file"):
        DataFile(tmp_path)


# -- synthetic files: other page sizes, deep trees --------------------------------------------


def meta_page(size: int, slot: int, main_root: int, last_page: int) -> bytes:
    free = struct.pack("<IHHQQQQQ", size, 0x08, 0, 0, 0, 0, 0, P_INVALID)
    main = struct.pack("<IHHQQQQQ", 0, 0, 1, 0, 1, 0, 1, main_root)
    body = struct.pack("<IIQQ", 0xBEEFC0DE, 1, 0, 1 << 20) + free + main
    page = struct.pack("<QHHHH", slot, 0, P_META, 0, 0) + body + struct.pack("<QQ", last_page, 7)
    return page.ljust(size, b"\x00")


def node_page(size: int, pgno: int, flags: int, nodes: list[bytes]) -> bytes:
    page = bytearray(size)
    upper = size
    for index, node in enumerate(nodes):
        upper -= len(node) + len(node) % 2
        page[upper : upper + len(node)] = node
        struct.pack_into("<H", page, 16 + 2 * index, upper)
    struct.pack_into("<QHHHH", page, 0, pgno, 0, flags, 16 + 2 * len(nodes), upper)
    return bytes(page)


def leaf_node(key: bytes, value: bytes, flags: int = 0) -> bytes:
    size = len(value)
    return struct.pack("<HHHH", size & 0xFFFF, size >> 16, flags, len(key)) + key + value


def branch_node(key: bytes, child: int) -> bytes:
    return struct.pack("<HHHH", child & 0xFFFF, child >> 16 & 0xFFFF, child >> 32, len(key)) + key


def write_file(path: Path, size: int, pages: dict[int, bytes], main_root: int) -> None:
    """A data file of two meta pages and ``pages`` (a page may run on: an overflow run)."""
    count = -(-max(pgno * size + len(page) for pgno, page in pages.items()) // size)
    content = bytearray(count * size)
    for slot in (0, 1):
        content[slot * size : (slot + 1) * size] = meta_page(size, slot, main_root, count - 1)
    for pgno, page in pages.items():
        content[pgno * size : pgno * size + len(page)] = page
    path.mkdir()
    (path / "data.mdb").write_bytes(bytes(content))


@pytest.mark.parametrize("size", [512, 65536])
def test_other_page_sizes_are_read_from_the_meta_page(tmp_path: Path, size: int) -> None:
    big = random.Random(size).randbytes(3 * size)
    record = struct.pack("<IHHQQQQQ", 0, 0, 1, 0, 1, 1, 2, 3)
    runs = (16 - 1 + len(big)) // size + 1
    overflow = struct.pack("<QHHI", 4, 0, P_OVERFLOW, runs) + big
    pages = {
        2: node_page(size, 2, P_LEAF, [leaf_node(b"things", record, F_SUBDATA)]),
        3: node_page(
            size,
            3,
            P_LEAF,
            [
                leaf_node(b"a", b"small"),
                struct.pack("<HHHH", len(big) & 0xFFFF, len(big) >> 16, F_BIGDATA, 1)
                + b"b"
                + struct.pack("<Q", 4),
            ],
        ),
        4: overflow,
    }
    write_file(tmp_path / "env", size, pages, main_root=2)
    with DataFile(tmp_path / "env") as data:
        assert data.page_size == size
        catalog = data.databases()
        assert list(catalog.databases) == [b"things"]
        found, skipped = pairs(data.walk(catalog.databases[b"things"].root))
    assert skipped == []
    assert found == [(b"a", b"small"), (b"b", big)]


def test_a_tree_deeper_than_64_levels_is_cut_off(tmp_path: Path) -> None:
    size = 512
    chain = range(2, 2 + 70)
    pages = {pgno: node_page(size, pgno, P_BRANCH, [branch_node(b"", pgno + 1)]) for pgno in chain}
    pages[chain.stop] = node_page(size, chain.stop, P_LEAF, [leaf_node(b"k", b"v")])
    write_file(tmp_path / "env", size, pages, main_root=2)
    with DataFile(tmp_path / "env") as data:
        walked = list(data.walk(2))
    assert walked == [Skipped(2 + 64, "more than 64 levels below the root")]


def raw_node(key: bytes, size: int, flags: int, data: bytes, key_size: int | None = None) -> bytes:
    """A leaf node whose header may say something other than what follows it."""
    length = len(key) if key_size is None else key_size
    return struct.pack("<HHHH", size & 0xFFFF, size >> 16, flags, length) + key + data


def test_each_damaged_node_is_skipped_with_its_reason(tmp_path: Path) -> None:
    size = 512
    nodes = [
        leaf_node(b"good", b"value"),
        raw_node(b"a", 1, 0x10, b"x"),
        raw_node(b"b", 1, 0x04, b"x"),
        raw_node(b"c", 1, 0, b"x", key_size=600),
        raw_node(b"d", 5000, 0, b"short"),
        raw_node(b"e", 10, F_SUBDATA, bytes(10)),
        raw_node(b"f", 1000, F_BIGDATA, struct.pack("<Q", 99)),
        raw_node(b"g", 1000, F_BIGDATA, struct.pack("<Q", 3)),
        raw_node(b"h", 1000, F_BIGDATA, struct.pack("<Q", 4)),
    ]
    pages = {
        2: node_page(size, 2, P_BRANCH, [branch_node(b"", 3), branch_node(b"m", 99)]),
        3: node_page(size, 3, P_LEAF, nodes),
        4: struct.pack("<QHHI", 4, 0, P_OVERFLOW, 1).ljust(size, b"o"),
    }
    write_file(tmp_path / "env", size, pages, main_root=2)
    with DataFile(tmp_path / "env") as data:
        walked = list(data.walk(2))
    assert walked[0] == LeafItem(3, 0, b"good", b"value", 0, None)
    assert [str(item) for item in walked[1:]] == [
        "page 3 node 1: node flags 0x0010 are not LMDB's",
        "page 3 node 2: sorted duplicates (F_DUPDATA): not supported here",
        "page 3 node 3: key of 600 bytes, over LMDB's 511",
        "page 3 node 4: value of 5000 bytes runs past the page",
        "page 3 node 5: a named database record of 10 bytes, not 48",
        "page 3 node 6: its 1000-byte value on page 99: outside pages 2..4",
        "page 3 node 7: its 1000-byte value on page 3: not an overflow page (flags 0x0002)",
        "page 3 node 8: its 1000-byte value on page 4: the run has 1 of the 2 pages the value "
        "needs",
        "page 2 node 1: points to page 99, outside pages 2..4",
    ]


def test_missing_files_and_bad_page_sizes_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="no LMDB data file at"):
        DataFile(tmp_path / "nothing.mdb")
    (tmp_path / "data.mdb").write_bytes(bytes(4 * PAGE))
    with pytest.raises(InvalidInputError, match="page size 1000 is not a power of two"):
        DataFile(tmp_path, page_size=1000)
    with DataFile(tmp_path, page_size=PAGE) as data:
        assert [str(item) for item in data.scan()] == [
            "page 2: all zero: never written, or wiped",
            "page 3: all zero: never written, or wiped",
        ]


# -- any damage to any page: the reader never raises, never loops ------------------------------


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "store"
    write_store(path, 120, 3)
    return (path / "data.mdb").read_bytes()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_damage_anywhere_is_reported_never_raised(
    small_store: bytes, tmp_path: Path, data: st.DataObject
) -> None:
    pages = len(small_store) // PAGE
    pgno = data.draw(st.integers(0, pages - 1), label="page")
    start = data.draw(st.integers(0, PAGE - 1), label="start")
    junk = data.draw(st.binary(min_size=1, max_size=PAGE - start), label="bytes")
    content = bytearray(small_store)
    content[pgno * PAGE + start : pgno * PAGE + start + len(junk)] = junk
    target = tmp_path / "fuzzed.mdb"
    target.write_bytes(bytes(content))
    try:
        reader = DataFile(target)
    except StoreCorruptedError:
        return
    with reader:
        if reader.current is not None:
            catalog = reader.databases()
            for record in catalog.databases.values():
                assert all(isinstance(i, LeafItem | Skipped) for i in reader.walk(record.root))
            reader.free_pages()
        assert all(isinstance(i, LeafItem | Skipped) for i in reader.scan())
