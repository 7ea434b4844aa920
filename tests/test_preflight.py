"""Preflight: damaged store files become typed errors before LMDB maps them, never a crash.

Every open of a damaged store runs in a child process, so that a SIGBUS or SIGSEGV shows up as
a negative return code instead of killing the test run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb
import pytest

from lmdbstate import CheckpointStore, StoreCorruptedError, UnsupportedFormatError, lmdbfile
from lmdbstate.lmdbfile import DataFile, preflight

PAGE = 4096
RECORDS = 300

OPEN_STORE = textwrap.dedent(
    """
    import json, sys
    from lmdbstate import CheckpointStore, LmdbStateError

    path, mode = sys.argv[1], sys.argv[2]
    try:
        with CheckpointStore(path, readonly=mode == "readonly") as store:
            count = sum(len(list(store.history(w.workflow_id))) for w in store.workflows())
        report = {"outcome": "opened", "checkpoints": count}
    except LmdbStateError as exc:
        report = {"outcome": type(exc).__name__, "message": str(exc), "hint": exc.hint}
    except Exception as exc:
        report = {"outcome": "untyped " + type(exc).__name__, "message": str(exc)}
    print(json.dumps(report))
    """
)


def open_in_child(path: Path, mode: str) -> dict[str, object]:
    """Open the store in a child process; what happened, as the child reports it."""
    done = subprocess.run(
        [sys.executable, "-c", OPEN_STORE, str(path), mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # A negative code is a signal: the crash preflight exists to prevent.
    assert done.returncode == 0, f"child ended with {done.returncode}: {done.stderr[-2000:]}"
    report: dict[str, object] = json.loads(done.stdout)
    return report


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 300 checkpoints over 6 workflows, some on overflow pages."""
    path = tmp_path_factory.mktemp("preflight") / "store"
    with CheckpointStore(path, durability="async") as store:
        for start in range(0, RECORDS, 100):
            with store.batch() as batch:
                for n in range(start, start + 100):
                    pad = "o" * 5000 if n % 10 == 0 else "s" * 200
                    batch.put(f"workflow-{n % 6}", {"n": n, "pad": pad})
    with DataFile(path) as data:
        current = data.current
        assert current is not None
        # The cases below assume the file ends with a page in use, and holds enough pages.
        assert current.last_page == data.page_count - 1
        assert data.page_count > 40
        assert current.last_page not in data.free_pages().pages
    return path


@pytest.fixture
def store(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the template store, to damage."""
    target = tmp_path / "store"
    shutil.copytree(template, target)
    return target


def truncate_to(size: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path / "data.mdb"
        os.truncate(data, size(data.stat().st_size))

    return damage


def zero_pages(*pages: int) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with open(path / "data.mdb", "r+b") as file:
            for pgno in pages:
                file.seek(pgno * PAGE)
                file.write(bytes(PAGE))

    return damage


def random_data_file(path: Path) -> None:
    data = path / "data.mdb"
    data.write_bytes(random.Random(11).randbytes(data.stat().st_size))


def random_lock_file(size: int) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        (path / "lock.mdb").write_bytes(random.Random(size).randbytes(size))

    return damage


def intact(path: Path) -> None:
    pass


TRUNCATED = (
    r"data\.mdb is truncated, {} bytes, but transaction \d+ \(meta page [01]\) uses pages "
    r"0\.\.\d+ of 4096 bytes, \d+ bytes; LMDB would crash the process \(SIGBUS\) on the "
    r"missing pages"
)
WIPED_META = (
    r"meta page {} of data\.mdb: all zero, as if wiped; LMDB refuses the whole store for it, "
    r"although meta page {} is intact"
)

CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (damage, the outcome the child reports, what its message says after
    # "store PATH is damaged: ")
    "intact": (intact, "opened", ""),
    "empty": (
        truncate_to(lambda size: 0),
        "StoreCorruptedError",
        r"data\.mdb is empty \(0 bytes\), it holds no LMDB environment",
    ),
    "100-bytes": (
        truncate_to(lambda size: 100),
        "StoreCorruptedError",
        r"data\.mdb is 100 bytes, too short to hold even one LMDB meta page",
    ),
    "3-pages": (truncate_to(lambda size: 3 * PAGE), "StoreCorruptedError", TRUNCATED.format(12288)),
    "half": (truncate_to(lambda size: size // 2), "StoreCorruptedError", TRUNCATED.format(r"\d+")),
    "one-page-short": (
        truncate_to(lambda size: size - PAGE),
        "StoreCorruptedError",
        TRUNCATED.format(r"\d+"),
    ),
    "meta-0-zeroed": (zero_pages(0), "StoreCorruptedError", WIPED_META.format(0, 1)),
    "meta-1-zeroed": (zero_pages(1), "StoreCorruptedError", WIPED_META.format(1, 0)),
    "both-metas-zeroed": (
        zero_pages(0, 1),
        "StoreCorruptedError",
        r"data\.mdb has no valid LMDB meta page: meta page 0: all zero, as if wiped; "
        r"meta page 1: all zero, as if wiped",
    ),
    "random-bytes": (
        random_data_file,
        "StoreCorruptedError",
        r"data\.mdb has no valid LMDB meta page: meta page 0: .+; meta page 1: .+",
    ),
    # The first process to open a store rebuilds lock.mdb, whatever it holds.
    "garbage-lock-file": (random_lock_file(8192), "opened", ""),
    "tiny-lock-file": (random_lock_file(10), "opened", ""),
}


def digest(path: Path) -> str:
    return hashlib.sha256((path / "data.mdb").read_bytes()).hexdigest()


@pytest.mark.parametrize("mode", ["writable", "readonly"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_damaged_store_is_a_typed_error_never_a_crash(store: Path, case: str, mode: str) -> None:
    damage, outcome, pattern = CASES[case]
    damage(store)
    before = digest(store)
    report = open_in_child(store, mode)
    assert report["outcome"] == outcome, report
    if outcome == "opened":
        assert report["checkpoints"] == RECORDS
        return
    message, hint = report["message"], report["hint"]
    assert isinstance(message, str)
    assert isinstance(hint, str)
    assert hint
    prefix = f"store {store.resolve()} is damaged: "
    assert message.startswith(prefix), message
    assert re.fullmatch(pattern, message.removeprefix(prefix)), message
    # Refused before LMDB touched anything: a writable open did not initialise or repair it.
    assert digest(store) == before


@pytest.mark.parametrize("slot", [0, 1])
def test_the_hint_for_one_wiped_meta_page_names_recover_and_the_transaction(
    store: Path, slot: int
) -> None:
    with DataFile(store) as data:
        txnids = [meta.txnid for meta in data.metas]
    zero_pages(slot)(store)
    with pytest.raises(StoreCorruptedError) as caught:
        preflight(store)
    assert caught.value.hint == (
        f"`lmdbstate recover` can get back every checkpoint committed up to transaction "
        f"{txnids[1 - slot]}: meta page {1 - slot} and the snapshot it points to are intact"
    )
    assert caught.value.path == store


def test_a_missing_directory_opened_read_only_is_not_found(tmp_path: Path) -> None:
    report = open_in_child(tmp_path / "nothing", "readonly")
    assert report["outcome"] == "StoreNotFoundError"
    assert report["message"] == f"no store at {tmp_path / 'nothing'}"


def test_an_intact_store_passes_preflight(template: Path) -> None:
    preflight(template)
    preflight(template / "not-created-yet")  # no data.mdb: LMDB creates the store


# -- lock files other processes use -----------------------------------------------------------


HOLDER = textwrap.dedent(
    """
    import lmdb, sys
    env = lmdb.open(sys.argv[1], max_dbs=8)
    print("ok", flush=True)
    input()  # keeps the environment, and its locks, until the test ends
    """
)


@pytest.fixture
def holder(store: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process with the store open, until the test ends."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ok\n"
    yield process
    # Ends it if the test did not, and closes the pipes either way (even if it crashed).
    process.communicate("\n" if process.poll() is None else None, timeout=30)


def test_a_tiny_lock_file_another_process_uses_is_refused(
    store: Path, holder: subprocess.Popen[str]
) -> None:
    # Damaged in place while the holder has it open: LMDB in a second process would read a
    # wrapped-around reader count and crash (SIGSEGV, measured).
    os.truncate(store / "lock.mdb", 10)
    report = open_in_child(store, "writable")
    assert report["outcome"] == "StoreCorruptedError"
    assert report["message"] == (
        f"store {store.resolve()} is damaged: lock.mdb is 10 bytes, shorter than LMDB's "
        f"192-byte lock table header, while another process has the store open: opening the "
        f"store now would crash this process"
    )


def test_a_tiny_lock_file_is_refused_when_no_one_can_tell_who_uses_it(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.truncate(store / "lock.mdb", 10)
    preflight(store)  # no other process has the store open: LMDB rebuilds lock.mdb
    monkeypatch.setattr(lmdbfile, "lock_holders", lambda inode: None)  # no /proc/locks
    with pytest.raises(StoreCorruptedError, match="/proc/locks cannot tell whether another"):
        preflight(store)


LOCKER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)  # what LMDB holds while it creates a store
    print("locked", flush=True)
    input()
    """
)


@pytest.fixture
def creator(store: Path) -> Iterator[subprocess.Popen[str]]:
    """A process holding lock.mdb the way LMDB does while it writes a new data.mdb."""
    process = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(store / "lock.mdb")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "locked\n"
    yield process
    # Ends it if the test did not, and closes the pipes either way (even if it crashed).
    process.communicate("\n" if process.poll() is None else None, timeout=30)


def test_a_store_being_created_is_left_to_lmdb(store: Path, creator: subprocess.Popen[str]) -> None:
    # A concurrent creator has made data.mdb but not yet written its meta pages: LMDB waits
    # for the creator's lock, so preflight must not call the half-made file damaged.
    os.truncate(store / "data.mdb", 0)
    preflight(store)
    (store / "data.mdb").write_bytes(_fresh_meta(0))  # meta page 0 written, meta page 1 not
    preflight(store)
    creator.communicate("\n", timeout=30)
    with pytest.raises(StoreCorruptedError, match="meta page 1"):
        preflight(store)


def test_a_truncated_store_is_refused_even_while_its_lock_is_held(
    store: Path, creator: subprocess.Popen[str]
) -> None:
    os.truncate(store / "data.mdb", 3 * PAGE)  # committed transactions: not a creation
    with pytest.raises(StoreCorruptedError, match="is truncated"):
        preflight(store)


def _fresh_meta(slot: int) -> bytes:
    """A meta page as LMDB writes it for a new environment: transaction 0, empty trees."""
    empty = (1 << 64) - 1
    free = struct.pack("<IHHQQQQQ", PAGE, 0x08, 0, 0, 0, 0, 0, empty)
    main = struct.pack("<IHHQQQQQ", 0, 0, 0, 0, 0, 0, 0, empty)
    body = struct.pack("<IIQQ", 0xBEEFC0DE, 1, 0, 1 << 20) + free + main + struct.pack("<QQ", 1, 0)
    return (struct.pack("<QHHHH", slot, 0, 0x08, 0, 0) + body).ljust(PAGE, b"\x00")


# -- files LMDB wrote that end early, and other oddities --------------------------------------


def short_environment(path: Path) -> dict[bytes, bytes]:
    """Write with raw LMDB until the file ends before its last page; returns what it holds.

    LMDB never writes a page it allocated and freed again in the same transaction, so a valid
    file can end before the last page its meta page names (measured: about 1 commit in 1,000
    of a random workload). Preflight must not call such a file truncated.
    """
    for seed in range(20):
        shutil.rmtree(path, ignore_errors=True)
        rng = random.Random(seed)
        env = lmdb.open(str(path), max_dbs=2, map_size=1 << 28)
        db = env.open_db(b"t")
        held: dict[bytes, bytes] = {}
        for _ in range(200):
            with env.begin(write=True) as txn:
                for _ in range(rng.randint(1, 40)):
                    if rng.random() < 0.55 or not held:
                        key = rng.randbytes(rng.randint(1, 40))
                        held[key] = rng.randbytes(rng.choice([10, 100, 1000, 3000, 9000]))
                        txn.put(key, held[key], db=db)
                    else:
                        key = rng.choice(sorted(held))
                        del held[key]
                        txn.delete(key, db=db)
            last = env.info()["last_pgno"]
            if (last + 1) * PAGE > os.path.getsize(path / "data.mdb"):
                env.close()
                return held
        env.close()
    raise AssertionError("no workload left the file short of its last page")


READ_ALL = textwrap.dedent(
    """
    import hashlib, lmdb, sys
    env = lmdb.open(sys.argv[1], max_dbs=2, readonly=True)
    with env.begin() as txn:
        items = list(txn.cursor(env.open_db(b"t", txn=txn, create=False)))
    print(len(items), hashlib.sha256(b"".join(k + v for k, v in items)).hexdigest())
    """
)


def test_a_file_ending_in_free_pages_passes(tmp_path: Path) -> None:
    path = tmp_path / "env"
    held = short_environment(path)
    with DataFile(path) as data:
        current = data.current
        assert current is not None
        missing = set(range(data.page_count, current.last_page + 1))
        assert missing
        assert missing <= data.free_pages().pages
    preflight(path)
    done = subprocess.run(
        [sys.executable, "-c", READ_ALL, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    expected = hashlib.sha256(b"".join(k + held[k] for k in sorted(held))).hexdigest()
    assert done.stdout.split() == [str(len(held)), expected]


def test_another_lmdb_data_format_is_unsupported(store: Path) -> None:
    with open(store / "data.mdb", "r+b") as file:
        for slot in (0, 1):
            file.seek(slot * PAGE + 20)
            file.write(struct.pack("<I", 999))
    with pytest.raises(UnsupportedFormatError, match="LMDB data format version 999"):
        preflight(store)


def test_a_meta_page_whose_page_size_is_wrong_is_named(store: Path) -> None:
    with open(store / "data.mdb", "r+b") as file:
        file.seek(16 + 24)  # md_pad of the free-page database: the page size
        file.write(struct.pack("<I", 8192))
    with pytest.raises(StoreCorruptedError) as caught:
        preflight(store)
    assert "meta page 0 of" in str(caught.value)
    assert "its page size 8192 disagrees with meta page 1, which sits at byte 4096" in str(
        caught.value
    )


@pytest.mark.parametrize("name", ["data.mdb", "lock.mdb"])
def test_a_directory_in_place_of_a_file_is_refused(store: Path, name: str) -> None:
    target = store / name
    target.unlink()
    target.mkdir()
    with pytest.raises(StoreCorruptedError, match=f"{name} is not a regular file"):
        preflight(store)
