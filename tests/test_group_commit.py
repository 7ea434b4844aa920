"""durability="group": concurrent puts share commits, fail alone, and are durable on return."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lmdbstate import (
    CheckpointInfo,
    CheckpointStore,
    CodecError,
    SequenceConflictError,
    StoreClosedError,
    StoreFullError,
    group,
)
from lmdbstate.memory import MEMORY_PATH

from .conftest import TINY_MAP


@pytest.fixture
def group_store(store_path: Path) -> Iterator[CheckpointStore]:
    with CheckpointStore(store_path, durability="group") as opened:
        yield opened


def last_txnid(store: CheckpointStore) -> int:
    txnid: int = store._backend._shared.env.info()["last_txnid"]  # type: ignore[attr-defined]
    return txnid


def queued(store: CheckpointStore) -> int:
    return len(store._backend._shared.committer._queue)  # type: ignore[attr-defined]


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def start_threads(
    targets: list[Callable[[], object]],
) -> tuple[list[object], list[threading.Thread]]:
    """Run each target in its own thread; each one's return value, or the exception it raised."""
    results: list[object] = [None] * len(targets)

    def run(index: int) -> None:
        try:
            results[index] = targets[index]()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(targets))]
    for thread in threads:
        thread.start()
    return results, threads


def in_threads(targets: list[Callable[[], object]]) -> list[object]:
    results, threads = start_threads(targets)
    for thread in threads:
        thread.join()
    return results


def lead_and_wait(store: CheckpointStore) -> threading.Thread:
    """A put that leads a group of its own and waits for the write lock the test holds."""
    committer = store._backend._shared.committer  # type: ignore[attr-defined]
    leader = threading.Thread(target=store.put, args=("lead", {}))
    leader.start()
    wait_until(lambda: committer._leading and not committer._queue)
    return leader


class HeldWrites:
    """Holds the environment's write lock, so that grouped puts queue up behind a commit."""

    def __init__(self, store: CheckpointStore) -> None:
        self.lock: threading.Lock = store._backend._shared.write_lock  # type: ignore[attr-defined]

    def __enter__(self) -> HeldWrites:
        self.lock.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.lock.release()


def test_concurrent_puts_all_land_in_order_in_fewer_commits(group_store: CheckpointStore) -> None:
    threads, puts = 16, 50
    before = last_txnid(group_store)

    def writer(thread: int) -> list[int]:
        return [
            group_store.put(f"wf-{thread}", {"thread": thread, "n": n}, step=n).seq
            for n in range(puts)
        ]

    results = in_threads([lambda t=t: writer(t) for t in range(threads)])
    commits = last_txnid(group_store) - before
    assert commits < threads * puts // 2, f"{commits} commits for {threads * puts} puts"
    for thread, seqs in enumerate(results):
        assert seqs == list(range(1, puts + 1))
        workflow_id = f"wf-{thread}"
        assert group_store.workflow(workflow_id).head_seq == puts
        for seq in (1, puts // 2, puts):
            checkpoint = group_store.get(workflow_id, seq)
            assert checkpoint.state == {"thread": thread, "n": seq - 1}
            assert checkpoint.step == seq - 1
    assert group_store.verify(deep=True).ok


def test_one_sequence_conflict_fails_its_caller_alone(group_store: CheckpointStore) -> None:
    group_store.put("shared", {"n": 0})
    with HeldWrites(group_store):
        leader = lead_and_wait(group_store)
        before = last_txnid(group_store)
        targets: list[Callable[[], object]] = [
            lambda n=n: group_store.put(f"wf-{n}", {"n": n}) for n in range(6)
        ]
        targets.insert(3, lambda: group_store.put("shared", {"n": 1}, expect_seq=5))
        results, threads = start_threads(targets)
        wait_until(lambda: queued(group_store) == len(targets))
    for thread in [leader, *threads]:
        thread.join()
    assert last_txnid(group_store) - before == 2  # the leader's commit, then one for the group
    conflict = results.pop(3)
    assert isinstance(conflict, SequenceConflictError)
    assert (conflict.expected, conflict.actual) == (5, 1)
    for n, info in enumerate(results):
        assert isinstance(info, CheckpointInfo), info
        assert group_store.get(f"wf-{n}", info.seq).state == {"n": n}
    assert group_store.workflow("shared").head_seq == 1
    assert group_store.verify(deep=True).ok


def test_an_unencodable_state_fails_its_caller_alone(group_store: CheckpointStore) -> None:
    targets: list[Callable[[], object]] = [
        lambda n=n: group_store.put(f"wf-{n}", {"n": n}) for n in range(8)
    ]
    targets.append(lambda: group_store.put("bad", {"x": object()}))
    results = in_threads(targets)
    assert isinstance(results[-1], CodecError)
    assert all(isinstance(info, CheckpointInfo) for info in results[:-1])
    assert [info.workflow_id for info in group_store.workflows()] == [f"wf-{n}" for n in range(8)]


def test_close_commits_queued_puts_and_refuses_those_waiting(store_path: Path) -> None:
    store = CheckpointStore(store_path, durability="group")
    store._backend._shared.committer._max_queued = 3  # type: ignore[attr-defined]
    targets: list[Callable[[], object]] = [
        lambda n=n: store.put(f"wf-{n}", {"n": n}) for n in range(7)
    ]
    with HeldWrites(store):
        leader = lead_and_wait(store)
        results, threads = start_threads(targets)
        # Three puts are queued behind the leader, four wait for room in the queue.
        wait_until(lambda: queued(store) == 3)
        closer = threading.Thread(target=store.close)
        closer.start()
        wait_until(lambda: sum(isinstance(r, StoreClosedError) for r in results) == 4)
    for thread in [leader, *threads, closer]:
        thread.join()
    with pytest.raises(StoreClosedError):
        store.put("late", {})
    committed = [info for info in results if isinstance(info, CheckpointInfo)]
    refused = [exc for exc in results if isinstance(exc, StoreClosedError)]
    assert len(committed) + len(refused) == len(targets), results
    assert len(committed) == 3
    with CheckpointStore(store_path) as reopened:
        present = {info.workflow_id for info in reopened.workflows()}
    assert present == {"lead"} | {info.workflow_id for info in committed}


def test_a_put_after_close_is_refused(store_path: Path) -> None:
    store = CheckpointStore(store_path, durability="group")
    store.put("wf", {})
    store.close()
    with pytest.raises(StoreClosedError):
        store.put("wf", {})


def test_a_full_map_grows_and_the_whole_group_commits(store_path: Path) -> None:
    with CheckpointStore(store_path, durability="group", map_size=TINY_MAP) as store:
        pad = "x" * 3000
        results = in_threads(
            [
                lambda n=n: [store.put(f"wf-{n}", {"pad": pad}).seq for _ in range(20)]
                for n in range(8)
            ]
        )
        assert results == [list(range(1, 21))] * 8
        assert store.stats().map_size > TINY_MAP
        assert store.verify(deep=True).ok


def test_a_group_that_cannot_commit_fails_each_of_its_callers(store_path: Path) -> None:
    with CheckpointStore(
        store_path, durability="group", map_size=TINY_MAP, max_map_size=TINY_MAP
    ) as store:
        results = in_threads(
            [lambda n=n: store.put(f"wf-{n}", {"pad": "x" * TINY_MAP}) for n in range(8)]
        )
        assert all(isinstance(exc, StoreFullError) for exc in results), results
        assert store.put("small", {}).seq == 1  # the store stays usable
        assert list(store.workflows())[0].workflow_id == "small"


def test_batches_and_other_writes_work_in_group_mode(group_store: CheckpointStore) -> None:
    with group_store.batch() as batch:
        batch.put("wf", {"n": 1})
        batch.put("wf", {"n": 2})
    assert [info.seq for info in batch.checkpoints] == [1, 2]
    assert group_store.put("wf", {"n": 3}).seq == 3
    assert group_store.set_status("wf", "completed").status == "completed"
    assert group_store.delete("wf", seq=1) == 1
    assert [info.seq for info in group_store.history("wf")] == [2, 3]


def test_memory_store_accepts_group() -> None:
    with CheckpointStore(MEMORY_PATH, durability="group") as store:
        assert store.durability == "group"
        assert store.put("wf", {}).seq == 1


# Eight threads, each on its own workflow; a line per put, printed only after put returned.
WRITER = textwrap.dedent(
    """
    import sys, threading
    from lmdbstate import CheckpointStore

    path = sys.argv[1]
    printing = threading.Lock()

    def write(store, workflow_id):
        latest = store.latest(workflow_id)
        head = 0 if latest is None else latest.seq
        while True:
            state = {"seq": head + 1, "pad": "p" * (head % 7 * 300)}
            head = store.put(workflow_id, state, expect_seq=head).seq
            with printing:
                print(workflow_id, head, flush=True)

    with CheckpointStore(path, durability="group", map_size=256 * 1024) as store:
        print("ready", flush=True)
        for n in range(8):
            threading.Thread(target=write, args=(store, f"writer-{n}"), daemon=True).start()
        threading.Event().wait()
    """
)


def run_writer(path: Path, acked: dict[str, list[int]], pause: float) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    killer = threading.Timer(pause, proc.send_signal, (signal.SIGKILL,))
    killer.start()
    for line in proc.stdout:
        if not line.endswith(b"\n"):
            break  # cut short by the kill: not an acknowledgement
        workflow_id, seq = line.split()
        acked.setdefault(workflow_id.decode(), []).append(int(seq))
    proc.stdout.close()
    proc.wait()
    killer.join()
    assert proc.returncode == -signal.SIGKILL, "the writer died of something else"


def test_sigkilled_group_writers_lose_no_acknowledged_checkpoint(store_path: Path) -> None:
    rng = random.Random(6)
    acked: dict[str, list[int]] = {}
    with CheckpointStore(store_path):
        pass
    for _ in range(20):
        run_writer(store_path, acked, rng.uniform(0.005, 0.1))
    assert sum(map(len, acked.values())) > 100
    with CheckpointStore(store_path, readonly=True) as store:
        assert store.verify(deep=True).ok
        for workflow_id, seqs in acked.items():
            present = {info.seq for info in store.history(workflow_id)}
            assert set(seqs) <= present, f"{workflow_id}: acknowledged checkpoints lost"
            assert present == set(range(1, max(present) + 1))
            for seq in sorted(seqs)[-5:]:
                assert store.get(workflow_id, seq).state["seq"] == seq


def test_a_leader_waits_for_as_many_puts_as_its_last_group_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the wait, 16 writers' groups alternated between 1 and 16 puts (measured): the
    first caller back from a group led a group of its own, one flush for one put."""
    monkeypatch.setattr(group, "MAX_GATHER", 30.0)  # the queue fills first, or the test fails
    committer = group.GroupCommitter()
    committer._last_group, committer._last_commit = 3, 60.0
    gathered: list[int] = []

    def lead() -> None:
        with committer._lock:
            committer._queue.append(group._Slot(lambda txn: None))
            committer._gather()
            gathered.append(len(committer._queue))

    leader = threading.Thread(target=lead)
    leader.start()
    for _ in range(2):
        wait_until(lambda: len(committer._queue) >= 1)
        with committer._lock:
            assert not gathered  # still waiting for the third put
            committer._queue.append(group._Slot(lambda txn: None))
            committer._arrived.notify()
    leader.join(timeout=20)
    assert gathered == [3]


def test_a_lone_writer_never_waits_to_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group, "MAX_GATHER", 30.0)
    committer = group.GroupCommitter()
    committer._last_commit = 60.0  # a lone writer's last group held 1 put: no wait at all
    started = time.monotonic()
    with committer._lock:
        committer._queue.append(group._Slot(lambda txn: None))
        committer._gather()
    assert time.monotonic() - started < 10


def test_a_leader_interrupted_while_gathering_leaves_the_queue_usable(
    group_store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (review): a KeyboardInterrupt in the gather wait passed the lead to the
    interrupted caller's own queued slot, which nobody waited for: every later put hung."""
    committer = group_store._backend._shared.committer  # type: ignore[attr-defined]

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(committer, "_gather", interrupted)
    with pytest.raises(KeyboardInterrupt):
        group_store.put("wf", {"n": 1})
    monkeypatch.undo()
    assert (len(committer._queue), committer._leading) == (0, False)
    results = in_threads([lambda: group_store.put("other", {"n": 2})])
    assert isinstance(results[0], CheckpointInfo)
    assert group_store.workflow("other").head_seq == 1
