"""The legacy importer, on state directories these tests build in every layout the old system
left: timestamped saves with history copies and meta files, gzip files, the other writers'
files, torn files, checksum mismatches. The source directory is never changed."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lmdbstate import CheckpointStore, InterchangeError, import_legacy
from lmdbstate.interchange import legacy_checksum as checksum
from lmdbstate.memory import MEMORY_PATH

from .test_cli import error_lines, invoke, runner  # noqa: F401 - runner is a fixture

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 1, 12, 0, 0)  # the legacy system's clock: naive local time


def ns(moment: dt.datetime, zone: dt.tzinfo = UTC) -> int:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=zone)
    return int(aware.timestamp()) * 10**9 + aware.microsecond * 1000


def legacy_state(
    workflow_id: str, steps: list[str], status: str = "running", **variables: Any
) -> dict[str, Any]:
    """A state as the legacy manager's _state_to_dict writes it, steps done up to ``steps``."""
    return {
        "workflow_id": workflow_id,
        "started_at": "2026-01-01T11:59:00",
        "current_step": steps[-1] if steps else None,
        "completed_steps": steps[:-1],
        "skipped_steps": [],
        "artifacts": {"plan.md": {"name": "plan.md", "path": "docs/plan.md", "status": "pending"}},
        "variables": {
            **variables,
            "_checkpoint_metadata": {
                "current_step": steps[-1] if steps else None,
                "completed_steps": max(0, len(steps) - 1),
                "progress_percentage": 25.0 * len(steps),
                "trigger_step_id": steps[-1] if steps else None,
            },
        },
        "status": status,
        "error": None,
    }


def write_json(path: Path, data: Any, *, compress: bool = False) -> None:
    raw = json.dumps(data, indent=2).encode()
    path.write_bytes(gzip.compress(raw) if compress else raw)


class LegacyDir:
    """Builds a ``.tapps-agents/workflow-state`` directory as the legacy system wrote it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "history").mkdir(parents=True)

    def save(self, state: dict[str, Any], when: dt.datetime, *, compress: bool = False) -> str:
        """AdvancedStateManager.save_state: state file, meta file, history copy, last.json."""
        data = {**state, "_checksum": checksum(state)}
        workflow_id = state["workflow_id"]
        name = f"{workflow_id}-{when:%Y%m%d-%H%M%S}.json" + (".gz" if compress else "")
        write_json(self.root / name, data, compress=compress)
        write_json(self.root / "history" / name, data, compress=compress)
        self.point_at(workflow_id, name, when, compress=compress)
        return name

    def point_at(
        self, workflow_id: str, name: str, when: dt.datetime, *, compress: bool = False
    ) -> None:
        """Write the meta file naming ``name`` as current, and last.json."""
        state = json.loads(self.read(name))
        meta = {
            "version": "2.0",
            "saved_at": when.isoformat(),
            "checksum": state.get("_checksum"),
            "workflow_id": workflow_id,
            "state_file": name,
            "workflow_path": "workflows/presets/full-sdlc.yaml",
            "compression": compress,
            "current_step": state.get("current_step"),
            "completed_steps_count": len(state.get("completed_steps", [])),
            "progress_percentage": 50.0,
            "trigger_step_id": state.get("current_step"),
        }
        write_json(self.root / f"{workflow_id}.meta.json", meta)
        last = {
            "workflow_id": workflow_id,
            "state_file": str(self.root / name),
            "metadata_file": str(self.root / f"{workflow_id}.meta.json"),
            "saved_at": when.isoformat(),
            "version": "2.0",
            "workflow_path": "workflows/presets/full-sdlc.yaml",
        }
        write_json(self.root / "last.json", last)

    def other_writer(self, name: str, state: dict[str, Any], executions: list[str]) -> None:
        """A ``{id}.json`` or ``workflow-{id}.json`` of the other writers: step executions,
        no checksum, no history copy, no meta file."""
        data = {
            **state,
            "step_executions": [
                {
                    "step_id": f"step{n}",
                    "agent": "analyst",
                    "action": "run",
                    "started_at": start,
                    "completed_at": None if n == len(executions) - 1 else start,
                    "duration_seconds": 1.0,
                    "status": "completed",
                    "error": None,
                }
                for n, start in enumerate(executions)
            ],
        }
        write_json(self.root / name, data)

    def read(self, name: str) -> bytes:
        raw = (self.root / name).read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw

    def fingerprint(self) -> dict[str, tuple[str, int]]:
        """Every file below the root: its content hash and modification time."""
        return {
            str(path.relative_to(self.root)): (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mtime_ns,
            )
            for path in sorted(self.root.rglob("*"))
            if path.is_file()
        }


@pytest.fixture
def legacy(tmp_path: Path) -> LegacyDir:
    return LegacyDir(tmp_path / ".tapps-agents" / "workflow-state")


def run_import(store: CheckpointStore, legacy: LegacyDir, **options: Any) -> Any:
    """Import with the legacy clock read as UTC, and check the source was left as it was."""
    before = legacy.fingerprint()
    report = import_legacy(store, legacy.root, **{"timezone": UTC, **options})
    assert legacy.fingerprint() == before
    return report


def checkpoints(store: CheckpointStore, workflow_id: str) -> list[tuple[int, Any, str, str]]:
    """(created_ns, step, legacy file, legacy status) of each checkpoint, in seq order."""
    result = []
    for info in store.history(workflow_id):
        ckpt = store.get(workflow_id, info.seq)
        legacy = ckpt.meta["legacy"]
        result.append((ckpt.created_ns, ckpt.step, legacy["file"], legacy["status"]))
    return result


# -- the common layout ------------------------------------------------------------------------


def test_the_checksum_is_the_legacy_systems() -> None:
    """Its definition, spelled out: json.dumps with sorted keys (and the default separators) of
    these six fields, the step lists sorted, then SHA-256 in hex. Other fields do not count."""
    state = {
        "workflow_id": "wf",
        "started_at": "2026-01-01T00:00:00",
        "current_step": "b",
        "completed_steps": ["z", "a"],
        "skipped_steps": [],
        "status": "running",
        "variables": {"k": 1, "é": [None, 1.5]},
        "artifacts": {"ignored": True},
    }
    stable = (
        '{"completed_steps": ["a", "z"], "current_step": "b", "skipped_steps": [], '
        '"status": "running", "variables": {"k": 1, "\\u00e9": [null, 1.5]}, "workflow_id": "wf"}'
    )
    assert checksum(state) == hashlib.sha256(stable.encode()).hexdigest()
    assert checksum({**state, "_checksum": "x", "error": "boom"}) == checksum(state)


def test_each_save_becomes_a_checkpoint_the_current_one_the_head(legacy: LegacyDir) -> None:
    times = [T0, T0 + dt.timedelta(minutes=5), T0 + dt.timedelta(hours=1)]
    names = [
        legacy.save(legacy_state("build", ["plan"], "running", target="src/a.py"), times[0]),
        legacy.save(legacy_state("build", ["plan", "code"], "paused"), times[1]),
        legacy.save(legacy_state("build", ["plan", "code", "test"], "completed"), times[2]),
    ]
    with CheckpointStore(MEMORY_PATH) as store:
        report = run_import(store, legacy)
        info = store.workflow("build")
        assert (info.status, info.head_seq, info.checkpoints) == ("completed", 3, 3)
        assert checkpoints(store, "build") == [
            (ns(times[0]), "plan", names[0], "running"),
            (ns(times[1]), "code", names[1], "paused"),
            (ns(times[2]), "test", names[2], "completed"),
        ]
        first = store.get("build", 1)
        file_content = json.loads(legacy.read(names[0]))
        assert first.state == {k: v for k, v in file_content.items() if k != "_checksum"}
        assert first.state["variables"]["_checkpoint_metadata"]["progress_percentage"] == 25.0
        assert first.schema == 1
        assert first.meta["legacy"]["checksum"] == file_content["_checksum"]
        meta_file = json.loads(legacy.read("build.meta.json"))
        assert store.workflow_extras("build") == {"legacy": meta_file}
    assert (report.files, report.snapshots, report.duplicates) == (6, 3, 3)
    assert (report.workflows, report.imported, report.already_present) == (1, 3, 0)
    assert (report.statuses_set, report.skipped) == (1, ())
    assert report.ok


@pytest.mark.parametrize(
    ("legacy_status", "status"),
    [("paused", "running"), ("running", "running"), ("failed", "failed")],
)
def test_status_mapping(legacy: LegacyDir, legacy_status: str, status: str) -> None:
    legacy.save(legacy_state("job", ["a"], legacy_status), T0)
    with CheckpointStore(MEMORY_PATH) as store:
        run_import(store, legacy)
        assert store.workflow("job").status == status
        assert store.latest("job").meta["legacy"]["status"] == legacy_status  # type: ignore[union-attr]


def test_workflows_are_grouped_by_the_id_inside_each_file(legacy: LegacyDir) -> None:
    """``build-20260101-000000.json`` is a save of ``build``; the workflow named
    ``build-20260101-000000`` has its saves named after it, and its own other-writer file."""
    midnight = dt.datetime(2026, 1, 1, 0, 0, 0)
    build = legacy.save(legacy_state("build", ["x"]), midnight)
    long_id = "build-20260101-000000"
    other = legacy.save(legacy_state(long_id, ["y"]), T0)
    legacy.other_writer(f"workflow-{long_id}.json", legacy_state(long_id, ["z"]), [])
    assert build == "build-20260101-000000.json"
    assert other == "build-20260101-000000-20260101-120000.json"
    with CheckpointStore(MEMORY_PATH) as store:
        report = run_import(store, legacy)
        assert checkpoints(store, "build") == [(ns(midnight), "x", build, "running")]
        # The other writer's file has no time in its name: started_at (11:59) places it first.
        assert [c[1:3] for c in checkpoints(store, long_id)] == [
            ("z", f"workflow-{long_id}.json"),
            ("y", other),
        ]
    assert report.workflows == 2
    assert report.ok


def test_gzip_files_and_a_broken_one(legacy: LegacyDir) -> None:
    legacy.save(legacy_state("gz", ["a"]), T0, compress=True)
    second = legacy.save(
        legacy_state("gz", ["a", "b"]), T0 + dt.timedelta(seconds=1), compress=True
    )
    broken = legacy.root / "gz-20260101-120002.json.gz"
    broken.write_bytes(gzip.compress(b'{"workflow_id": "gz"}')[:-6])
    with CheckpointStore(MEMORY_PATH) as store:
        report = run_import(store, legacy)
        assert [c[1:3] for c in checkpoints(store, "gz")] == [
            ("a", "gz-20260101-120000.json.gz"),
            ("b", second),
        ]
    [problem] = report.skipped
    assert (problem.source, problem.workflow_id) == ("gz-20260101-120002.json.gz", None)
    assert problem.reason.startswith("not a whole gzip file: ")
    assert not report.ok


def test_a_torn_file_whose_history_copy_is_whole(legacy: LegacyDir) -> None:
    legacy.save(legacy_state("wf", ["a"]), T0)
    name = legacy.save(legacy_state("wf", ["a", "b"]), T0 + dt.timedelta(minutes=1))
    torn = legacy.root / name
    torn.write_bytes(torn.read_bytes()[:-40])
    (legacy.root / "history" / "wf-20260101-120000.json").write_bytes(b'{"workflow_id": "wf", ')
    with CheckpointStore(MEMORY_PATH) as store:
        report = run_import(store, legacy)
        assert [c[1] for c in checkpoints(store, "wf")] == ["a", "b"]
    assert [(p.source, p.reason.split(":")[0]) for p in report.skipped] == [
        (name, "not valid JSON"),
        ("history/wf-20260101-120000.json", "not valid JSON"),
    ]
    assert (report.files, report.snapshots, report.duplicates) == (4, 2, 0)


def test_a_checksum_mismatch_is_reported_and_not_imported(legacy: LegacyDir) -> None:
    legacy.save(legacy_state("wf", ["a"]), T0)
    name = legacy.save(legacy_state("wf", ["a", "b"], "completed"), T0 + dt.timedelta(minutes=1))
    for path in (legacy.root / name, legacy.root / "history" / name):
        data = json.loads(path.read_bytes())
        data["variables"]["target"] = "edited by hand"
        write_json(path, data)
    with CheckpointStore(MEMORY_PATH) as store:
        report = run_import(store, legacy)
        # The current file failed its check: the newest good snapshot is the head.
        assert [c[1] for c in checkpoints(store, "wf")] == ["a"]
        assert store.workflow("wf").status == "running"
    assert [(p.source, p.workflow_id) for p in report.skipped] == [
        (name, "wf"),
        (f"history/{name}", "wf"),
    ]
    expected = checksum(legacy_state("wf", ["a", "b"], "completed"))
    assert report.skipped[0].reason.startswith(f"_checksum mismatch: the file says {expected}, ")


def test_a_checksum_that_cannot_be_recomputed(legacy: LegacyDir) -> None:
    state = {**legacy_state("wf", ["a"]), "completed_steps": ["x", 1], "_checksum": "0" * 64}
    write_json(legacy.root / "wf-20260101-120000.json", state)
    with CheckpointStore(MEMORY_PATH) as store:
        report = run_import(store, legacy)
    [problem] = report.skipped
    assert problem.reason.startswith("its _checksum cannot be recomputed: ")


def test_the_other_writers_files(legacy: LegacyDir) -> None:
    legacy.other_writer(
        "deploy.json",
        legacy_state("deploy", ["a", "b"], "failed"),
        ["2026-01-01T12:00:00", "2026-01-01T12:30:00.250000"],
    )
    legacy.other_writer(
        "workflow-review.json",
        legacy_state("review", ["a"]),
        ["2026-01-01T13:00:00+01:00"],
    )
    with CheckpointStore(MEMORY_PATH) as store:
        report = run_import(store, legacy)
        deploy = store.latest("deploy")
        assert deploy is not None
        assert deploy.created_ns == ns(dt.datetime(2026, 1, 1, 12, 30, 0, 250000))
        assert deploy.state["step_executions"][0]["step_id"] == "step0"
        assert deploy.meta["legacy"]["checksum"] is None
        assert store.workflow("deploy").status == "failed"
        review = store.latest("review")
        assert review is not None
        assert review.created_ns == ns(dt.datetime(2026, 1, 1, 12, 0, 0))  # 13:00 at +01:00
        assert store.workflow_extras("review") == {}  # no meta file
    assert (report.files, report.imported, report.ok) == (2, 2, True)


def test_a_file_without_any_time_gets_its_modification_time(legacy: LegacyDir) -> None:
    state = {**legacy_state("wf", ["a"]), "started_at": "yesterday"}
    write_json(legacy.root / "wf.json", state)
    os.utime(legacy.root / "wf.json", ns=(0, 1_700_000_000_123_456_789))
    with CheckpointStore(MEMORY_PATH) as store:
        run_import(store, legacy)
        assert store.latest("wf").created_ns == 1_700_000_000_123_456_789  # type: ignore[union-attr]


def test_times_are_read_in_the_given_zone(legacy: LegacyDir) -> None:
    legacy.save(legacy_state("wf", ["a"]), T0)
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    with CheckpointStore(MEMORY_PATH) as store:
        run_import(store, legacy, timezone=paris)
        assert store.get("wf", 1).created_ns == ns(T0) - 3600 * 10**9


def test_files_that_are_no_states(legacy: LegacyDir) -> None:
    legacy.save(legacy_state("wf", ["a"]), T0)
    write_json(legacy.root / "settings.json", {"theme": "dark"})
    write_json(legacy.root / "odd.json", {**legacy_state("odd", ["a"]), "status": "sleeping"})
    write_json(legacy.root / "nul.json", legacy_state("bad\x00id", ["a"]))
    (legacy.root / "notes.txt").write_text("not json")
    (legacy.root / "wf-20260101-120000.json.tmp").write_text("{")
    (legacy.root / "archive").mkdir()
    write_json(legacy.root / "archive" / "x.json", legacy_state("archived", ["a"]))
    write_json(legacy.root / "broken.meta.json", ["no", "state_file"])
    with CheckpointStore(MEMORY_PATH) as store:
        report = run_import(store, legacy)
        assert [info.workflow_id for info in store.workflows()] == ["wf"]
    problems = {p.source: (p.workflow_id, p.reason) for p in report.skipped}
    assert problems == {
        "broken.meta.json": (None, "not a legacy meta file: no state_file"),
        "nul.json": (
            "bad\x00id",
            "invalid workflow id 'bad\\x00id': contains a NUL character",
        ),
        "odd.json": ("odd", "unknown status 'sleeping'"),
        "settings.json": (None, "not a legacy workflow state: no workflow_id and started_at"),
    }
    assert report.files == 5  # wf twice, settings, odd, nul: never last.json or a meta file


def test_a_directory_without_history_and_odd_meta_files(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir()
    state = legacy_state("wf", ["a"])
    write_json(root / "wf-20260101-120000.json", {**state, "_checksum": checksum(state)})
    write_json(root / "wf.meta.json", {"state_file": "/elsewhere/wf-20260101-120000.json"})
    (root / "torn.meta.json").write_text('{"state_file": ')
    with CheckpointStore(MEMORY_PATH) as store:
        report = import_legacy(store, root, timezone=UTC)
        # A meta file without workflow_id is the workflow's its name says; only the name of
        # the state file it points at counts, wherever the path led.
        assert store.workflow_extras("wf")["legacy"]["state_file"].startswith("/elsewhere/")
    assert [(p.source, p.reason.split(":")[0]) for p in report.skipped] == [
        ("torn.meta.json", "not valid JSON")
    ]
    assert (report.files, report.imported) == (1, 1)


def test_a_meta_file_the_store_cannot_keep(legacy: LegacyDir) -> None:
    legacy.save(legacy_state("wf", ["a"], "completed"), T0)
    meta = json.loads(legacy.read("wf.meta.json"))
    write_json(legacy.root / "wf.meta.json", {**meta, "completed_steps_count": 2**64})
    with CheckpointStore(MEMORY_PATH) as store:
        report = run_import(store, legacy)
        assert store.workflow("wf").status == "running"
    [problem] = report.skipped
    assert (problem.source, problem.workflow_id) == ("wf.meta.json", "wf")
    assert "int outside the 64-bit range" in problem.reason


def test_a_save_the_meta_file_does_not_name_yet(legacy: LegacyDir) -> None:
    """The legacy system died between writing a state file and pointing its meta file at it."""
    first = legacy.save(legacy_state("wf", ["a"]), T0)
    uncommitted = legacy.save(legacy_state("wf", ["a", "b"]), T0 + dt.timedelta(minutes=1))
    legacy.point_at("wf", first, T0)
    with CheckpointStore(MEMORY_PATH) as store:
        report = run_import(store, legacy)
        assert [c[2] for c in checkpoints(store, "wf")] == [first]
    assert [p.source for p in report.skipped] == [uncommitted]  # the history copy is the same
    assert report.skipped[0].reason == (
        f"saved after {first}, the current state file wf.meta.json names: the legacy system "
        f"never made it current"
    )


# -- running it again -------------------------------------------------------------------------


def test_running_again_adds_nothing(legacy: LegacyDir) -> None:
    for n in range(3):
        legacy.save(legacy_state("wf", ["a"] * (n + 1)), T0 + dt.timedelta(minutes=n))
    legacy.other_writer("other.json", legacy_state("other", ["a"]), ["2026-01-01T12:00:00"])
    with CheckpointStore(MEMORY_PATH) as store:
        run_import(store, legacy)
        before = {wf: (list(store.history(wf)), store.workflow(wf)) for wf in ("wf", "other")}
        report = run_import(store, legacy)
        after = {wf: (list(store.history(wf)), store.workflow(wf)) for wf in ("wf", "other")}
    assert after == before
    assert (report.imported, report.already_present, report.statuses_set) == (0, 4, 0)
    assert report.ok


def test_running_again_after_more_saves_and_a_cleanup(legacy: LegacyDir) -> None:
    names = [
        legacy.save(legacy_state("wf", ["a"] * (n + 1)), T0 + dt.timedelta(minutes=n))
        for n in range(3)
    ]
    with CheckpointStore(MEMORY_PATH) as store:
        run_import(store, legacy)
        # The legacy system goes on: it deletes its oldest save and saves twice more.
        for place in (legacy.root, legacy.root / "history"):
            (place / names[0]).unlink()
        later = [
            legacy.save(legacy_state("wf", ["a"] * 4, status), T0 + dt.timedelta(minutes=n))
            for n, status in ((3, "running"), (4, "completed"))
        ]
        report = run_import(store, legacy)
        assert [c[2] for c in checkpoints(store, "wf")] == names + later
        assert store.workflow("wf").status == "completed"
    assert (report.imported, report.already_present, report.statuses_set) == (2, 2, 1)
    assert report.ok


def test_a_snapshot_older_than_the_store_holds_is_not_appended(legacy: LegacyDir) -> None:
    legacy.save(legacy_state("wf", ["a"]), T0 + dt.timedelta(minutes=5))
    with CheckpointStore(MEMORY_PATH) as store:
        run_import(store, legacy)
        late_find = legacy.root / "history" / "wf-20260101-120000.json"
        state = legacy_state("wf", ["z"])
        write_json(late_find, {**state, "_checksum": checksum(state)})
        report = run_import(store, legacy)
        assert store.workflow("wf").checkpoints == 1
    [problem] = report.skipped
    assert problem.source == "history/wf-20260101-120000.json"
    assert problem.reason == (
        "saved at 2026-01-01T12:00:00Z, before the store's newest checkpoint of the workflow "
        "(2026-01-01T12:05:00Z): not imported, so that the history stays in time order"
    )


def test_a_workflow_that_went_on_in_lmdbstate_keeps_its_status(legacy: LegacyDir) -> None:
    legacy.save(legacy_state("wf", ["a"], "paused"), T0)
    legacy.other_writer("wf.json", legacy_state("wf", ["a"], "paused"), ["junk", 5])  # type: ignore[list-item]
    with CheckpointStore(MEMORY_PATH) as store:
        run_import(store, legacy)
        store.put("wf", {"resumed": True})
        store.set_status("wf", "completed")
        report = run_import(store, legacy)
        assert store.workflow("wf").status == "completed"
    assert (report.already_present, report.statuses_set, report.ok) == (2, 0, True)


def test_a_workflow_lmdbstate_already_runs_is_left_alone(legacy: LegacyDir) -> None:
    legacy.save(legacy_state("wf", ["a"], "completed"), T0)
    with CheckpointStore(MEMORY_PATH) as store:
        store.put("wf", {"native": True})
        report = run_import(store, legacy)
        assert store.workflow("wf").checkpoints == 1
        assert store.workflow("wf").status == "running"
    assert [p.reason.split(",")[0] for p in report.skipped] == ["saved at 2026-01-01T12:00:00Z"]


def test_a_file_rewritten_during_the_import_is_skipped(legacy: LegacyDir) -> None:
    legacy.other_writer("wf.json", legacy_state("wf", ["a"]), ["2026-01-01T12:00:00"])

    def rewrite_after_the_scan(done: int, total: int) -> None:
        if done == 1:  # the scan read the one file: the legacy system now saves again
            legacy.other_writer("wf.json", legacy_state("wf", ["a", "b"]), ["2026-01-01T12:00:00"])

    with CheckpointStore(MEMORY_PATH) as store:
        report = import_legacy(store, legacy.root, timezone=UTC, progress=rewrite_after_the_scan)
        assert [info.workflow_id for info in store.workflows()] == []
    [problem] = report.skipped
    assert (problem.source, problem.reason) == ("wf.json", "it changed while the import ran")


def test_progress_counts_files_then_snapshots(legacy: LegacyDir) -> None:
    legacy.save(legacy_state("wf", ["a"]), T0)
    calls: list[tuple[int, int]] = []
    with CheckpointStore(MEMORY_PATH) as store:
        import_legacy(store, legacy.root, progress=lambda *args: calls.append(args))
    assert calls == [(1, 2), (2, 2), (3, 3)]


def test_a_missing_directory(tmp_path: Path) -> None:
    with CheckpointStore(MEMORY_PATH) as store, pytest.raises(InterchangeError) as caught:
        import_legacy(store, tmp_path / "nowhere")
    assert caught.value.message == f"no directory at {tmp_path / 'nowhere'}"
    assert caught.value.path == tmp_path / "nowhere"


def test_a_directory_on_disk_store(legacy: LegacyDir, tmp_path: Path) -> None:
    legacy.save(legacy_state("wf", ["a"]), T0)
    with CheckpointStore(tmp_path / "store") as store:
        assert run_import(store, legacy).imported == 1
    with CheckpointStore(tmp_path / "store", readonly=True) as store:
        assert store.verify().ok


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_import_legacy(runner: CliRunner, legacy: LegacyDir, tmp_path: Path) -> None:  # noqa: F811
    legacy.save(legacy_state("wf", ["a"]), T0)
    legacy.save(legacy_state("wf", ["a", "b"], "paused"), T0 + dt.timedelta(minutes=1))
    store = tmp_path / "store"
    args = ("import-legacy", str(legacy.root), "--timezone", "UTC")
    result = invoke(runner, *args, store=store)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        f"imported 2 checkpoints of 1 workflows from {legacy.root} (4 state files: 2 snapshots, "
        f"2 further copies; 0 were already present; 1 statuses set) in "
    )
    result = invoke(runner, *args, "--json", store=store)
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert (data["imported"], data["already_present"], data["ok"]) == (0, 2, True)
    with CheckpointStore(store, readonly=True) as opened:
        assert opened.get("wf", 1).created_ns == ns(T0)


def test_cli_import_legacy_reports_skipped_files_and_exits_3(
    runner: CliRunner,  # noqa: F811
    legacy: LegacyDir,
    tmp_path: Path,
) -> None:
    legacy.save(legacy_state("wf", ["a"]), T0)
    (legacy.root / "torn.json").write_text('{"workflow_id": "w')
    result = invoke(runner, "import-legacy", str(legacy.root), store=tmp_path / "s")
    assert result.exit_code == 3
    assert "1 files skipped:" in result.stdout
    assert "torn.json" in result.stdout
    result = invoke(runner, "import-legacy", str(legacy.root), "--json", store=tmp_path / "s")
    assert result.exit_code == 3
    [problem] = json.loads(result.stdout)["skipped"]
    assert problem["source"] == "torn.json"


def test_cli_import_legacy_refusals(runner: CliRunner, legacy: LegacyDir, tmp_path: Path) -> None:  # noqa: F811
    store = tmp_path / "store"
    result = invoke(runner, "import-legacy", str(tmp_path / "nowhere"), store=store)
    assert result.exit_code == 1
    assert error_lines(result)[0] == f"error: no directory at {tmp_path / 'nowhere'}"
    assert not store.exists()
    result = invoke(
        runner, "import-legacy", str(legacy.root), "--timezone", "Mars/Base", store=store
    )
    assert result.exit_code == 2
    assert "no time zone 'Mars/Base'" in result.stderr
    assert not store.exists()
