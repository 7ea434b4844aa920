"""Store-format and state-schema migrations (issue 7), on a format-0 store of the tests' own.

The store-format half writes a format-0 store with raw py-lmdb (``tests/format0.py``) and
proves the upgrade path on it: automatic upgrade on a writable open (after a backup), the
explicit ``migrate_store`` with ``check`` and ``backup_dir``, refusals (``auto_migrate=False``,
a future format, a missing step), read-only opens reading an in-memory upgraded copy, a
migration that raises, SIGKILL in the middle of an upgrade (of one step and of a two-step
chain), and two processes upgrading at once. The state-schema half covers ``state_migration``
chains on read, ``migrate_states`` and the reference executor's resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import lmdbstate
import lmdbstate.migrations
import lmdbstate.store
import lmdbstate.store_upgrades
from lmdbstate import (
    CheckpointStore,
    DefinitionChangedError,
    MigrationError,
    ReadOnlyStoreError,
    SequenceConflictError,
    StateUpgrade,
    StepFailedError,
    UnsupportedFormatError,
    migrate_store,
    records,
    state_migration,
    store_migration,
)
from lmdbstate.cli import app
from lmdbstate.keys import checkpoint_key, encode_workflow_id
from lmdbstate.kv import META, WriteTxn
from lmdbstate.migrations import FORMAT, HISTORY, LAST_WRITER, default_backup_dir
from lmdbstate.runner import Step, Workflow, resume, run

from .format0 import (
    MIGRATION_DOC,
    Workflow0,
    dump,
    meta_value,
    register_format0_migration,
    register_format2_to_3,
    sample_workflows,
    set_meta_format,
    sizeable_workflows,
    write_store,
)
from .test_fixtures import assert_same

ROOT = Path(__file__).resolve().parent.parent
BACKUP_NAME = re.compile(r"^store\.format0-backup-(\d{8}T\d{6}Z)-\d+(?:\.\d+)?$")
SUBPROCESS_TIMEOUT = 60


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh migration registries for each test (they are module-global): lmdbstate's own."""
    monkeypatch.setattr(
        lmdbstate.migrations, "_store_upgrades", {1: lmdbstate.store_upgrades.split_long_lists}
    )
    monkeypatch.setattr(lmdbstate.migrations, "_state_upgrades", {})


@pytest.fixture
def format0(store_path: Path) -> Path:
    """A format-0 store holding ``sample_workflows()``."""
    write_store(store_path, sample_workflows())
    return store_path


def data_sha(path: Path) -> str:
    return hashlib.sha256((path / "data.mdb").read_bytes()).hexdigest()


def backups_beside(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(f"{path.name}.format"))


def assert_still_format0(before: dict[str, dict[bytes, bytes]], path: Path) -> None:
    """The store holds exactly what the format-0 writer wrote.

    A writable open creates the tables format 2 has (an empty ``age`` and ``chunk``) before it
    looks at the format: that alone is allowed.
    """
    after = dump(path)
    assert meta_value(after, FORMAT) == 0
    for table in ("meta", "ckpt", "wf"):
        assert after[table] == before[table], f"table {table} changed"
    for table in ("age", "chunk"):
        assert after.get(table, {}) == {}
    assert set(after) <= {"meta", "ckpt", "wf", "age", "chunk"}


def assert_content(store: CheckpointStore, workflows: list[Workflow0]) -> None:
    """Every workflow and checkpoint of ``workflows`` reads back as the format-0 writer wrote it."""
    assert [info.workflow_id for info in store.workflows()] == sorted(
        workflow.workflow_id for workflow in workflows
    )
    for workflow in workflows:
        info = store.workflow(workflow.workflow_id)
        assert info.status == workflow.status
        assert info.last_seq == workflow.last_seq
        assert info.updated_ns == workflow.updated_ns
        assert info.checkpoints == len(workflow.records)
        assert info.head_seq == (workflow.records[-1].seq if workflow.records else 0)
        seqs = [ckpt.seq for ckpt in store.history(workflow.workflow_id)]
        assert seqs == [record.seq for record in workflow.records]
        for record in workflow.records:
            ckpt = store.get(workflow.workflow_id, record.seq)
            where = f"{workflow.workflow_id}#{record.seq}"
            assert_same(ckpt.state, record.state, f"{where} state")
            assert_same(dict(ckpt.meta), record.meta, f"{where} meta")
            assert ckpt.step == record.step
            assert ckpt.schema == record.schema
            assert ckpt.created_ns == record.saved_ns
        latest = store.latest(workflow.workflow_id)
        if workflow.records:
            assert latest is not None
            assert latest.seq == workflow.records[-1].seq
            assert info.schema == workflow.records[-1].schema
        else:
            assert latest is None


def assert_upgraded_meta(tables: dict[str, dict[bytes, bytes]]) -> list[dict[str, Any]]:
    """``meta`` says format 2, with history entries 0 -> 1 and 1 -> 2; returns the history."""
    assert meta_value(tables, FORMAT) == 2
    history: list[dict[str, Any]] = meta_value(tables, HISTORY)
    assert [(entry["from"], entry["to"]) for entry in history] == [(0, 1), (1, 2)]
    assert all(entry["by"] == lmdbstate.__version__ for entry in history)
    assert all(type(entry["at_ns"]) is int for entry in history)
    return history


def spawn(script: str, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
    # cwd is the repository so that the child imports ``tests.format0``.
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- automatic upgrade on a writable open -----------------------------------------------------


def test_writable_open_backs_up_then_upgrades_format0(format0: Path) -> None:
    register_format0_migration()
    before = dump(format0)
    started = time.gmtime(time.time() - 1)
    with CheckpointStore(format0) as store:
        finished = time.gmtime(time.time() + 1)
        # The backup lies beside the store, named as default_backup_dir names it.
        (backup,) = backups_beside(format0)
        match = BACKUP_NAME.match(backup.name)
        assert match is not None, backup.name
        stamp = match.group(1)
        fmt = "%Y%m%dT%H%M%SZ"
        assert time.strftime(fmt, started) <= stamp <= time.strftime(fmt, finished)
        assert default_backup_dir(str(format0), 0).startswith(str(format0) + ".format0-backup-")
        # ... and was taken first: it still holds the format-0 store, exactly.
        saved = dump(backup)
        assert meta_value(saved, FORMAT) == 0
        for table in ("meta", "ckpt", "wf"):
            assert saved[table] == before[table]
        assert not saved.get("age")

        assert_content(store, sample_workflows())
        report = store.verify(deep=True)
        assert report.ok, report
        assert report.records == sum(len(w.records) for w in sample_workflows())
        stats = store.stats()
        assert stats.format_version == 2
        saves = [r.saved_ns for w in sample_workflows() for r in w.records]
        assert (stats.oldest_ns, stats.newest_ns) == (min(saves), max(saves))
        # Puts continue after the highest seq given out, deleted ones included.
        assert store.put("etl-1", {"rows": 99}).seq == 5
        assert store.put("report", {"x": 1}).seq == 4
        assert store.put("empty", {}).seq == 3
        assert store.put("new", {}).seq == 1
        assert store.verify().ok
    tables = dump(format0)
    assert_upgraded_meta(tables)
    assert meta_value(tables, LAST_WRITER) == lmdbstate.__version__
    assert meta_value(tables, b"created_by") == "0.0.9-format0"  # the creator is kept
    for record in tables["ckpt"].values():
        assert record[:3] == b"LS\x01"


def test_upgraded_store_reopens_without_upgrading_again(format0: Path) -> None:
    register_format0_migration()
    CheckpointStore(format0).close()
    history = dump(format0)[META]
    sha = data_sha(format0)
    with CheckpointStore(format0) as store:
        assert_content(store, sample_workflows())
    assert dump(format0)[META] == history
    assert data_sha(format0) == sha  # last_writer is already this version: nothing written
    assert len(backups_beside(format0)) == 1


# -- migrate_store ----------------------------------------------------------------------------


def test_migrate_store_check_reports_steps_and_writes_nothing(format0: Path) -> None:
    function = register_format0_migration()
    sha = data_sha(format0)
    listing = sorted(os.listdir(format0.parent))
    report = migrate_store(format0, check=True)
    assert report.check
    assert (report.from_version, report.to_version) == (0, 2)
    step, ours = report.steps
    assert (step.from_version, step.to_version) == (0, 1)
    assert (ours.from_version, ours.to_version, ours.name) == (1, 2, "split_long_lists")
    assert step.name == function.__name__
    assert step.description == MIGRATION_DOC
    assert report.backup_path is None
    assert report.path == str(format0.resolve())
    assert data_sha(format0) == sha
    assert sorted(os.listdir(format0.parent)) == listing  # no backup either


def test_migrate_store_upgrades_with_backup_where_asked_and_then_is_a_no_op(
    format0: Path, tmp_path: Path
) -> None:
    register_format0_migration()
    before = dump(format0)
    target = tmp_path / "elsewhere" / "copy"
    report = migrate_store(format0, backup_dir=target)
    assert not report.check
    assert (report.from_version, report.to_version) == (0, 2)
    assert [(s.from_version, s.to_version) for s in report.steps] == [(0, 1), (1, 2)]
    assert report.backup_path == str(target)
    saved = dump(target)
    assert meta_value(saved, FORMAT) == 0
    assert saved["ckpt"] == before["ckpt"]
    assert backups_beside(format0) == []  # none beside the store when one was asked elsewhere
    assert_upgraded_meta(dump(format0))
    with CheckpointStore(format0, readonly=True) as store:
        assert_content(store, sample_workflows())
        assert store.verify(deep=True).ok

    sha = data_sha(format0)
    again = migrate_store(format0, backup_dir=tmp_path / "unused")
    assert (again.from_version, again.to_version, again.steps) == (2, 2, ())
    assert again.backup_path is None
    assert not (tmp_path / "unused").exists()
    assert data_sha(format0) == sha
    assert len(meta_value(dump(format0), HISTORY)) == 2


# -- refusals ---------------------------------------------------------------------------------


def test_auto_migrate_false_refuses_and_names_the_command(format0: Path) -> None:
    register_format0_migration()
    before = dump(format0)
    with pytest.raises(UnsupportedFormatError) as caught:
        CheckpointStore(format0, auto_migrate=False)
    assert "lmdbstate migrate" in caught.value.hint
    message = str(caught.value).replace(str(format0.resolve()), "STORE")
    assert "format 0" in message
    assert re.search(r"\b2\b", message), message
    assert_still_format0(before, format0)
    assert backups_beside(format0) == []


@pytest.mark.parametrize("case", ["auto_migrate=False", "missing step", "future format"])
def test_refused_writable_open_leaves_the_file_untouched(format0: Path, case: str) -> None:
    """A store refused on open is not written at all, not even with the tables format 1 adds.

    Fails today: the writable open creates every table the store lacks (``env._open_dbs`` with
    ``create=True``; here the format-0 store has no ``age``) and commits that before the format
    is looked at, so a refused store, even one of a newer format, has been changed.
    """
    if case == "future format":
        set_meta_format(format0, 99)
    if case != "missing step":
        register_format0_migration()
    sha = data_sha(format0)
    with pytest.raises(UnsupportedFormatError):
        CheckpointStore(format0, auto_migrate=case != "auto_migrate=False")
    assert data_sha(format0) == sha


def test_readonly_open_reads_an_upgraded_copy_and_never_writes(format0: Path) -> None:
    register_format0_migration()
    sha = data_sha(format0)
    listing = sorted(os.listdir(format0.parent))
    with CheckpointStore(format0, readonly=True) as store:
        assert store.readonly
        assert_content(store, sample_workflows())
        assert store.verify(deep=True).ok
        stats = store.stats()
        assert stats.checkpoints == sum(len(w.records) for w in sample_workflows())
        assert stats.oldest_ns == min(r.saved_ns for w in sample_workflows() for r in w.records)
        with pytest.raises(ReadOnlyStoreError):
            store.put("etl-1", {})
    assert data_sha(format0) == sha
    assert sorted(os.listdir(format0.parent)) == listing
    assert meta_value(dump(format0), FORMAT) == 0


@pytest.mark.parametrize("readonly", [False, True])
def test_future_format_is_refused(store_path: Path, readonly: bool) -> None:
    with CheckpointStore(store_path) as store:
        store.put("wf", {"a": 1})
    set_meta_format(store_path, 99)
    sha = data_sha(store_path)
    with pytest.raises(UnsupportedFormatError) as caught:
        CheckpointStore(store_path, readonly=readonly)
    message = str(caught.value).replace(str(store_path.resolve()), "STORE")
    assert "format 99" in message
    assert re.search(r"\b2\b", message), message
    assert data_sha(store_path) == sha
    with pytest.raises(UnsupportedFormatError):
        migrate_store(store_path, check=True)


@pytest.mark.parametrize("readonly", [False, True])
def test_missing_step_is_refused_naming_it(format0: Path, readonly: bool) -> None:
    before = dump(format0)
    with pytest.raises(UnsupportedFormatError) as caught:
        CheckpointStore(format0, readonly=readonly)
    assert "no migration from format 0 to 1" in str(caught.value)
    assert_still_format0(before, format0)
    assert backups_beside(format0) == []
    with pytest.raises(UnsupportedFormatError, match="from format 0 to 1"):
        migrate_store(format0, check=True)


def test_a_raising_migration_leaves_the_store_at_format0(format0: Path) -> None:
    """The migration fails after rewriting half the records: none of them stays rewritten."""

    def fail_halfway(index: int, total: int) -> None:
        if index == total // 2:
            raise RuntimeError("disk of the mind is full")

    register_format0_migration(on_record=fail_halfway)
    before = dump(format0)
    with pytest.raises(MigrationError) as caught:
        CheckpointStore(format0)
    error = caught.value
    assert (error.from_version, error.to_version) == (0, 1)
    assert (error.workflow_id, error.seq) == (None, None)
    assert isinstance(error.__cause__, RuntimeError)
    assert "disk of the mind is full" in str(error)
    assert "format0_to_1" in str(error)
    assert_still_format0(before, format0)
    assert meta_value(dump(format0), HISTORY) is None
    # The read-only path runs the same step in memory and fails the same way.
    with pytest.raises(MigrationError):
        CheckpointStore(format0, readonly=True)
    # Nothing changed, so no backup is left behind: a service retrying the open in a loop
    # would otherwise pile up one full copy per attempt (review finding).
    with pytest.raises(MigrationError):
        CheckpointStore(format0)
    assert backups_beside(format0) == []


def test_a_second_registration_is_refused() -> None:
    register_format0_migration()
    with pytest.raises(lmdbstate.ConfigError):

        @store_migration(from_version=0)
        def again(txn: WriteTxn) -> None:
            """Never registered."""


# -- interrupted upgrades ---------------------------------------------------------------------

# Opens the store for writing with the format-0 migration registered, pausing (printing
# "paused") halfway through the records of the step given as argv[3]; with argv[2] == "2" the
# store format is moved to 3 and the step 2 -> 3 of ``register_format2_to_3`` added.
UPGRADER = textwrap.dedent(
    """
    import sys, time
    import lmdbstate.migrations, lmdbstate.store
    from lmdbstate import CheckpointStore
    from tests.format0 import register_format0_migration
    from tests.format0 import register_format2_to_3

    path, target, paused_step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    def pause(index, total):
        if index == total // 2:
            print("paused", flush=True)
            time.sleep(120)

    register_format0_migration(on_record=pause if paused_step == 0 else None)
    if target == 3:
        lmdbstate.migrations.STORE_FORMAT = 3
        lmdbstate.store.STORE_FORMAT = 3
        register_format2_to_3(on_record=pause if paused_step == 2 else None)
    CheckpointStore(path).close()
    print("done", flush=True)
    """
)


def kill_when_paused(store_path: Path, target: int, paused_step: int) -> None:
    proc = spawn(UPGRADER, str(store_path), str(target), str(paused_step))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != "paused\n":
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the upgrader did not pause: {line!r}\n{err}")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture
def sizeable(store_path: Path) -> list[Workflow0]:
    """A format-0 store of 3,000 checkpoints of ~1 KiB (some 4 MiB)."""
    workflows = sizeable_workflows(20, 150, 1000)
    write_store(store_path, workflows)
    return workflows


def test_sigkill_mid_upgrade_leaves_format0_and_a_rerun_upgrades(
    store_path: Path, sizeable: list[Workflow0], tmp_path: Path
) -> None:
    before = dump(store_path)
    kill_when_paused(store_path, target=2, paused_step=0)
    assert_still_format0(before, store_path)
    # The killed process had taken its backup before it began.
    (backup,) = backups_beside(store_path)
    assert dump(backup)["ckpt"] == before["ckpt"]

    register_format0_migration()
    report = migrate_store(store_path, backup_dir=tmp_path / "rerun-backup")
    assert [(s.from_version, s.to_version) for s in report.steps] == [(0, 1), (1, 2)]
    assert_upgraded_meta(dump(store_path))
    with CheckpointStore(store_path) as store:
        assert store.verify(deep=True).ok
        assert_content(store, sizeable)


def test_writable_open_right_after_an_interrupted_upgrade(format0: Path) -> None:
    """An interrupted upgrade restarts cleanly on the next open, whenever it comes.

    A killed upgrade leaves its backup beside the store, named after the second it began in.
    Fails today: the next automatic upgrade within that second picks the same name, and
    ``copy_to`` refuses the non-empty directory (StoreError "already exists"), so the store
    cannot be opened until the clock moves on. The directories below are what such a killed
    upgrade leaves, for every second the open below may fall in.
    """
    register_format0_migration()
    now = time.time()
    for offset in range(-1, 6):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now + offset))
        left = format0.parent / f"{format0.name}.format0-backup-{stamp}"
        left.mkdir()
        (left / "data.mdb").write_bytes((format0 / "data.mdb").read_bytes())
    with CheckpointStore(format0) as store:
        assert_content(store, sample_workflows())


def test_sigkill_in_the_second_step_of_a_chain_resumes_at_that_step(
    store_path: Path, sizeable: list[Workflow0], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = dump(store_path)
    kill_when_paused(store_path, target=3, paused_step=2)
    # Steps 0 -> 1 and 1 -> 2 committed with their bookkeeping; step 2 -> 3 left nothing.
    tables = dump(store_path)
    assert_upgraded_meta(tables)
    assert b"format3_seen" not in tables["meta"]
    assert b"format3_records" not in tables["meta"]
    assert tables["ckpt"].keys() == before["ckpt"].keys()
    assert all(record[:3] == b"LS\x01" for record in tables["ckpt"].values())

    monkeypatch.setattr(lmdbstate.migrations, "STORE_FORMAT", 3)
    monkeypatch.setattr(lmdbstate.store, "STORE_FORMAT", 3)
    first: list[int] = []
    register_format0_migration(on_record=lambda index, total: first.append(index))
    third = register_format2_to_3()
    report = migrate_store(store_path, backup_dir=tmp_path / "rerun-backup")
    assert (report.from_version, report.to_version) == (2, 3)
    assert [(s.from_version, s.to_version) for s in report.steps] == [(2, 3)]
    assert first == []  # the steps that committed are not run again
    assert third == [1]
    tables = dump(store_path)
    assert meta_value(tables, FORMAT) == 3
    history = meta_value(tables, HISTORY)
    assert [(entry["from"], entry["to"]) for entry in history] == [(0, 1), (1, 2), (2, 3)]
    assert meta_value(tables, b"format3_records") == len(before["ckpt"])
    with CheckpointStore(store_path) as store:
        assert store.verify(deep=True).ok
        assert_content(store, sizeable)


# Waits for a line on stdin, then opens the store for writing (argv[2] == "open") or upgrades
# it with migrate_store and its own backup directory (argv[2] == "migrate"), and prints the
# format it found, how many checkpoints it reads and whether verify passes. The migration
# holds its write transaction open for half a second, so that the other process reads the
# format while the upgrade is under way.
OPENER = textwrap.dedent(
    """
    import sys, time
    from lmdbstate import CheckpointStore, migrate_store
    from tests.format0 import register_format0_migration

    path, how = sys.argv[1], sys.argv[2]
    register_format0_migration(on_record=lambda index, total: index or time.sleep(0.5))
    print("ready", flush=True)
    sys.stdin.readline()
    found = "-"
    if how == "migrate":
        found = migrate_store(path, backup_dir=sys.argv[3]).from_version
    with CheckpointStore(path) as store:
        count = sum(1 for info in store.workflows() for _ in store.history(info.workflow_id))
        print(found, count, store.verify().ok, flush=True)
    """
)


def upgrade_concurrently(store_path: Path, how: str) -> list[list[str]]:
    """Two processes upgrade the store at the same instant; returns what each printed."""
    procs = [
        spawn(OPENER, str(store_path), how, str(store_path.parent / f"backup-{n}"), stdin=True)
        for n in range(2)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
    # Early in a second, so both begin in the same one, as two workers started together would.
    while time.time() % 1 > 0.3:
        time.sleep(0.01)
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outcomes = [proc.communicate(timeout=SUBPROCESS_TIMEOUT) for proc in procs]
    for proc, (_, err) in zip(procs, outcomes, strict=True):
        assert proc.returncode == 0, err
    return [out.split() for out, _ in outcomes]


def test_two_processes_migrating_at_once_upgrade_once(
    store_path: Path, sizeable: list[Workflow0]
) -> None:
    """Both read format 0 and run the upgrade; the step is applied once, recorded once."""
    total = str(sum(len(w.records) for w in sizeable))
    assert upgrade_concurrently(store_path, "migrate") == [["0", total, "True"]] * 2
    assert_upgraded_meta(dump(store_path))
    with CheckpointStore(store_path, readonly=True) as store:
        assert_content(store, sizeable)


def test_two_processes_opening_at_once_both_succeed(
    store_path: Path, sizeable: list[Workflow0]
) -> None:
    """Two workers opening an old store together both get it, upgraded once.

    Fails today: both take the automatic backup under the same name (``default_backup_dir``
    has a one-second stamp), and the second ``copy_to`` refuses the directory the first made
    (StoreError "already exists"): that process's open fails.
    """
    total = str(sum(len(w.records) for w in sizeable))
    assert upgrade_concurrently(store_path, "open") == [["-", total, "True"]] * 2
    assert_upgraded_meta(dump(store_path))


# -- state schemas ----------------------------------------------------------------------------


def test_state_chain_applies_on_read_and_leaves_the_record(store_path: Path) -> None:
    calls: list[tuple[int, Any]] = []

    @state_migration("orders", from_version=1)
    def one_to_two(state: dict[str, Any]) -> dict[str, Any]:
        calls.append((1, dict(state)))
        return {"items": state["list"], "v": 2}

    @state_migration("orders", from_version=2)
    def two_to_three(state: dict[str, Any]) -> dict[str, Any]:
        calls.append((2, dict(state)))
        return {**state, "v": 3, "count": len(state["items"])}

    assert lmdbstate.migrations.current_schema("orders") == 3
    with CheckpointStore(store_path) as store:
        first = store.put("orders", {"list": ["a", "b"]}, step="s1", schema=1, meta={"m": 1})
        second = store.put("orders", {"items": ["c"], "v": 2}, step="s2", schema=2)
        stored = store.get("orders", 1)

        upgraded = store.get("orders", 1, migrate=True)
        assert (upgraded.state, upgraded.schema) == ({"items": ["a", "b"], "v": 3, "count": 2}, 3)
        assert [version for version, _ in calls] == [1, 2]
        assert calls[1][1] == {"items": ["a", "b"], "v": 2}  # each step sees the one before
        assert (upgraded.step, dict(upgraded.meta), upgraded.digest) == (
            "s1",
            {"m": 1},
            first.digest,
        )

        calls.clear()
        latest = store.latest("orders", migrate=True)
        assert latest is not None
        assert (latest.seq, latest.schema, latest.state) == (
            2,
            3,
            {"items": ["c"], "v": 3, "count": 1},
        )
        assert [version for version, _ in calls] == [2]
        assert latest.digest == second.digest

        # The stored records are as they were.
        assert store.get("orders", 1) == stored
        plain = store.latest("orders")
        assert plain is not None
        assert (plain.state, plain.schema, plain.digest) == (
            {"items": ["c"], "v": 2},
            2,
            second.digest,
        )
        assert [info.schema for info in store.history("orders")] == [1, 2]
        assert store.workflow("orders").last_seq == 2
        # A state already current comes back untouched; so does a name without migrations.
        store.put("orders", {"items": [], "v": 3, "count": 0}, schema=3)
        calls.clear()
        current = store.latest("orders", migrate=True)
        assert current is not None
        assert current.schema == 3
        assert calls == []
        store.put("other", {"x": 1}, schema=1)
        other = store.latest("other", migrate=True)
        assert other is not None
        assert (other.state, other.schema) == ({"x": 1}, 1)


def test_a_gap_in_the_chain_names_workflow_seq_and_versions(store_path: Path) -> None:
    state_migration("jobs", from_version=1)(lambda state: state)
    state_migration("jobs", from_version=3)(lambda state: state)
    with CheckpointStore(store_path) as store:
        store.put("jobs", {"a": 1}, schema=1)
        store.put("jobs", {"a": 2}, schema=2)
        reads: list[Callable[[], object]] = [
            lambda: store.latest("jobs", migrate=True),
            lambda: store.get("jobs", 2, migrate=True),
            lambda: store.get("jobs", 1, migrate=True),  # 1 -> 2 runs, then the gap
        ]
        for read in reads:
            with pytest.raises(MigrationError) as caught:
                read()
            error = caught.value
            assert error.workflow_id == "jobs"
            assert (error.from_version, error.to_version) == (2, 3)
            message = str(error)
            assert "'jobs'" in message
            assert "from 2 to 3" in message
            assert f"checkpoint {error.seq}" in message
        assert caught.value.seq == 1
        with pytest.raises(MigrationError):
            store.migrate_states()
        assert store.workflow("jobs").last_seq == 2
        # Reads without migrate are unaffected.
        latest = store.latest("jobs")
        assert latest is not None
        assert latest.state == {"a": 2}


def test_a_raising_state_migration_is_a_migration_error_with_its_cause(store_path: Path) -> None:
    @state_migration("pay", from_version=1)
    def broken(state: dict[str, Any]) -> dict[str, Any]:
        return {"amount": state["missing"]}

    with CheckpointStore(store_path) as store:
        store.put("pay", {"amount": 1})
        store.put("pay", {"amount": 2})
        with pytest.raises(MigrationError) as caught:
            store.latest("pay", migrate=True)
    error = caught.value
    assert isinstance(error.__cause__, KeyError)
    assert (error.workflow_id, error.seq, error.from_version, error.to_version) == ("pay", 2, 1, 2)
    message = str(error)
    assert "checkpoint 2 of workflow 'pay'" in message
    assert "from 1 to 2" in message
    assert "KeyError" in message


def test_workflow_name_is_the_recorded_workflow_name_else_the_id(store_path: Path) -> None:
    workflow = Workflow("etl", [Step("only", lambda state: {**state, "done": True})])
    with CheckpointStore(store_path) as store:
        run(store, workflow, "etl-2024-06-01", {"n": 1})
        store.put("plain-id", {"n": 1})
        assert store.workflow_name("etl-2024-06-01") == "etl"
        assert store.workflow_name("plain-id") == "plain-id"
        # Migrations registered under the id of a run workflow do not apply to it.
        state_migration("etl-2024-06-01", from_version=1)(lambda state: {"wrong": True})
        state_migration("etl", from_version=1)(lambda state: {**state, "v": 2})
        state_migration("plain-id", from_version=1)(lambda state: {**state, "v": 2})
        ran = store.latest("etl-2024-06-01", migrate=True)
        assert ran is not None
        assert ran.state == {"n": 1, "done": True, "v": 2}
        plain = store.latest("plain-id", migrate=True)
        assert plain is not None
        assert plain.state == {"n": 1, "v": 2}
        with pytest.raises(lmdbstate.WorkflowNotFoundError):
            store.workflow_name("nobody")


def _three_workflows(store: CheckpointStore) -> None:
    state_migration("a-old", from_version=1)(lambda state: {"value": state["v"] * 10})
    state_migration("b-current", from_version=1)(lambda state: {"value": state["v"]})
    store.put("a-old", {"v": 1}, step="one", meta={"trigger": "start"})
    store.put("a-old", {"v": 2}, step="two", meta={"trigger": "step"})
    store.put("b-current", {"value": 5}, step="x", schema=2)
    store.put("c-unregistered", {"v": 3})


def test_migrate_states_check_reports_without_writing(store_path: Path) -> None:
    with CheckpointStore(store_path) as store:
        _three_workflows(store)
        before = {info.workflow_id: info for info in store.workflows()}
        report = store.migrate_states(check=True)
        assert report.check
        assert report.upgraded == (StateUpgrade("a-old", "a-old", 2, 1, 2, None),)
        assert report.current == 2
        assert {info.workflow_id: info for info in store.workflows()} == before


def test_migrate_states_writes_new_checkpoints_and_keeps_history(store_path: Path) -> None:
    with CheckpointStore(store_path) as store:
        _three_workflows(store)
        old = list(store.history("a-old"))
        report = store.migrate_states()
        assert not report.check
        assert report.upgraded == (StateUpgrade("a-old", "a-old", 2, 1, 2, 3),)
        assert report.current == 2
        assert list(store.history("a-old"))[:2] == old  # same seqs, schemas and digests
        new = store.get("a-old", 3)
        assert (new.state, new.step, new.schema) == ({"value": 20}, "two", 2)
        assert dict(new.meta) == {"trigger": "step", "migrated_from": {"seq": 2, "schema": 1}}
        assert store.workflow("a-old").schema == 2
        assert store.workflow("b-current").last_seq == 1
        assert store.workflow("c-unregistered").last_seq == 1
        assert store.verify().ok
        again = store.migrate_states()
        assert (again.upgraded, again.current) == ((), 3)
        # One workflow only.
        store.put("a-old", {"v": 7}, step="three")
        only = store.migrate_states("a-old")
        assert [(u.workflow_id, u.seq, u.new_seq) for u in only.upgraded] == [("a-old", 4, 5)]
        assert only.current == 0


def test_migrate_states_writes_nothing_when_one_workflow_fails(store_path: Path) -> None:
    state_migration("a-fine", from_version=1)(lambda state: {"ok": True})

    @state_migration("b-broken", from_version=1)
    def broken(state: object) -> object:
        raise ValueError("cannot")

    with CheckpointStore(store_path) as store:
        store.put("a-fine", {"v": 1})
        store.put("b-broken", {"v": 1})
        with pytest.raises(MigrationError) as caught:
            store.migrate_states()
        assert caught.value.workflow_id == "b-broken"
        assert isinstance(caught.value.__cause__, ValueError)
        for workflow_id in ("a-fine", "b-broken"):
            assert store.workflow(workflow_id).last_seq == 1
        with (
            CheckpointStore(store_path, readonly=True) as reader,
            pytest.raises(ReadOnlyStoreError),
        ):
            reader.migrate_states()


def test_migrate_states_conflicts_with_a_workflow_advanced_meanwhile(store_path: Path) -> None:
    with CheckpointStore(store_path) as store:

        @state_migration("b-busy", from_version=1)
        def advance_meanwhile(state: dict[str, Any]) -> dict[str, Any]:
            # Another writer's checkpoint lands between the read and the write-back.
            store.put("b-busy", {"v": 99}, step="meanwhile")
            return {"v2": state["v"]}

        state_migration("a-idle", from_version=1)(lambda state: {"v2": state["v"]})
        store.put("a-idle", {"v": 1})
        store.put("b-busy", {"v": 1})
        with pytest.raises(SequenceConflictError):
            store.migrate_states()
        assert store.workflow("a-idle").last_seq == 1  # written with it in one transaction
        # The function ran twice (every upgrade is checked before the first write, then made
        # again to be written), hence two checkpoints "meanwhile".
        busy = store.latest("b-busy")
        assert busy is not None
        assert (busy.seq, busy.state) == (3, {"v": 99})


def test_migrate_states_writes_many_workflows_in_bounded_transactions(store_path: Path) -> None:
    count = 150  # three transactions of at most 64 workflows
    with CheckpointStore(store_path) as store:
        for n in range(count):
            state_migration(f"wf-{n:03d}", from_version=1)(lambda state: {"v2": state["v"]})
            store.put(f"wf-{n:03d}", {"v": n})
        before = store._backend._shared.env.info()["last_txnid"]  # type: ignore[attr-defined]
        report = store.migrate_states()
        after = store._backend._shared.env.info()["last_txnid"]  # type: ignore[attr-defined]
        assert after - before == 3
        assert [u.new_seq for u in report.upgraded] == [2] * count
        assert (report.current, len(report.upgraded)) == (0, count)
        for n in (0, 64, 149):
            latest = store.latest(f"wf-{n:03d}")
            assert latest is not None
            assert (latest.seq, latest.state, latest.schema) == (2, {"v2": n}, 2)


# -- the reference executor -------------------------------------------------------------------


def test_resume_with_a_newer_schema_runs_the_steps_on_the_upgraded_state(
    store_path: Path,
) -> None:
    seen: list[Any] = []

    def extract_v1(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "rows": 3}

    def transform_fails(state: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("transform crashed")

    def extract_v2(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "count": 3}

    def transform_v2(state: dict[str, Any]) -> dict[str, Any]:
        seen.append(state)
        return {**state, "count": state["count"] * 2}

    v1 = Workflow("etl", [Step("extract", extract_v1), Step("transform", transform_fails)])
    v2 = Workflow("etl", [Step("extract", extract_v2), Step("transform", transform_v2)], schema=2)
    with CheckpointStore(store_path) as store:
        with pytest.raises(StepFailedError):
            run(store, v1, "etl-run", {"source": "db"})
        assert [info.schema for info in store.history("etl-run")] == [1, 1]

        with pytest.raises(DefinitionChangedError, match="schema 1"):
            resume(store, "etl-run", workflow=v2)
        assert store.workflow("etl-run").status == "failed"
        assert store.workflow("etl-run").last_seq == 2

        @state_migration("etl", from_version=1)
        def rows_to_count(state: dict[str, Any]) -> dict[str, Any]:
            upgraded = {key: value for key, value in state.items() if key != "rows"}
            return {**upgraded, "count": state["rows"]}

        result = resume(store, "etl-run", workflow=v2)
        assert result.resumed_from == 2
        assert result.steps_run == ("transform",)
        assert seen == [{"source": "db", "count": 3}]
        assert result.state == {"source": "db", "count": 6}
        assert store.workflow("etl-run").status == "completed"
        assert [info.schema for info in store.history("etl-run")] == [1, 1, 2]
        # The old checkpoints keep their schema-1 states.
        assert store.get("etl-run", 2).state == {"source": "db", "rows": 3}


def test_upgraded_records_are_what_format1_writes_for_the_same_fields(format0: Path) -> None:
    """Byte for byte (same digest, same size): the body is re-encoded in format 1's order."""
    register_format0_migration()
    with CheckpointStore(format0) as store:
        for workflow in sample_workflows():
            workflow_key = encode_workflow_id(workflow.workflow_id)
            for record in workflow.records:
                ckpt = store.get(workflow.workflow_id, record.seq)
                body = records.encode_body(record.state, record.step, record.schema, record.meta)
                built = records.build(
                    checkpoint_key(workflow_key, record.seq), body, record.saved_ns
                )
                assert ckpt.digest == int.from_bytes(built[4:12], "little")
                assert ckpt.size == len(built)


# -- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "120", "LMDBSTATE_DEBUG": None, "LMDBSTATE_PATH": None})


def registering_module(directory: Path, body: str) -> str:
    """A module in ``directory`` (the working directory) whose import runs ``body``; its name.

    Each name is new: a module imported once is not imported again, and the registries are
    fresh for every test.
    """
    name = f"registers_{uuid.uuid4().hex}"
    (directory / f"{name}.py").write_text(textwrap.dedent(body))
    return name


def test_cli_migrate_upgrades_the_store_format(
    runner: CliRunner, format0: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    module = registering_module(
        tmp_path, "from tests.format0 import register_format0_migration\n"
        "register_format0_migration()\n",
    )  # fmt: skip
    before = data_sha(format0)
    result = runner.invoke(app, ["--store", str(format0), "migrate", "--check", "--import", module])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"would upgrade store {format0} from format 0 to 2\n")
    assert "0 -> 1: format0_to_1" in result.stdout
    assert data_sha(format0) == before
    backup = tmp_path / "copy"
    result = runner.invoke(
        app, ["--store", str(format0), "migrate", "--backup", str(backup), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["from_version"], report["to_version"], report["check"]) == (0, 2, False)
    assert report["backup_path"] == str(backup)
    assert [step["name"] for step in report["steps"]] == ["format0_to_1", "split_long_lists"]
    assert meta_value(dump(backup), FORMAT) == 0
    assert meta_value(dump(format0), FORMAT) == 2
    result = runner.invoke(app, ["--store", str(format0), "migrate"])
    assert result.stdout == f"store {format0} has format 2: nothing to upgrade\n"


def test_cli_migrate_refuses_what_it_cannot_upgrade(runner: CliRunner, format0: Path) -> None:
    before = data_sha(format0)
    result = runner.invoke(app, ["--store", str(format0), "migrate"])  # nothing registered
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0].startswith(
        f"error: store {format0} has format 0 and no migration from format 0 to 1"
    )
    assert data_sha(format0) == before


def test_cli_migrate_states(
    runner: CliRunner, store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with CheckpointStore(store_path) as store:
        store.put("etl-1", {"rows": 3})
        store.put("other", {"rows": 4})
    module = registering_module(
        tmp_path, """
        from lmdbstate import state_migration

        @state_migration("etl-1", from_version=1)
        def rows_to_count(state):
            return {"count": state["rows"]}
        """,
    )  # fmt: skip
    args = ["--store", str(store_path), "migrate", "--states", "--import", module]
    result = runner.invoke(app, [*args, "--check", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["current"], report["check"]) == (1, True)
    assert report["upgraded"] == [
        {
            "workflow_id": "etl-1", "name": "etl-1", "seq": 1, "from_schema": 1, "to_schema": 2,
            "new_seq": None,
        }
    ]  # fmt: skip
    with CheckpointStore(store_path, readonly=True) as store:
        assert store.workflow("etl-1").head_seq == 1
    result = runner.invoke(app, [*args, "etl-1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("wrote 1 upgraded states; 0 workflows already current\n")
    with CheckpointStore(store_path, readonly=True) as store:
        latest = store.latest("etl-1")
        assert latest is not None
        assert (latest.seq, latest.state, latest.schema) == (2, {"count": 3}, 2)
        assert latest.meta["migrated_from"] == {"seq": 1, "schema": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["wf"], "error: WORKFLOW_ID is only taken with --states"),
        (["--states", "--backup", "x"], "error: --backup is only taken without --states"),
        (["--import", "no_such_module_here"], "error: cannot import 'no_such_module_here'"),
    ],
)
def test_cli_migrate_usage_errors(
    runner: CliRunner, store_path: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["--store", str(store_path), "migrate", *args])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith(message)
    assert not store_path.exists()
