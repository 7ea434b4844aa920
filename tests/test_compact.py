"""In-place compaction and ``compact(dest)``, on real files, with real processes.

Compaction renames a compacted copy over ``data.mdb`` while holding an exclusive lock on byte 0
of ``lock.mdb``. These tests check that it shrinks the file and keeps every record, that it is
refused while the store is open elsewhere, that a compaction killed midway leaves the store
intact, and the race it is built for: a process that starts to open the store during the
compaction waits in LMDB, then opens the new file with the old ``lock.mdb``, which still names the
old file's last transaction id. How that process resolves its meta page depends on the parity
of that id, so each race runs with an even and an odd one, and with the waiting process either
getting its lock before or after the compacting process reopens the store.

Helper processes are synchronised through their stdout and stdin and through /proc/locks (a
process blocked on a POSIX lock is listed there with "->"), not by timing; only the random
kills pick their instants by sleeping. Nothing asserts how long anything took.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import select
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import lmdbstate.env as env_module
from lmdbstate import CheckpointStore
from lmdbstate.env import LmdbBackend, _SharedEnv
from lmdbstate.errors import ReadOnlyStoreError, StoreError, StoreInUseError
from lmdbstate.lmdbfile import mirror_meta
from lmdbstate.memory import MEMORY_PATH
from lmdbstate.retention import RetentionPolicy

from .conftest import invoke_on

SIZES = (64, 1024, 8192, 60_000)  # inline values, a few pages, and overflow runs
STAGING = "compact.tmp"
HANG_GUARD = 60.0  # seconds before a wait that should end at once is declared stuck

Digests = dict[str, dict[int, int]]

# Opens the store and keeps it open until its stdin closes.
HOLDER = textwrap.dedent(
    """
    import sys
    from lmdbstate import CheckpointStore

    with CheckpointStore(sys.argv[1], readonly=sys.argv[2] == "readonly") as store:
        store.stats()
        print("ready", flush=True)
        sys.stdin.read()
    """
)


# Imports first and says "ready"; opens the store on "open" (here it blocks while a compaction
# holds the lock) and says "opened"; on "go" reads every checkpoint, puts three of its own, and
# prints what it read as JSON.
OPENER = textwrap.dedent(
    """
    import json, sys
    from lmdbstate import CheckpointStore

    print("ready", flush=True)
    assert sys.stdin.readline() == "open\\n"
    with CheckpointStore(sys.argv[1]) as store:
        print("opened", flush=True)
        assert sys.stdin.readline() == "go\\n"
        seen = {
            info.workflow_id: [[c.seq, c.digest] for c in store.history(info.workflow_id)]
            for info in store.workflows()
        }
        for n in range(3):
            store.put("opener", {"n": n, "pad": "o" * 3000})
        print(json.dumps(seen), flush=True)
    """
)

# Compacts the store over and over; with a pause point, stops for good there instead (to be
# killed) and says "paused".
KILLED_COMPACTOR = textwrap.dedent(
    """
    import sys, time
    import lmdbstate.env as env
    from lmdbstate import CheckpointStore

    path, point = sys.argv[1], sys.argv[2]
    real_mirror, real_fsync_directory = env.mirror_meta, env.fsync_directory

    def pause():
        print("paused", flush=True)
        time.sleep(3600)

    def mirror_then_pause(copied, txnid):
        real_mirror(copied, txnid)
        pause()

    if point == "after-copy":  # the copy is complete in compact.tmp, not yet mirrored
        env.mirror_meta = lambda copied, txnid: pause()
    elif point == "after-mirror":  # the copy is ready, not yet renamed
        env.mirror_meta = mirror_then_pause
    elif point == "after-rename":  # data.mdb is the copy; the directory is not flushed
        env.fsync_directory = lambda directory: pause()
    with CheckpointStore(path) as store:
        print("ready", flush=True)
        while True:
            store.compact()
    """
)


# -- helpers ----------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lmdb_env(store: CheckpointStore) -> Any:
    """The lmdb.Environment under the store (it is replaced by each compaction)."""
    backend = store._backend
    assert isinstance(backend, LmdbBackend)
    return backend._shared.env


def last_txnid(store: CheckpointStore) -> int:
    txnid: int = lmdb_env(store).info()["last_txnid"]
    return txnid


def set_parity(store: CheckpointStore, parity: int) -> None:
    """Make the id of the store's last transaction even (0) or odd (1) with one more put."""
    if last_txnid(store) % 2 != parity:
        store.put("parity", {})
    assert last_txnid(store) % 2 == parity


def fill(store: CheckpointStore, *, workflows: int, per_workflow: int, seed: int) -> None:
    """Checkpoints of mixed sizes, incompressible, one transaction per workflow."""
    rng = random.Random(seed)
    for w in range(workflows):
        with store.batch() as batch:
            for n in range(per_workflow):
                payload = rng.randbytes(rng.choice(SIZES))
                batch.put(f"wf-{w}", {"n": n, "payload": payload}, step=n)


def filled_then_thinned(path: Path) -> CheckpointStore:
    """A store holding about 2 MiB of checkpoints, most of which are then deleted."""
    store = CheckpointStore(path)
    fill(store, workflows=6, per_workflow=20, seed=7)
    for w in range(3):
        store.delete(f"wf-{w}")
    return store


def digests(store: CheckpointStore) -> Digests:
    return {
        info.workflow_id: {c.seq: c.digest for c in store.history(info.workflow_id)}
        for info in store.workflows()
    }


def states(store: CheckpointStore) -> dict[tuple[str, int], Any]:
    return {
        (workflow_id, seq): store.get(workflow_id, seq).state
        for workflow_id, seqs in digests(store).items()
        for seq in seqs
    }


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll until ``condition`` holds; the deadline only keeps a broken test from hanging."""
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.005)


def lock_requests(path: Path) -> list[tuple[bool, int]]:
    """POSIX locks on path's lock.mdb from /proc/locks: (blocked request?, pid) each."""
    inode = os.stat(path / "lock.mdb").st_ino
    found = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        blocked = "->" in fields
        if blocked:
            fields.remove("->")
        # "1: POSIX ADVISORY READ 4242 fe:00:2149881 0 0"
        if len(fields) >= 8 and fields[5].endswith(f":{inode}") and fields[6] == "0":
            found.append((blocked, int(fields[4])))
    return found


def has_output(proc: subprocess.Popen[str]) -> bool:
    """Whether the process wrote a line we have not read (without waiting for one)."""
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], 0)
    return bool(readable)


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline()


def send(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@contextmanager
def held_open(path: Path, *, readonly: bool) -> Iterator[subprocess.Popen[str]]:
    """Another process with the store open for the duration of the block."""
    proc = spawn(HOLDER, str(path), "readonly" if readonly else "writable")
    try:
        assert read_line(proc) == "ready\n"
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=HANG_GUARD) == 0
        assert proc.stdout is not None
        proc.stdout.close()


# -- shrinking, and the copy at dest ----------------------------------------------------------


def test_compaction_shrinks_the_file_and_keeps_every_record(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with CheckpointStore(path) as store:
        fill(store, workflows=8, per_workflow=40, seed=1)
        for w in range(5):
            store.delete(f"wf-{w}")
        gc = store.gc(RetentionPolicy(keep_last=6))
        assert gc.checkpoints_removed == 3 * (40 - 6)
        before = store.stats()
        kept, kept_states = digests(store), states(store)
        assert sum(map(len, kept.values())) == 3 * 6
        # The deletions freed most of the file, which LMDB keeps: compaction gives it back.
        assert before.file_bytes > 4 * before.live_bytes

        report = store.compact()

        size = os.path.getsize(path / "data.mdb")
        assert size <= 1.5 * before.live_bytes + 64 * 1024
        assert report.path == store.path
        assert report.file_bytes_before == before.file_bytes
        assert report.file_bytes_after == size
        assert report.live_bytes == before.live_bytes
        assert not (path / STAGING).exists()
        assert digests(store) == kept
        assert states(store) == kept_states
        assert store.verify(deep=True).ok
        # The same object writes on, into the new file, and seqs go on where they were.
        added = store.put("wf-7", {"after": 1})
        created = store.put("new", {"after": 2})
        assert (added.seq, created.seq) == (41, 1)
        expected = {
            **kept,
            "wf-7": {**kept["wf-7"], 41: added.digest},
            "new": {1: created.digest},
        }
        assert digests(store) == expected

    with CheckpointStore(path) as reopened:
        assert digests(reopened) == expected
        assert states(reopened).items() >= kept_states.items()
        assert reopened.verify(deep=True).ok
        assert reopened.put("new", {"after": 3}).seq == 2


def test_compaction_to_dest_writes_a_compacted_copy_and_leaves_the_store_alone(
    tmp_path: Path,
) -> None:
    path, dest = tmp_path / "store", tmp_path / "copy"
    with filled_then_thinned(path) as store:
        before = store.stats()
        original = sha256(path / "data.mdb")
        kept = digests(store)

        report = store.compact(dest)

        assert sha256(path / "data.mdb") == original
        assert report.path == str(dest)
        assert report.file_bytes_before == before.file_bytes
        assert report.file_bytes_after == os.path.getsize(dest / "data.mdb")
        assert report.file_bytes_after < before.file_bytes
        assert store.put("wf-5", {"still": "open"}).seq == 21  # the store itself goes on
        with pytest.raises(StoreError, match="already exists"):
            store.compact(dest)  # never over an existing store
    with CheckpointStore(dest) as copy:
        assert digests(copy) == kept
        assert copy.verify(deep=True).ok


@pytest.mark.parametrize(
    "options",
    [{"durability": "sync"}, {"durability": "group"}, {"durability": "async", "map_size": 65536}],
    ids=["sync", "group", "async-tiny-map"],
)
def test_compaction_in_each_durability_mode(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "store"
    with CheckpointStore(path, **options) as store:
        fill(store, workflows=4, per_workflow=10, seed=2)
        store.delete("wf-0")
        kept = digests(store)
        report = store.compact()
        assert report.file_bytes_after < report.file_bytes_before
        assert digests(store) == kept

        # Puts from several threads after the compaction: group commit shares their commits.
        def put_some(thread: int) -> None:
            for n in range(10):
                store.put(f"thread-{thread}", {"n": n, "pad": "t" * 4000})

        threads = [threading.Thread(target=put_some, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    with CheckpointStore(path) as reopened:
        found = digests(reopened)
        assert {wf: found[wf] for wf in kept} == kept
        assert all(set(found[f"thread-{t}"]) == set(range(1, 11)) for t in range(4))
        assert reopened.verify(deep=True).ok


def test_a_failed_compaction_leaves_the_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store"

    def disk_full(copied: str, txnid: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), copied)

    with filled_then_thinned(path) as store:
        original = sha256(path / "data.mdb")
        kept = digests(store)
        monkeypatch.setattr(env_module, "mirror_meta", disk_full)
        with pytest.raises(StoreError, match="cannot compact store .*No space left on device"):
            store.compact()
        assert sha256(path / "data.mdb") == original
        assert not (path / STAGING).exists()
        # The environment was reopened on the old file: the same object goes on.
        assert digests(store) == kept
        assert store.put("wf-5", {"after": "failure"}).seq == 21
        monkeypatch.undo()
        report = store.compact()  # the same compaction, with nothing in its way
        assert report.file_bytes_after < report.file_bytes_before
        assert digests(store)["wf-5"].keys() == set(range(1, 22))
        assert store.verify(deep=True).ok


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("readonly", [True, False], ids=["readonly-holder", "writable-holder"])
def test_refused_while_another_process_has_the_store_open(tmp_path: Path, readonly: bool) -> None:
    path = tmp_path / "store"
    with filled_then_thinned(path) as store:
        original = sha256(path / "data.mdb")
        kept = digests(store)
        with held_open(path, readonly=readonly) as holder:
            with pytest.raises(StoreInUseError, match=rf"\(pid {holder.pid}\)") as refused:
                store.compact()
            assert refused.value.hint is not None
            assert "backup" in refused.value.hint
            assert sha256(path / "data.mdb") == original
            assert not (path / STAGING).exists()
            # Refused, the store stays usable in both processes.
            assert digests(store) == kept
            assert store.verify().ok
        report = store.compact()  # the holder is gone
        assert report.file_bytes_after < report.file_bytes_before
        assert digests(store) == kept
        assert store.verify().ok


def test_refused_while_another_store_object_of_this_process_has_it_open(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with filled_then_thinned(path) as store:
        original = sha256(path / "data.mdb")
        other = CheckpointStore(path, readonly=True)  # shares this process's environment
        with pytest.raises(StoreInUseError, match="2 times in this process"):
            store.compact()
        assert sha256(path / "data.mdb") == original
        assert digests(other) == digests(store)
        other.close()
        report = store.compact()  # alone now
        assert report.file_bytes_after < report.file_bytes_before
        assert store.verify().ok


def test_a_readonly_store_compacts_only_to_dest(tmp_path: Path) -> None:
    path = tmp_path / "store"
    filled_then_thinned(path).close()
    original = sha256(path / "data.mdb")
    with CheckpointStore(path, readonly=True) as store:
        with pytest.raises(ReadOnlyStoreError):
            store.compact()
        assert sha256(path / "data.mdb") == original
        kept = digests(store)
        store.compact(tmp_path / "copy")
    with CheckpointStore(tmp_path / "copy", readonly=True) as copy:
        assert digests(copy) == kept


def test_an_in_memory_store_compacts_as_a_no_op() -> None:
    with CheckpointStore(MEMORY_PATH) as store:
        store.put("wf", {"n": 1})
        store.put("wf", {"n": 2})
        store.delete("wf", seq=1)
        report = store.compact()
        assert report.file_bytes_before == report.file_bytes_after == 0
        latest = store.latest("wf")
        assert latest is not None
        assert latest.state == {"n": 2}
        assert store.put("wf", {"n": 3}).seq == 3


# -- the waiting opener -----------------------------------------------------------------------


class Race:
    """A compaction during which another process starts to open the store.

    The compacting process is this one. Once LMDB's copy is made, a hook (in place of
    ``mirror_meta``, or around it) tells the opener to open the store and waits until /proc/locks
    shows it blocked on lock.mdb. The compaction then closes the environment, which releases the
    lock; which process gets the lock on byte 0 next decides whether the lock table is rebuilt:

    - "opener-first": the opener gets its shared lock first and keeps the old lock table (and
      its transaction id); this process reopens after the opener has opened. Forced by a hook
      on ``_SharedEnv._open_env`` that waits for the opener's "opened".
    - "compactor-first": this process reopens alone, takes the exclusive lock and rebuilds the
      lock table from the new file. Forced by stopping the opener (SIGSTOP) while it waits.

    Both happen unforced, depending on scheduling.
    """

    def __init__(self, path: Path, order: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        self.order = order
        self.opener = spawn(OPENER, str(path))
        assert read_line(self.opener) == "ready\n"
        self.blocked_during_compaction = False
        self._awaiting_opened = False
        self._real_open_env = _SharedEnv._open_env

        def open_env(shared: _SharedEnv, map_size: int, max_readers: int) -> Any:
            return self._open_env(shared, map_size, max_readers)

        monkeypatch.setattr(_SharedEnv, "_open_env", open_env)

    def mirror_meta(self, copied: str, txnid: int) -> None:
        mirror_meta(copied, txnid)
        self.start_opening()

    def skip_mirror_meta(self, copied: str, txnid: int) -> None:
        self.start_opening()

    def start_opening(self) -> None:
        send(self.opener, "open")
        pid = self.opener.pid

        def blocked() -> bool:
            assert self.opener.poll() is None, "the opener died"
            return (True, pid) in lock_requests(self.path)

        wait_until(blocked, "the opener to block")
        # The exclusive lock keeps it out of the store: it has not opened.
        assert not has_output(self.opener)
        self.blocked_during_compaction = True
        self._awaiting_opened = True
        if self.order == "compactor-first":
            os.kill(pid, signal.SIGSTOP)

    def _open_env(self, shared: _SharedEnv, map_size: int, max_readers: int) -> Any:
        if self.order == "opener-first" and self._awaiting_opened:
            self._awaiting_opened = False  # once: the reopen at the end of the compaction
            assert read_line(self.opener) == "opened\n"
        return self._real_open_env(shared, map_size, max_readers)

    def after_compaction(self) -> None:
        if self.order == "compactor-first":
            os.kill(self.opener.pid, signal.SIGCONT)
            assert read_line(self.opener) == "opened\n"

    def opener_reads(self) -> Digests:
        """Let the opener read and write; what it read."""
        send(self.opener, "go")
        seen = json.loads(read_line(self.opener))
        assert self.opener.wait(timeout=HANG_GUARD) == 0
        return {wf: {seq: digest for seq, digest in pairs} for wf, pairs in seen.items()}

    def close(self) -> None:
        """Kill the opener if it is still there (a failed test), and close its pipes."""
        if self.opener.poll() is None:
            self.opener.kill()
            self.opener.wait()
        for stream in (self.opener.stdin, self.opener.stdout):
            assert stream is not None
            stream.close()


@pytest.fixture
def race_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


def race_store(path: Path, parity: int) -> CheckpointStore:
    store = filled_then_thinned(path)
    set_parity(store, parity)
    return store


PARITIES = pytest.mark.parametrize("parity", [0, 1], ids=["even-txnid", "odd-txnid"])
ORDERS = pytest.mark.parametrize("order", ["opener-first", "compactor-first"])


@PARITIES
@ORDERS
def test_a_process_opening_during_compaction_waits_and_then_sees_every_checkpoint(
    race_path: Path, parity: int, order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = race_store(race_path, parity)
    kept = digests(store)
    race = Race(race_path, order, monkeypatch)
    monkeypatch.setattr(env_module, "mirror_meta", race.mirror_meta)
    try:
        report = store.compact()
        race.after_compaction()
        assert race.blocked_during_compaction
        assert report.file_bytes_after < report.file_bytes_before
        assert digests(store) == kept  # what the compacting process reads afterwards
        assert race.opener_reads() == kept  # and what the opener read
        mine = store.put("after", {"from": "compactor"})
    finally:
        race.close()
        store.close()
    with CheckpointStore(race_path) as reopened:
        found = digests(reopened)
        assert {wf: found[wf] for wf in kept} == kept
        assert set(found["opener"]) == {1, 2, 3}
        assert found["after"] == {1: mine.digest}
        assert reopened.verify(deep=True).ok


@PARITIES
def test_without_mirrored_meta_a_waiting_opener_reads_the_empty_meta_page(
    race_path: Path, parity: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why ``mirror_meta`` exists: the same race with LMDB's copy renamed in as it is.

    The opener keeps the old lock table, whose transaction id N makes LMDB read meta page N % 2.
    LMDB's compacting copy has its data under meta page 1 and an empty meta page 0. With N odd
    the opener reads the data; with N even it reads an empty environment, and its writable open
    creates the named databases afresh over page 2 onwards (committed to meta page 1): every
    checkpoint is lost, for the compacting process too, and for good.
    """
    store = race_store(race_path, parity)
    kept = digests(store)
    race = Race(race_path, "opener-first", monkeypatch)
    monkeypatch.setattr(env_module, "mirror_meta", race.skip_mirror_meta)
    try:
        store.compact()
        compactor_sees = digests(store)
        opener_sees = race.opener_reads()
    finally:
        race.close()
        store.close()
    with CheckpointStore(race_path) as reopened:
        found = digests(reopened)
        assert reopened.verify().ok  # a sound store: an empty one
    if parity == 0:
        assert opener_sees == {}
        assert compactor_sees == {}
        assert found == {"opener": found["opener"]}
    else:
        assert opener_sees == kept
        assert compactor_sees == kept
        assert {wf: found[wf] for wf in kept} == kept


@PARITIES
def test_verify_right_after_a_compaction_that_another_process_waited_for(
    race_path: Path, parity: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BUG: verify() fails until the next write when the opener won the race for the lock.

    The lock table keeps the old file's last transaction id N, so read transactions have id N,
    while the new file's meta pages carry ids 0 and 1. ``_SharedEnv.check_structure`` looks for
    the meta page whose id is the read transaction's, finds none, retries and raises
    "kept changing: no snapshot could be pinned". This holds in every process that has the
    store open, and in any that opens it, until one of them commits a write.
    """
    store = race_store(race_path, parity)
    kept = digests(store)
    race = Race(race_path, "opener-first", monkeypatch)
    monkeypatch.setattr(env_module, "mirror_meta", race.mirror_meta)
    try:
        store.compact()
        assert digests(store) == kept  # the records read fine
        assert store.verify().ok  # raises StoreError
    finally:
        race.close()
        store.close()


def test_reads_from_another_thread_during_compaction_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BUG: a read from another thread on the same store object fails while compaction runs.

    Compaction closes and reopens the environment under ``write_lock``, which reads do not take,
    and without the generation bump or ``resizing`` flag that ``run_read`` retries on: a read
    that begins meanwhile raises StoreError ("Attempt to operate on closed/deleted/dropped
    object", or "Database handle belongs to another environment" once ``env`` is new and ``dbs``
    still the old one's). Threads sharing a store are supported (group commit, the asyncio
    wrapper's thread pool, the automatic gc).
    """
    path = tmp_path / "store"
    outcome: list[object] = []

    def read() -> None:
        try:
            latest = store.latest("wf-5")
            outcome.append(None if latest is None else latest.seq)
        except StoreError as exc:
            outcome.append(exc)

    real_open_env = _SharedEnv._open_env
    reader = threading.Thread(target=read)

    def open_env(shared: _SharedEnv, map_size: int, max_readers: int) -> Any:
        # The old environment is closed, the new one not yet open: a read begins now. A read
        # that waits for the compaction is fine too: it is joined once the compaction is over.
        reader.start()
        reader.join(timeout=1.0)
        return real_open_env(shared, map_size, max_readers)

    with filled_then_thinned(path) as store:
        monkeypatch.setattr(_SharedEnv, "_open_env", open_env)
        store.compact()
        monkeypatch.undo()
        reader.join()
        assert outcome == [20]


# -- killed midway ----------------------------------------------------------------------------


def check_intact(path: Path, kept: Digests) -> None:
    with CheckpointStore(path) as store:
        assert digests(store) == kept
        assert store.verify(deep=True).ok


@pytest.mark.parametrize("point", ["after-copy", "after-mirror", "after-rename"])
def test_a_compaction_killed_midway_leaves_the_store_intact(tmp_path: Path, point: str) -> None:
    path = tmp_path / "store"
    with filled_then_thinned(path) as store:
        kept = digests(store)
    original = sha256(path / "data.mdb")
    proc = spawn(KILLED_COMPACTOR, str(path), point)
    try:
        assert read_line(proc) == "ready\n"
        assert read_line(proc) == "paused\n"
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            assert stream is not None
            stream.close()
    assert (path / STAGING).is_dir()  # killed with its copy under way
    if point == "after-rename":
        assert sha256(path / "data.mdb") != original
        assert not os.listdir(path / STAGING)  # the copy was renamed out of it
    else:
        assert sha256(path / "data.mdb") == original
        assert (path / STAGING / "data.mdb").is_file()
    check_intact(path, kept)
    with CheckpointStore(path) as store:
        store.compact()  # over the leftover directory
        assert not (path / STAGING).exists()
        assert digests(store) == kept
        assert store.put("wf-5", {"n": "after"}).seq == 21
    with CheckpointStore(path) as store:
        assert store.verify(deep=True).ok
        assert set(digests(store)["wf-5"]) == set(range(1, 22))


def test_compactions_killed_at_random_instants_leave_the_store_intact(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with CheckpointStore(path) as store:
        fill(store, workflows=6, per_workflow=60, seed=3)
        for w in range(4):
            store.delete(f"wf-{w}")
        kept = digests(store)
    rng = random.Random(5)
    for _ in range(4):
        proc = spawn(KILLED_COMPACTOR, str(path), "none")
        try:
            assert read_line(proc) == "ready\n"
            time.sleep(rng.uniform(0.0, 0.05))  # somewhere in one of its compactions
        finally:
            proc.send_signal(signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL
            for stream in (proc.stdin, proc.stdout):
                assert stream is not None
                stream.close()
        check_intact(path, kept)
    with CheckpointStore(path) as store:
        store.compact()
        assert not (path / STAGING).exists()
        assert digests(store) == kept


# -- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    # As tests/test_cli.py: a fixed width, nothing from the developer's environment.
    return CliRunner(env={"COLUMNS": "120", "LMDBSTATE_PATH": None, "LMDBSTATE_DEBUG": None})


def test_cli_compact_in_place(tmp_path: Path, runner: CliRunner) -> None:
    path = tmp_path / "store"
    with filled_then_thinned(path) as store:
        kept = digests(store)
    before = os.path.getsize(path / "data.mdb")

    result = invoke_on(runner, path, "compact")

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    pattern = (
        rf"compacted {re.escape(os.path.realpath(path))}: file [\d.]+ [KM]iB -> [\d.]+ [KM]iB "
        rf"\(live [\d.]+ [KM]iB\), \d+\.\d\d s\n"
    )
    assert re.fullmatch(pattern, result.stdout), result.stdout
    assert os.path.getsize(path / "data.mdb") < before
    check_intact(path, kept)


def test_cli_compact_to_dest_as_json_while_another_process_has_the_store_open(
    tmp_path: Path, runner: CliRunner
) -> None:
    path, dest = tmp_path / "store", tmp_path / "copy"
    with filled_then_thinned(path) as store:
        kept = digests(store)
    original = sha256(path / "data.mdb")
    with held_open(path, readonly=False):
        result = invoke_on(runner, path, "compact", "--dest", str(dest), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"path", "file_bytes_before", "file_bytes_after", "live_bytes", "seconds"}
    assert report["path"] == str(dest)
    assert report["file_bytes_before"] == os.path.getsize(path / "data.mdb")
    assert report["file_bytes_after"] == os.path.getsize(dest / "data.mdb")
    assert report["file_bytes_after"] < report["file_bytes_before"]
    assert sha256(path / "data.mdb") == original
    check_intact(dest, kept)


def test_cli_compact_refused_while_another_process_has_the_store_open(
    tmp_path: Path, runner: CliRunner
) -> None:
    path = tmp_path / "store"
    filled_then_thinned(path).close()
    original = sha256(path / "data.mdb")
    with held_open(path, readonly=True) as holder:
        result = invoke_on(runner, path, "compact")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: store ")
    assert f"is open in another process (pid {holder.pid})" in lines[0]
    assert lines[1].startswith("hint: ")
    assert "lmdbstate backup DEST" in lines[1]
    assert sha256(path / "data.mdb") == original


def test_cli_compact_of_a_missing_store_creates_nothing(tmp_path: Path, runner: CliRunner) -> None:
    result = invoke_on(runner, tmp_path / "nowhere", "compact")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no store at ")
    assert not (tmp_path / "nowhere").exists()


def test_compaction_and_backups_keep_the_file_s_permissions(tmp_path: Path) -> None:
    """Regression (review): LMDB makes its copy 0666 less the umask; a 0600 store became
    readable by others once compacted."""
    path = tmp_path / "store"
    with CheckpointStore(path) as store:
        store.put("wf", {"secret": "s" * 5000})
        os.chmod(path / "data.mdb", 0o600)
        store.compact()
        assert stat.S_IMODE(os.stat(path / "data.mdb").st_mode) == 0o600
        store.backup(tmp_path / "copy")
        assert stat.S_IMODE(os.stat(tmp_path / "copy" / "data.mdb").st_mode) == 0o600
        latest = store.latest("wf")
        assert latest is not None
        assert latest.state == {"secret": "s" * 5000}
