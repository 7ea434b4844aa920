"""The committed format-1 stores under ``tests/fixtures/format1/`` open and read as written.

``tests/fixtures/make_format1.py`` wrote them, and its ``fixtures()`` says what each holds; this
test reads the files through the current version (read-only and writable, on a copy: opening
needs a writable directory for ``lock.mdb``) and compares every workflow, checkpoint and state
with it, strictly by type. A later store format must keep passing it (DESIGN section 8).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import zoneinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import lmdbstate
from lmdbstate import CheckpointNotFoundError, CheckpointStore, WorkflowNotFoundError
from lmdbstate.keys import MAX_WORKFLOW_ID_BYTES
from lmdbstate.migrations import FORMAT, LAST_WRITER

from .fixtures.make_format1 import FORMAT1_DIR, MAX_FIXTURE_BYTES, StoreSpec, fixtures
from .format0 import dump, meta_value

SPECS = fixtures()


def assert_same(actual: Any, expected: Any, where: str) -> None:
    """``actual == expected``, and of the same types all the way down.

    Plain ``==`` would take a list for a tuple's equal, a set for a frozenset's, 1 for True,
    and two datetimes of one instant in different zones as equal.
    """
    assert type(actual) is type(expected), (
        f"{where}: a {type(actual).__name__}, expected a {type(expected).__name__}"
    )
    if isinstance(expected, dict):
        assert sorted(map(repr, actual)) == sorted(map(repr, expected)), f"{where}: keys differ"
        for key, value in expected.items():
            assert_same(actual[key], value, f"{where}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), f"{where}: length differs"
        for index, (item, wanted) in enumerate(zip(actual, expected, strict=True)):
            assert_same(item, wanted, f"{where}[{index}]")
    elif isinstance(expected, set | frozenset):
        assert actual == expected, where
        assert sorted(map(repr, actual)) == sorted(map(repr, expected)), where
    elif isinstance(expected, dt.datetime):
        assert actual.replace(tzinfo=None) == expected.replace(tzinfo=None), where
        assert actual.fold == expected.fold, where
        assert type(actual.tzinfo) is type(expected.tzinfo), where
        if isinstance(expected.tzinfo, zoneinfo.ZoneInfo):
            assert isinstance(actual.tzinfo, zoneinfo.ZoneInfo)
            assert actual.tzinfo.key == expected.tzinfo.key, where
        assert actual.utcoffset() == expected.utcoffset(), where
        assert actual.tzname() == expected.tzname(), where
    elif isinstance(expected, Decimal | float):
        assert repr(actual) == repr(expected), where  # Decimal("1.10") is not Decimal("1.1")
    else:
        assert actual == expected, where


@pytest.fixture(params=sorted(SPECS))
def fixture(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, StoreSpec]:
    """A copy of one committed fixture, and what it holds."""
    name: str = request.param
    copy = tmp_path / name
    shutil.copytree(FORMAT1_DIR / name, copy)
    return copy, SPECS[name]


def data_sha(path: Path) -> str:
    return hashlib.sha256((path / "data.mdb").read_bytes()).hexdigest()


def assert_holds(store: CheckpointStore, spec: StoreSpec) -> None:
    """The store holds exactly ``spec``'s workflows and checkpoints."""
    ids = [info.workflow_id for info in store.workflows()]
    assert ids == sorted(workflow.workflow_id for workflow in spec.workflows)
    present_total = 0
    created: list[int] = []
    for workflow in spec.workflows:
        workflow_id = workflow.workflow_id
        present = workflow.present
        present_total += len(present)
        created.extend(ckpt.created_ns for ckpt in present)
        info = store.workflow(workflow_id)
        assert info.status == workflow.status
        assert info.last_seq == workflow.checkpoints[-1].seq
        assert info.head_seq == (present[-1].seq if present else 0)
        assert info.checkpoints == len(present)
        assert info.schema == workflow.checkpoints[-1].schema
        assert_same(store.workflow_extras(workflow_id), workflow.extras, f"{workflow_id} extras")
        definition = workflow.extras.get("definition")
        assert store.workflow_name(workflow_id) == (
            definition["name"] if definition else workflow_id
        )
        history = list(store.history(workflow_id))
        assert [(c.seq, c.step, c.schema, c.created_ns) for c in history] == [
            (c.seq, c.step, c.schema, c.created_ns) for c in present
        ]
        for wanted in present:
            ckpt = store.get(workflow_id, wanted.seq)
            where = f"{workflow_id}#{wanted.seq}"
            assert_same(ckpt.state, wanted.state, f"{where} state")
            assert_same(dict(ckpt.meta), wanted.meta, f"{where} meta")
            assert_same(ckpt.step, wanted.step, f"{where} step")
            assert (ckpt.schema, ckpt.created_ns) == (wanted.schema, wanted.created_ns)
        for seq in workflow.deleted:
            with pytest.raises(CheckpointNotFoundError):
                store.get(workflow_id, seq)
        latest = store.latest(workflow_id, skip_damaged=False)
        if present:
            assert latest is not None
            assert latest.seq == present[-1].seq
            assert_same(latest.state, present[-1].state, f"{workflow_id} latest")
        else:
            assert latest is None
    for workflow in spec.removed:
        with pytest.raises(WorkflowNotFoundError):
            store.workflow(workflow.workflow_id)
    stats = store.stats()
    assert stats.workflows == len(spec.workflows)
    assert stats.checkpoints == present_total
    assert (stats.oldest_ns, stats.newest_ns) == (
        (min(created), max(created)) if created else (None, None)
    )
    report = store.verify(deep=True)
    assert report.ok, report
    assert (report.workflows, report.records) == (len(spec.workflows), present_total)


def test_the_committed_fixtures_are_the_generators(tmp_path: Path) -> None:
    """One directory per fixture, holding a compacted data.mdb alone, and small."""
    assert sorted(path.name for path in FORMAT1_DIR.iterdir()) == sorted(SPECS)
    for name in SPECS:
        files = sorted(path.name for path in (FORMAT1_DIR / name).iterdir())
        assert files == ["data.mdb"], f"{name}: {files}"
        assert (FORMAT1_DIR / name / "data.mdb").stat().st_size <= MAX_FIXTURE_BYTES


def test_fixture_reads_read_only_without_writing(fixture: tuple[Path, StoreSpec]) -> None:
    path, spec = fixture
    assert meta_value(dump(path), FORMAT) == 1  # what the directory's name says
    sha = data_sha(path)
    with CheckpointStore(path, readonly=True) as store:
        assert_holds(store, spec)
    assert data_sha(path) == sha


def test_fixture_opens_for_writing_and_takes_puts(fixture: tuple[Path, StoreSpec]) -> None:
    path, spec = fixture
    with CheckpointStore(path) as store:
        assert_holds(store, spec)
        for workflow in spec.workflows:
            if workflow.status == "running":
                info = store.put(workflow.workflow_id, {"after": "fixture"})
                assert info.seq == workflow.checkpoints[-1].seq + 1
        for workflow in spec.removed:
            assert store.put(workflow.workflow_id, {"again": True}).seq == 1
        assert store.verify(deep=True).ok
    assert meta_value(dump(path), LAST_WRITER) == lmdbstate.__version__


def test_a_workflow_id_of_the_documented_maximum_length_can_be_stored(store_path: Path) -> None:
    """Ids of up to ``keys.MAX_WORKFLOW_ID_BYTES`` UTF-8 bytes are valid (docs/format.md).

    Regression: the limit was 500, but the ``age`` key is created_ns (8 bytes) + the ``ckpt``
    key (id + 9 bytes), 517 bytes for a 500-byte id, past LMDB's 511-byte key limit: the put
    failed with a bare StoreError "MDB_BAD_VALSIZE".
    """
    workflow_id = "x" * MAX_WORKFLOW_ID_BYTES
    with CheckpointStore(store_path) as store:
        store.put(workflow_id, {"a": 1})
        latest = store.latest(workflow_id)
        assert latest is not None
        assert latest.state == {"a": 1}
