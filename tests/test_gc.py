"""Garbage collection on real stores, on disk and in memory.

What each retention bound deletes, alone and together; what no bound deletes (a running
workflow's newest intact checkpoint); dry runs; the checks each transaction makes against a
plan gone stale; automatic collection; the size of data.mdb under a cap; and ``lmdbstate gc``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmdbstate import (
    CheckpointInfo,
    CheckpointStore,
    Config,
    GcReport,
    ReadOnlyStoreError,
    RetentionPolicy,
    WorkflowNotFoundError,
    collector,
    retention,
)
from lmdbstate.collector import collect
from lmdbstate.config import ENV_VARIABLES
from lmdbstate.keys import checkpoint_key, encode_workflow_id
from lmdbstate.memory import MEMORY_PATH
from lmdbstate.models import Status
from lmdbstate.records import HEADER_SIZE
from lmdbstate.retention import FINISHED

from .conftest import invoke_on
from .damage import raw_get, raw_put

SECOND = 10**9
GAP = 20_000
"""ns the clock moves on after each put and status change: a cut-off half-way between two of
them stays exact through the planner's float arithmetic (about 256 ns at today's epoch)."""

# The order of the puts of ``populate``; each workflow's seqs count up in it.
ORDER = (
    "run-a", "done", "run-b", "run-a", "failed", "done", "run-a", "run-b", "done", "failed",
    "run-a", "done", "run-b", "run-a", "cancelled",
)  # fmt: skip


FINISHED_AS: dict[str, Status] = {"done": "completed", "failed": "failed", "cancelled": "cancelled"}
EVERYTHING = {
    "run-a": [1, 2, 3, 4, 5], "run-b": [1, 2, 3], "done": [1, 2, 3, 4], "failed": [1, 2],
    "cancelled": [1],
}  # fmt: skip


# -- helpers ----------------------------------------------------------------------------------


def _after(ns: int) -> None:
    while time.time_ns() < ns + GAP:
        pass


@dataclass(frozen=True)
class Populated:
    """What ``populate`` wrote: the puts in ``ORDER`` and when each finished workflow ended."""

    puts: tuple[CheckpointInfo, ...]
    finished_ns: dict[str, int]

    @property
    def now(self) -> int:
        """The time every collection of a test is run at: well after everything."""
        return max(self.finished_ns.values()) + 3600 * SECOND

    def cut(self, index: int) -> int:
        """A time after put ``index`` and before the next one."""
        return self.puts[index].created_ns + GAP // 2

    def finished_cut(self, workflow_id: str) -> int:
        """A time after the workflow's status was set, and before the next status was."""
        return self.finished_ns[workflow_id] + GAP // 2

    def age(self, cut_ns: int) -> float:
        """The age, in seconds at ``now``, that makes ``cut_ns`` the limit."""
        return (self.now - cut_ns) / SECOND


def populate(store: CheckpointStore, pad: Callable[[int], int] = lambda n: 0) -> Populated:
    """Put ``ORDER``, then finish done, failed and cancelled, in that order."""
    puts = []
    for n, workflow_id in enumerate(ORDER):
        puts.append(store.put(workflow_id, {"n": n, "pad": "x" * pad(n)}, step=n))
        _after(puts[-1].created_ns)
    finished_ns = {}
    for workflow_id, status in FINISHED_AS.items():
        finished_ns[workflow_id] = store.set_status(workflow_id, status).updated_ns
        _after(finished_ns[workflow_id])
    assert {w: [p.seq for p in puts if p.workflow_id == w] for w in EVERYTHING} == EVERYTHING
    return Populated(tuple(puts), finished_ns)


def seqs(store: CheckpointStore) -> dict[str, list[int]]:
    return {w.workflow_id: [c.seq for c in store.history(w.workflow_id)] for w in store.workflows()}


def contents(store: CheckpointStore) -> dict[str, list[CheckpointInfo]]:
    return {w.workflow_id: list(store.history(w.workflow_id)) for w in store.workflows()}


def check_gc(
    store: CheckpointStore, report: GcReport, before: dict[str, list[CheckpointInfo]]
) -> dict[str, list[int]]:
    """Check what holds after every collection; return the seqs left of each workflow."""
    after = contents(store)
    statuses = {info.workflow_id: info.status for info in store.workflows()}
    kept = {(c.workflow_id, c.seq) for infos in after.values() for c in infos}
    earlier = {(c.workflow_id, c.seq): c for infos in before.values() for c in infos}
    assert kept <= earlier.keys()
    vanished = {key: info for key, info in earlier.items() if key not in kept}
    assert not report.dry_run
    assert {(d.workflow_id, d.seq) for d in report.deletions} == vanished.keys()
    for d in report.deletions:
        assert (d.created_ns, d.bytes) == (
            vanished[d.workflow_id, d.seq].created_ns,
            vanished[d.workflow_id, d.seq].size,
        )
    assert report.checkpoints_removed == len(report.deletions)
    assert report.by_rule == dict(Counter(d.rule for d in report.deletions))
    assert sum(report.by_rule.values()) == report.checkpoints_removed
    assert report.record_bytes_removed == sum(d.bytes for d in report.deletions)
    assert report.workflows_removed == len(before.keys() - after.keys())
    assert report.transactions >= (1 if report.deletions else 0)
    stats = store.stats()
    assert report.live_bytes_after <= report.live_bytes_before
    assert report.live_bytes_after == stats.live_bytes
    assert stats.checkpoints == len(kept)
    assert stats.record_bytes == sum(c.size for infos in after.values() for c in infos)
    for info in store.workflows():
        infos = after[info.workflow_id]
        assert info.checkpoints == len(infos)
        assert info.bytes == sum(c.size for c in infos)
        assert info.head_seq == (infos[-1].seq if infos else 0)
    for workflow_id, infos in before.items():
        if workflow_id not in after:
            assert workflow_id not in statuses
            continue
        if statuses[workflow_id] not in FINISHED and infos:
            latest = store.latest(workflow_id)
            assert latest is not None
            assert latest.seq == infos[-1].seq
    assert store.verify().ok
    return {workflow_id: [c.seq for c in infos] for workflow_id, infos in after.items()}


def file_hash(store_path: Path) -> str:
    return hashlib.sha256((store_path / "data.mdb").read_bytes()).hexdigest()


def damage_record(store_path: Path, workflow_id: str, seq: int) -> None:
    """Flip a byte of a record's body in place, through LMDB: its digest no longer holds."""
    key = checkpoint_key(encode_workflow_id(workflow_id), seq)
    record = raw_get(store_path, b"ckpt", key)
    assert record is not None
    damaged = bytearray(record)
    damaged[HEADER_SIZE + 2] ^= 0x20
    raw_put(store_path, b"ckpt", key, bytes(damaged))


@pytest.fixture(params=["lmdb", "memory"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CheckpointStore]:
    """A fresh store on disk or in memory."""
    path = tmp_path / "store" if request.param == "lmdb" else MEMORY_PATH
    with CheckpointStore(path) as opened:
        yield opened


# -- each bound, alone and together -----------------------------------------------------------


@dataclass(frozen=True)
class Case:
    policy: Callable[[Populated], RetentionPolicy]
    kept: dict[str, list[int]]
    by_rule: dict[str, int]


CASES = {
    "keep_last": Case(
        lambda p: RetentionPolicy(keep_last=2),
        {"run-a": [4, 5], "run-b": [2, 3], "done": [3, 4], "failed": [1, 2], "cancelled": [1]},
        {"keep_last": 6},
    ),
    "keep_last-not-finished": Case(
        lambda p: RetentionPolicy(keep_last=1, keep_finished=False),
        {"run-a": [5], "run-b": [3], "done": [4], "failed": [2], "cancelled": [1]},
        {"keep_last": 10},
    ),
    "max_age": Case(
        lambda p: RetentionPolicy(max_age=p.age(p.cut(8))),
        {"run-a": [4, 5], "run-b": [3], "done": [4], "failed": [2], "cancelled": [1]},
        {"max_age": 9},
    ),
    "max_age-all-old": Case(
        lambda p: RetentionPolicy(max_age=p.age(p.cut(14))),
        {"run-a": [5], "run-b": [3], "done": [4], "failed": [2], "cancelled": [1]},
        {"max_age": 10},
    ),
    "max_age-all-old-not-finished": Case(
        lambda p: RetentionPolicy(max_age=p.age(p.cut(14)), keep_finished=False),
        # A finished workflow whose checkpoints all go keeps its entry: only finished_max_age
        # removes a workflow whole.
        {"run-a": [5], "run-b": [3], "done": [], "failed": [], "cancelled": []},
        {"max_age": 13},
    ),
    "max_age-not-finished": Case(
        lambda p: RetentionPolicy(max_age=p.age(p.cut(9)), keep_finished=False),
        {"run-a": [4, 5], "run-b": [3], "done": [4], "failed": [], "cancelled": [1]},
        {"max_age": 10},
    ),
    "finished_max_age": Case(
        lambda p: RetentionPolicy(finished_max_age=p.age(p.finished_cut("failed"))),
        {"run-a": [1, 2, 3, 4, 5], "run-b": [1, 2, 3], "cancelled": [1]},
        {"finished_max_age": 6},
    ),
    "finished_max_age-all": Case(
        lambda p: RetentionPolicy(finished_max_age=p.age(p.finished_cut("cancelled"))),
        {"run-a": [1, 2, 3, 4, 5], "run-b": [1, 2, 3]},
        {"finished_max_age": 7},
    ),
    "all-three": Case(
        lambda p: RetentionPolicy(
            keep_last=3,
            max_age=p.age(p.cut(6)),
            finished_max_age=p.age(p.finished_cut("done")),
        ),
        {"run-a": [4, 5], "run-b": [2, 3], "failed": [2], "cancelled": [1]},
        {"finished_max_age": 4, "keep_last": 2, "max_age": 3},
    ),
    "keep_last-and-max_age-not-finished": Case(
        lambda p: RetentionPolicy(keep_last=2, max_age=p.age(p.cut(11)), keep_finished=False),
        {"run-a": [5], "run-b": [3], "done": [], "failed": [], "cancelled": [1]},
        {"keep_last": 6, "max_age": 6},
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_bound_deletes_exactly_what_it_says(any_store: CheckpointStore, case: Case) -> None:
    populated = populate(any_store)
    before = contents(any_store)
    report = collect(any_store._backend, case.policy(populated), now_ns=populated.now)
    assert check_gc(any_store, report, before) == case.kept
    times = [d.created_ns for d in report.deletions]
    assert times == sorted(times)
    assert report.by_rule == case.by_rule
    assert report.over_cap == 0
    # A second collection at the same time finds nothing more to delete.
    again = collect(any_store._backend, case.policy(populated), now_ns=populated.now)
    assert (again.checkpoints_removed, again.workflows_removed) == (0, 0)
    assert seqs(any_store) == case.kept


def test_store_gc_takes_the_stores_own_policy(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "store", retention=RetentionPolicy(keep_last=2)) as store:
        populate(store)
        before = contents(store)
        assert check_gc(store, store.gc(), before) == CASES["keep_last"].kept
        # A policy given to gc replaces the store's.
        before = contents(store)
        report = store.gc(RetentionPolicy(keep_last=1, keep_finished=False))
        assert check_gc(store, report, before) == {
            "run-a": [5], "run-b": [3], "done": [4], "failed": [2], "cancelled": [1],
        }  # fmt: skip


def test_a_workflow_removed_whole_starts_again_at_seq_1(any_store: CheckpointStore) -> None:
    populated = populate(any_store)
    policy = RetentionPolicy(finished_max_age=populated.age(populated.finished_cut("cancelled")))
    report = collect(any_store._backend, policy, now_ns=populated.now)
    assert report.workflows_removed == 3
    assert sorted(w.workflow_id for w in any_store.workflows()) == ["run-a", "run-b"]
    with pytest.raises(WorkflowNotFoundError):
        any_store.workflow("done")
    info = any_store.put("done", {"again": True})
    assert info.seq == 1
    workflow = any_store.workflow("done")
    assert (workflow.status, workflow.head_seq, workflow.last_seq) == ("running", 1, 1)
    assert (workflow.checkpoints, workflow.bytes) == (1, info.size)
    assert any_store.verify().ok


def test_checkpoints_deleted_by_gc_keep_their_seqs_used(any_store: CheckpointStore) -> None:
    populate(any_store)
    any_store.gc(RetentionPolicy(keep_last=1))
    assert any_store.workflow("run-a").last_seq == 5
    assert any_store.put("run-a", {}).seq == 6


# -- max_size ---------------------------------------------------------------------------------


def _size_order(
    before: dict[str, list[CheckpointInfo]], statuses: Mapping[str, str]
) -> list[tuple[str, int]]:
    """The checkpoints max_size may delete, in the order it takes them (keep_finished)."""
    deletable = [c for infos in before.values() for c in infos[:-1]]
    deletable.sort(key=lambda c: (statuses[c.workflow_id] not in FINISHED, c.created_ns))
    return [(c.workflow_id, c.seq) for c in deletable]


@pytest.mark.parametrize("fraction", [0.8, 0.6])
def test_max_size_deletes_finished_workflows_first_then_the_oldest(
    any_store: CheckpointStore, fraction: float
) -> None:
    # Records of several pages each: deleting one frees pages, as the cap counts them.
    populate(any_store, pad=lambda n: 5000 + 300 * n)
    before = contents(any_store)
    statuses = {info.workflow_id: info.status for info in any_store.workflows()}
    cap = int(any_store.stats().live_bytes * fraction)
    report = any_store.gc(RetentionPolicy(max_size=cap))
    check_gc(any_store, report, before)
    assert any_store.stats().live_bytes <= cap
    assert report.over_cap == 0
    assert set(report.by_rule) == {"max_size"}
    order = _size_order(before, statuses)
    deleted = {(d.workflow_id, d.seq) for d in report.deletions}
    assert deleted == set(order[: len(deleted)])
    assert 0 < len(deleted) < len(order)


def test_max_size_with_keep_last(any_store: CheckpointStore) -> None:
    populate(any_store, pad=lambda n: 5000 + 300 * n)
    before = contents(any_store)
    cap = int(any_store.stats().live_bytes * 0.6)
    report = any_store.gc(RetentionPolicy(keep_last=3, max_size=cap))
    left = check_gc(any_store, report, before)
    assert any_store.stats().live_bytes <= cap
    by_keep_last = {(d.workflow_id, d.seq) for d in report.deletions if d.rule == "keep_last"}
    assert by_keep_last == {("run-a", 1), ("run-a", 2), ("done", 1)}
    assert report.by_rule["max_size"] > 0
    assert all(len(left[w]) <= 3 for w in left)


def test_max_size_gives_up_on_what_the_rules_keep(store_path: Path) -> None:
    with CheckpointStore(store_path) as store:
        with store.batch() as batch:
            for seq in range(3):
                for n in range(12):
                    batch.put(f"wf-{n:02d}", {"seq": seq, "pad": "x" * 8000})
            batch.put("done", {"pad": "x" * 8000})
            batch.put("done", {"pad": "x" * 8000})
        store.set_status("done", "completed")
        before = contents(store)
        cap = 64 * 1024  # the twelve heads alone take more
        report = store.gc(RetentionPolicy(max_size=cap))
        left = check_gc(store, report, before)
        assert left == {f"wf-{n:02d}": [3] for n in range(12)} | {"done": [2]}
        live = store.stats().live_bytes
        assert live > cap
        assert report.over_cap == live - cap > 0
        assert report.by_rule == {"max_size": 25}
        for n in range(12):
            latest = store.latest(f"wf-{n:02d}")
            assert latest is not None
            assert latest.seq == 3
        # Without keep_finished the finished workflow's final checkpoint goes too; its entry
        # stays (only finished_max_age removes a workflow whole).
        before = contents(store)
        report = store.gc(RetentionPolicy(max_size=cap, keep_finished=False))
        expected = {f"wf-{n:02d}": [3] for n in range(12)} | {"done": []}
        assert check_gc(store, report, before) == expected
        assert (report.checkpoints_removed, report.workflows_removed) == (1, 0)
        assert store.workflow("done").status == "completed"
        assert report.over_cap == store.stats().live_bytes - cap > 0


def test_max_size_is_met_while_deletable_checkpoints_remain(store_path: Path) -> None:
    # Many small records of many workflows, written round-robin: deleting the oldest takes a
    # few records off each leaf page, which frees no page until the pages run nearly empty.
    with CheckpointStore(store_path) as store:
        with store.batch() as batch:
            for seq in range(20):
                for n in range(40):
                    batch.put(f"wf-{n:02d}", {"seq": seq, "pad": "x" * 60})
        before = contents(store)
        stats = store.stats()
        cap = stats.live_bytes - stats.page_size
        report = store.gc(RetentionPolicy(max_size=cap))
        check_gc(store, report, before)
        deletable = sum(info.checkpoints - 1 for info in store.workflows())
        live = store.stats().live_bytes
        assert live <= cap, (
            f"over_cap={report.over_cap} with {deletable} deletable checkpoints left, after "
            f"{report.checkpoints_removed} deleted in {report.transactions} transactions"
        )
        assert report.over_cap == 0


def _over_several_rounds(store: CheckpointStore) -> RetentionPolicy:
    """A max_size policy whose collection needs a second plan to get under the cap."""
    populate(store, pad=lambda n: 5000 + 300 * n)
    return RetentionPolicy(max_size=int(store.stats().live_bytes * 0.8))


def test_a_collection_over_several_rounds_reports_its_deletions_oldest_first(
    store_path: Path,
) -> None:
    with CheckpointStore(store_path) as store:
        report = store.gc(_over_several_rounds(store))
        assert report.over_cap == 0
        # GcReport.deletions: "every checkpoint deleted, oldest first".
        rows = [(d.created_ns, d.workflow_id, d.seq) for d in report.deletions]
        assert rows == sorted(rows)


def test_a_dry_run_at_max_size_lists_the_first_plan_of_the_collection(store_path: Path) -> None:
    with CheckpointStore(store_path) as store:
        policy = _over_several_rounds(store)
        planned = store.gc(policy, dry_run=True)
        report = store.gc(policy)
        assert report.over_cap == 0
        # The dry run lists the first plan; the collection, still above the cap after it (the
        # records freed shared pages with kept ones), planned again: it deleted more, by size.
        first = {(d.workflow_id, d.seq, d.rule) for d in planned.deletions}
        done = {(d.workflow_id, d.seq, d.rule) for d in report.deletions}
        assert first < done
        assert {rule for _, _, rule in done - first} == {"max_size"}


# -- a damaged head ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        RetentionPolicy(keep_last=1),
        RetentionPolicy(max_age=1.0),
        RetentionPolicy(max_size=1),
        RetentionPolicy(keep_last=1, max_age=1.0, max_size=1, keep_finished=False),
    ],
    ids=["keep_last", "max_age", "max_size", "all"],
)
@pytest.mark.parametrize("damaged", [(5,), (4, 5)], ids=["head", "two-newest"])
def test_a_damaged_head_keeps_the_newest_intact_checkpoint(
    store_path: Path, policy: RetentionPolicy, damaged: tuple[int, ...]
) -> None:
    with CheckpointStore(store_path) as store:
        for n in range(5):
            store.put("wf", {"n": n, "pad": "x" * 3000})
    for seq in damaged:
        damage_record(store_path, "wf", seq)
    intact = min(damaged) - 1
    with CheckpointStore(store_path) as store:
        report = collect(store._backend, policy, now_ns=time.time_ns() + 3600 * SECOND)
        # Every checkpoint goes but the newest intact one, which resume loads, and the damaged
        # head: gc never deletes a running workflow's head.
        assert sorted(d.seq for d in report.deletions) == sorted({1, 2, 3, 4} - {intact})
        latest = store.latest("wf")
        assert latest is not None
        assert (latest.seq, latest.state["n"], latest.damaged_newer) == (intact, intact - 1, (5,))
        info = store.workflow("wf")
        assert (info.head_seq, info.checkpoints) == (5, 2)
        verified = store.verify()
        assert [(d.workflow_id, d.seq) for d in verified.damaged] == [("wf", 5)]
        assert verified.index_problems == ()
        again = collect(store._backend, policy, now_ns=time.time_ns() + 3600 * SECOND)
        assert again.checkpoints_removed == 0
        assert store.latest("wf") == latest


# -- dry runs ---------------------------------------------------------------------------------

DRY_POLICY = RetentionPolicy(keep_last=1, keep_finished=False)
DRY_DELETES = {"run-a": [1, 2, 3, 4], "run-b": [1, 2], "done": [1, 2, 3], "failed": [1]}


def _planned(report: GcReport) -> dict[str, list[int]]:
    planned: dict[str, list[int]] = {}
    for d in report.deletions:
        planned.setdefault(d.workflow_id, []).append(d.seq)
    return {workflow_id: sorted(found) for workflow_id, found in planned.items()}


def test_a_dry_run_writes_nothing(store_path: Path) -> None:
    with CheckpointStore(store_path) as store:
        populate(store)
        before = contents(store)
        live = store.stats().live_bytes
    digest = file_hash(store_path)
    with CheckpointStore(store_path, readonly=True) as store:
        report = store.gc(DRY_POLICY, dry_run=True)
        with pytest.raises(ReadOnlyStoreError):
            store.gc(DRY_POLICY)
    assert file_hash(store_path) == digest
    assert report.dry_run
    assert _planned(report) == DRY_DELETES
    assert report.by_rule == {"keep_last": 10}
    assert (report.checkpoints_removed, report.workflows_removed, report.transactions) == (10, 0, 0)
    sizes = {(c.workflow_id, c.seq): c.size for infos in before.values() for c in infos}
    assert all(d.bytes == sizes[d.workflow_id, d.seq] for d in report.deletions)
    assert report.record_bytes_removed == sum(d.bytes for d in report.deletions)
    assert report.live_bytes_before == live
    assert 0 < report.live_bytes_after < live
    with CheckpointStore(store_path) as store:
        assert store.gc(DRY_POLICY, dry_run=True).deletions == report.deletions
        assert contents(store) == before
    assert file_hash(store_path) == digest
    with CheckpointStore(store_path) as store:
        real = store.gc(DRY_POLICY)
        check_gc(store, real, before)
    assert [(d.workflow_id, d.seq, d.rule) for d in real.deletions] == [
        (d.workflow_id, d.seq, d.rule) for d in report.deletions
    ]


def test_a_dry_run_in_memory_changes_nothing() -> None:
    with CheckpointStore(MEMORY_PATH) as store:
        populate(store)
        before = contents(store)
        stats = store.stats()
        report = store.gc(DRY_POLICY, dry_run=True)
        assert _planned(report) == DRY_DELETES
        assert contents(store) == before
        assert store.stats() == stats


# -- the checks each transaction makes against its plan ---------------------------------------
# ``collect`` plans from a snapshot read in short transactions, then deletes in others; the
# store may change in between. These tests run the two halves apart (``_read_snapshot`` and
# ``retention.plan``, then ``_execute``) to change the store at that moment.


@dataclass
class Planned:
    plan: retention.GcPlan
    keys: dict[str, bytes]


def plan_gc(store: CheckpointStore, policy: RetentionPolicy, now_ns: int) -> Planned:
    snapshot = collector._read_snapshot(store._backend)
    return Planned(retention.plan(snapshot.workflows, policy, now_ns=now_ns), snapshot.keys)


def execute(store: CheckpointStore, planned: Planned) -> collector._Tally:
    tally = collector._Tally()
    collector._execute(store._backend, planned.plan, planned.keys, tally, None, None)
    return tally


def test_a_put_after_the_plan_keeps_the_new_head_and_the_old_one(
    any_store: CheckpointStore,
) -> None:
    for n in range(3):
        any_store.put("wf", {"n": n})
    planned = plan_gc(any_store, RetentionPolicy(max_age=1.0), time.time_ns() + 3600 * SECOND)
    assert [d.seq for d in planned.plan.deletions] == [1, 2]
    any_store.put("wf", {"n": 3})
    tally = execute(any_store, planned)
    assert [d.seq for d in tally.deletions] == [1, 2]
    assert seqs(any_store) == {"wf": [3, 4]}
    latest = any_store.latest("wf")
    assert latest is not None
    assert latest.seq == 4
    assert any_store.verify().ok


def test_a_planned_checkpoint_that_became_the_head_is_kept(any_store: CheckpointStore) -> None:
    for n in range(3):
        any_store.put("wf", {"n": n})
    planned = plan_gc(any_store, RetentionPolicy(keep_last=1), time.time_ns())
    assert [d.seq for d in planned.plan.deletions] == [1, 2]
    any_store.delete("wf", seq=3)  # seq 2 is now the running workflow's head
    tally = execute(any_store, planned)
    assert [d.seq for d in tally.deletions] == [1]
    assert seqs(any_store) == {"wf": [2]}
    assert any_store.workflow("wf").head_seq == 2
    assert any_store.verify().ok


def test_a_workflow_resumed_after_the_plan_is_not_removed(any_store: CheckpointStore) -> None:
    any_store.put("done", {"n": 1})
    any_store.put("done", {"n": 2})
    any_store.set_status("done", "completed")
    policy = RetentionPolicy(finished_max_age=1.0)
    planned = plan_gc(any_store, policy, time.time_ns() + 3600 * SECOND)
    assert planned.plan.workflows_removed == ("done",)
    any_store.set_status("done", "running")
    tally = execute(any_store, planned)
    assert (tally.deletions, tally.workflows_removed) == ([], 0)
    assert seqs(any_store) == {"done": [1, 2]}
    assert any_store.verify().ok


def test_a_finished_workflow_resumed_after_the_plan_keeps_its_head(
    any_store: CheckpointStore,
) -> None:
    any_store.put("done", {"n": 1})
    any_store.put("done", {"n": 2})
    any_store.set_status("done", "completed")
    policy = RetentionPolicy(max_age=1.0, keep_finished=False)
    planned = plan_gc(any_store, policy, time.time_ns() + 3600 * SECOND)
    assert [d.seq for d in planned.plan.deletions] == [1, 2]
    assert planned.plan.workflows_removed == ()
    any_store.set_status("done", "running")
    tally = execute(any_store, planned)
    assert ([d.seq for d in tally.deletions], tally.workflows_removed) == ([1], 0)
    assert seqs(any_store) == {"done": [2]}
    assert any_store.verify().ok


def test_a_workflow_made_again_after_the_plan_keeps_its_new_checkpoints(
    any_store: CheckpointStore,
) -> None:
    for n in range(3):
        any_store.put("wf", {"n": n})
    any_store.put("done", {"n": 0})
    any_store.set_status("done", "completed")
    policy = RetentionPolicy(keep_last=1, finished_max_age=1.0)
    planned = plan_gc(any_store, policy, time.time_ns() + 3600 * SECOND)
    assert [(d.workflow_id, d.seq) for d in planned.plan.deletions] == [
        ("wf", 1), ("wf", 2), ("done", 1),
    ]  # fmt: skip
    for workflow_id in ("wf", "done"):
        any_store.delete(workflow_id)
    remade = [any_store.put("wf", {"again": n}) for n in range(3)]
    remade.append(any_store.put("done", {"again": 0}))
    any_store.set_status("done", "completed")
    tally = execute(any_store, planned)
    assert (tally.deletions, tally.workflows_removed) == ([], 0)
    assert contents(any_store) == {
        "done": [remade[3]],
        "wf": remade[:3],
    }
    assert any_store.verify().ok


@pytest.mark.parametrize("stopped", [False, True], ids=["whole", "stopped"])
def test_a_collection_deletes_in_batches_and_stops_between_them(
    store_path: Path, stopped: bool
) -> None:
    total = 2 * collector.BATCH + 43
    with CheckpointStore(store_path) as store:
        with store.batch() as batch:
            for n in range(total + 1):
                batch.put("wf", {"n": n})
        stop = threading.Event()
        calls: list[tuple[int, int]] = []

        def progress(done: int, planned: int) -> None:
            calls.append((done, planned))
            if stopped:
                stop.set()

        policy = RetentionPolicy(keep_last=1)
        report = collect(store._backend, policy, progress=progress, stop=stop)
        if stopped:
            assert calls == [(collector.BATCH, total)]
            assert (report.checkpoints_removed, report.transactions) == (collector.BATCH, 1)
            assert seqs(store) == {"wf": list(range(collector.BATCH + 1, total + 2))}
        else:
            assert calls == [(collector.BATCH, total), (2 * collector.BATCH, total), (total, total)]
            assert (report.checkpoints_removed, report.transactions) == (total, 3)
            assert seqs(store) == {"wf": [total + 1]}
        assert store.verify().ok


# -- automatic collection ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["lmdb", "memory"])
def test_puts_past_the_cap_start_collections(tmp_path: Path, backend: str) -> None:
    cap = 512 * 1024
    path = tmp_path / "store" if backend == "lmdb" else MEMORY_PATH
    with CheckpointStore(
        path, durability="async", retention=RetentionPolicy(max_size=cap)
    ) as store:
        auto = store._auto_gc
        assert auto is not None
        state = {"pad": "x" * (10 * 1024)}
        assert len(state["pad"]) >= auto.check_bytes  # every put looks at the live size
        for n in range(200):
            store.put(f"wf-{n % 4}", state)
        written = 200 * len(state["pad"])
        assert written > 3 * cap
        # Puts made while a collection ran may have come after its last plan: one more put,
        # once none runs, looks at the live size again.
        auto.wait()
        store.put("wf-0", state)
        auto.wait()
        assert auto.last_error is None
        assert auto.last_report is not None
        assert set(auto.last_report.by_rule) <= {"max_size"}
        assert store.stats().live_bytes <= cap
        assert store.stats().checkpoints < 200
        for n in range(4):
            assert store.workflow(f"wf-{n}").last_seq == store.workflow(f"wf-{n}").head_seq
        assert store.verify().ok


def test_a_readonly_store_collects_nothing_by_itself(store_path: Path) -> None:
    policy = RetentionPolicy(keep_last=1)
    with CheckpointStore(store_path) as store:
        populate(store)
        before = contents(store)
    with CheckpointStore(store_path, readonly=True, retention=policy) as store:
        assert store._auto_gc is None
        assert store.retention == policy
        with pytest.raises(ReadOnlyStoreError):
            store.gc()
        assert store.gc(dry_run=True).checkpoints_removed == 10
        assert contents(store) == before


def test_the_config_gives_the_store_its_policy(tmp_path: Path) -> None:
    cap = 256 * 1024
    assert Config(path=str(tmp_path / "store")).retention_policy() is None
    config = Config(path=str(tmp_path / "store"), retention_max_size=cap, retention_keep_last=50)
    policy = RetentionPolicy(max_size=cap, keep_last=50)
    assert config.retention_policy() == policy
    with config.open_store() as store:
        assert store.retention == policy
        auto = store._auto_gc
        assert auto is not None
        for n in range(60):
            store.put("wf", {"pad": "x" * 8192, "n": n})
        auto.wait()
        store.put("wf", {"pad": "x" * 8192, "n": 60})
        auto.wait()
        assert auto.last_report is not None
        assert store.stats().live_bytes <= cap
        assert store.workflow("wf").head_seq == 61
    with config.open_store(readonly=True) as store:
        assert store._auto_gc is None
    in_memory = Config(enabled=False, retention_max_size=cap)
    with in_memory.open_store() as store:
        assert store.path == MEMORY_PATH
        assert store.retention == RetentionPolicy(max_size=cap)
        assert store._auto_gc is not None


# -- the file under a cap ---------------------------------------------------------------------


def _cycles_at_the_cap(store_path: Path, sizes: tuple[int, ...], cycles: int) -> dict[int, int]:
    """Write 40 checkpoints then collect at a 1 MiB cap, ``cycles`` times; the file's size after
    each cycle. Every collection meets the cap."""
    cap = 1 << 20
    file_bytes: dict[int, int] = {}
    with CheckpointStore(store_path) as store:
        policy = RetentionPolicy(max_size=cap)
        for cycle in range(1, cycles + 1):
            with store.batch() as batch:
                for n in range(40):
                    batch.put(f"wf-{n % 8}", {"pad": b"\x01" * sizes[n % len(sizes)]})
            report = store.gc(policy)
            stats = store.stats()
            assert stats.live_bytes <= cap
            assert report.over_cap == 0
            file_bytes[cycle] = stats.file_bytes
    # Well past the cap: each cycle writes ~40 KiB and more, the last 30 together over 1 MiB.
    assert file_bytes[cycles] > cap
    return file_bytes


def test_the_file_stops_growing_once_collections_hold_the_cap(store_path: Path) -> None:
    # Records that fit a leaf page: LMDB reuses freed pages one by one, and the file is flat.
    file_bytes = _cycles_at_the_cap(store_path, (300, 1024, 1500), cycles=50)
    assert {file_bytes[cycle] for cycle in range(20, 51)} == {file_bytes[20]}, file_bytes


def test_large_records_grow_the_file_only_by_rare_runs(store_path: Path) -> None:
    # A 20 KiB record needs a run of contiguous free pages; when the free list has none long
    # enough, LMDB takes the run from the end of the file (measured: none or one such run from
    # cycle 20 to 50, the file at about 1.55 times the cap).
    file_bytes = _cycles_at_the_cap(store_path, (20 * 1024, 1024, 1024, 1024), cycles=50)
    run = 6 * 4096  # the pages a 20 KiB record takes on overflow pages
    assert file_bytes[50] - file_bytes[20] <= 2 * run, file_bytes
    assert file_bytes[50] < 1.75 * (1 << 20)


def test_gc_after_another_process_grew_the_map(store_path: Path) -> None:
    """Regression: the live size was read in a transaction that did not adopt a map grown by
    another process, and gc, its first call, failed with MDB_MAP_RESIZED."""
    grow = (
        "import sys\nfrom lmdbstate import CheckpointStore\n"
        "with CheckpointStore(sys.argv[1], map_size=1 << 20) as store:\n"
        "    for n in range(60):\n        store.put('other', {'pad': 'x' * 100_000})\n"
    )
    with CheckpointStore(store_path, map_size=1 << 20) as store:
        store.put("wf", {"n": 1})
        store.put("wf", {"n": 2})
        subprocess.run([sys.executable, "-c", grow, str(store_path)], check=True)
        report = store.gc(RetentionPolicy(keep_last=1))
        assert report.checkpoints_removed == 59 + 1  # all but the newest of "other" and "wf"
        assert [info.seq for info in store.history("wf")] == [2]


# -- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    # No setting from the developer's environment: only the config files the tests write.
    return CliRunner(env={"COLUMNS": "120", "LMDBSTATE_DEBUG": None} | dict.fromkeys(ENV_VARIABLES))


@pytest.fixture
def closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A closed, populated store; the working directory is an empty one (no config file)."""
    path = tmp_path / "store"
    with CheckpointStore(path) as store:
        populate(store)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return path


def test_cli_dry_run_json(runner: CliRunner, closed: Path) -> None:
    with CheckpointStore(closed, readonly=True) as store:
        before = contents(store)
    digest = file_hash(closed)
    result = invoke_on(runner, closed, "gc", "--keep-last", "1", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert file_hash(closed) == digest
    assert report["dry_run"] is True
    assert (report["checkpoints_removed"], report["transactions"]) == (10, 0)
    assert report["by_rule"] == {"keep_last": 10}
    sizes = {(c.workflow_id, c.seq): c for infos in before.values() for c in infos}
    planned = {(d["workflow_id"], d["seq"]) for d in report["deletions"]}
    assert planned == {(w, s) for w, found in DRY_DELETES.items() for s in found}
    for d in report["deletions"]:
        info = sizes[d["workflow_id"], d["seq"]]
        assert d == {
            "workflow_id": info.workflow_id, "seq": info.seq, "created_ns": info.created_ns,
            "bytes": info.size, "rule": "keep_last",
        }  # fmt: skip
    assert report["record_bytes_removed"] == sum(d["bytes"] for d in report["deletions"])


@pytest.mark.parametrize(
    "args",
    [
        ["--max-size", "3XB"],
        ["--max-age", "5y"],
        ["--max-size", "0"],
        ["--finished-max-age", "0s"],
        ["--max-age", "1.5s"],
        [],
    ],
    ids=["size-unit", "age-unit", "zero-size", "zero-age", "fraction", "no-bounds"],
)
def test_cli_bad_bounds_are_usage_errors(runner: CliRunner, closed: Path, args: list[str]) -> None:
    digest = file_hash(closed)
    result = invoke_on(runner, closed, "gc", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: ")
    assert [line for line in lines if line.startswith("error")] == lines[:1]
    assert file_hash(closed) == digest


def test_cli_gc_deletes(runner: CliRunner, closed: Path) -> None:
    with CheckpointStore(closed, readonly=True) as store:
        before = contents(store)
    result = invoke_on(runner, closed, "gc", "--keep-last", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("deleted 6 checkpoints (6 by keep_last; ")
    with CheckpointStore(closed, readonly=True) as store:
        assert seqs(store) == CASES["keep_last"].kept
        assert store.verify().ok
    result = invoke_on(runner, closed, "gc", "--keep-last", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["dry_run"], report["checkpoints_removed"]) == (False, 4)
    assert report["transactions"] >= 1
    with CheckpointStore(closed, readonly=True) as store:
        assert seqs(store) == {w: found[-1:] for w, found in EVERYTHING.items()}
        assert sum(len(infos) for infos in before.values()) - 10 == store.stats().checkpoints


def test_cli_gc_and_stats_take_the_configured_policy(runner: CliRunner, closed: Path) -> None:
    result = invoke_on(runner, closed, "stats", "--json")
    assert json.loads(result.stdout)["gc_preview"] is None
    Path("lmdbstate.toml").write_text('retention_max_size = "20KiB"\nretention_keep_last = 2\n')
    policy = RetentionPolicy(max_size=20 * 1024, keep_last=2)
    with CheckpointStore(closed, readonly=True) as store:
        expected = store.gc(policy, dry_run=True)
    assert expected.checkpoints_removed > 0
    result = invoke_on(runner, closed, "stats", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["gc_preview"] == {
        "checkpoints": expected.checkpoints_removed,
        "workflows": expected.workflows_removed,
        "record_bytes": expected.record_bytes_removed,
        "live_bytes_after": expected.live_bytes_after,
        "over_cap": expected.over_cap,
    }
    result = invoke_on(runner, closed, "gc", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["by_rule"]["keep_last"] == 6
    # The dry run plans once; a collection still above the cap plans again (see
    # test_a_dry_run_at_max_size_lists_the_first_plan_of_the_collection).
    deleted = {(d["workflow_id"], d["seq"]) for d in report["deletions"]}
    assert {(d.workflow_id, d.seq) for d in expected.deletions} <= deleted
