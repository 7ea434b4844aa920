"""The reference executor and the Checkpointer: run, resume, failures, definitions, damage."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lmdbstate import (
    CheckpointStore,
    CodecError,
    Config,
    ConfigWatcher,
    DefinitionChangedError,
    InvalidInputError,
    NotResumableError,
    RunError,
    SequenceConflictError,
    StepFailedError,
    WorkflowExistsError,
    WorkflowFinishedError,
    WorkflowLockedError,
    WorkflowNotFoundError,
)
from lmdbstate.index import WorkflowEntry
from lmdbstate.keys import checkpoint_key
from lmdbstate.leases import node_identity
from lmdbstate.policy import every_n_steps, every_step, manual, on_gates
from lmdbstate.runner import (
    Checkpointer,
    Step,
    StepRecord,
    Workflow,
    load_workflow,
    request_checkpoint,
    resume,
    run,
)

from .damage import flip_record, raw_get, raw_put
from .workflows import SIMPLE, STEPS, advance, initial, prefix_states

FINAL = prefix_states(STEPS)[-1]
ENTRYPOINT = "tests.workflows:SIMPLE"


@pytest.fixture
def memory() -> Iterator[CheckpointStore]:
    with Config(enabled=False).open_store() as opened:
        yield opened


def crash_after(store: CheckpointStore, workflow_id: str, done: int, **options: Any) -> None:
    """Run SIMPLE's first ``done`` steps and stop as a killed process would: lease gone, running."""
    checkpointer = Checkpointer(store, workflow_id, total_steps=STEPS, **options)
    checkpointer.start(initial(), extras={"entrypoint": ENTRYPOINT})
    state = initial()
    for index in range(done):
        state = advance(index, state)
        checkpointer.after_step(f"s{index:02d}", state)
    checkpointer.release()


def triggers(store: CheckpointStore, workflow_id: str) -> list[tuple[int, object, str]]:
    return [
        (info.seq, info.step, store.get(workflow_id, info.seq).meta["trigger"])
        for info in store.history(workflow_id)
    ]


# -- definitions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "steps", "schema"),
    [
        ("", [Step("a", len)], 1),
        ("w", [], 1),
        ("w", [len], 1),
        ("w", [Step("a", len), Step("a", len)], 1),
        ("w", [Step("", len)], 1),
        ("w", [Step("a", len)], 0),
    ],
)
def test_invalid_workflows_are_refused(name: str, steps: list[Any], schema: int) -> None:
    with pytest.raises(InvalidInputError):
        Workflow(name, steps, schema=schema)


def test_the_fingerprint_follows_the_step_names_only() -> None:
    renamed = Workflow("other", [Step(s.name, len) for s in SIMPLE.steps])
    assert renamed.fingerprint == SIMPLE.fingerprint
    reordered = Workflow("simple", list(reversed(SIMPLE.steps)))
    assert reordered.fingerprint != SIMPLE.fingerprint
    assert repr(SIMPLE) == "Workflow('simple', 10 steps, schema=1)"


def test_load_workflow() -> None:
    assert load_workflow(ENTRYPOINT) is SIMPLE
    for bad, fragment in [
        ("tests.workflows", "expected MODULE:ATTRIBUTE"),
        (":SIMPLE", "expected MODULE:ATTRIBUTE"),
        ("tests.nowhere:SIMPLE", "ModuleNotFoundError"),
        ("tests.workflows:NOPE", "AttributeError"),
        ("tests.workflows:STEPS", r"is not a Workflow \(its type is 'int'\)"),
    ]:
        with pytest.raises(InvalidInputError, match=fragment) as caught:
            load_workflow(bad)
        assert "MODULE:ATTRIBUTE" in caught.value.hint


# -- run ----------------------------------------------------------------------------------------


def test_run_checkpoints_by_policy_and_records_how_to_resume(store_path: Path) -> None:
    seen: list[StepRecord] = []
    with CheckpointStore(store_path) as store:
        result = run(
            store, SIMPLE, "wf", initial(), policy=every_n_steps(4), entrypoint=ENTRYPOINT,
            on_step=seen.append,
        )  # fmt: skip
        assert result.state == FINAL
        assert (result.resumed_from, result.skipped_damaged) == (None, ())
        assert result.steps_run == SIMPLE.step_names
        # The first and final checkpoints always; 4 steps after the last one; and the one step
        # s05 asked for, which the count of steps then starts from.
        assert triggers(store, "wf") == [
            (1, None, "start"), (2, "s03", "step_count"), (3, "s05", "requested"),
            (4, "s09", "final"),
        ]  # fmt: skip
        assert [info.seq for info in result.checkpoints] == [1, 2, 3, 4]
        assert [record.checkpoint is not None for record in seen].count(True) == 3
        assert store.workflow("wf").status == "completed"
        assert store.lease("wf") is None
        extras = store.workflow_extras("wf")
        assert extras["entrypoint"] == ENTRYPOINT
        assert extras["policy"] == {"name": "every_n_steps", "interval": 4}
        assert extras["definition"]["fingerprint"] == SIMPLE.fingerprint
        last = store.latest("wf")
        assert last is not None
        assert last.state == FINAL
        assert dict(last.meta) == {
            "trigger": "final", "step_index": 9, "completed": 10, "total": 10, "progress": 1.0,
            "started_ns": seen[-1].started_ns, "finished_ns": seen[-1].finished_ns, "parent": 3,
        }  # fmt: skip
        first = store.get("wf", 1)
        assert (first.state, first.meta["completed"], first.meta["parent"]) == (initial(), 0, None)


@pytest.mark.parametrize(
    ("policy", "seqs"), [(every_step, 11), (on_gates, 5), (manual, 3)], ids=str
)
def test_each_policy_in_a_run(memory: CheckpointStore, policy: Any, seqs: int) -> None:
    result = run(memory, SIMPLE, "wf", initial(), policy=policy)
    assert result.state == FINAL
    assert len(result.checkpoints) == seqs  # start, final, s05's request, and the policy's own


def test_run_refuses_an_existing_workflow(memory: CheckpointStore) -> None:
    run(memory, SIMPLE, "wf", initial())
    with pytest.raises(WorkflowFinishedError):
        run(memory, SIMPLE, "wf", initial())
    crash_after(memory, "running", 3)
    with pytest.raises(WorkflowExistsError) as caught:
        run(memory, SIMPLE, "running", initial())
    assert "lmdbstate resume" in caught.value.hint


def test_run_refuses_an_entrypoint_naming_another_definition(memory: CheckpointStore) -> None:
    other = Workflow("other", [Step("x", len)])
    with pytest.raises(InvalidInputError, match="another definition"):
        run(memory, other, "wf", initial(), entrypoint=ENTRYPOINT)
    with pytest.raises(WorkflowNotFoundError):
        memory.workflow("wf")


def test_async_steps_run_on_one_event_loop(memory: CheckpointStore) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def double(state: dict[str, int]) -> dict[str, int]:
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return {"n": state["n"] * 2}

    workflow = Workflow(
        "mixed", [Step("a", double), Step("b", lambda s: {"n": s["n"] + 1}), Step("c", double)]
    )
    assert run(memory, workflow, "wf", {"n": 1}).state == {"n": 6}
    assert len(loops) == 2
    assert loops[0] is loops[1]


def test_request_checkpoint_outside_a_step() -> None:
    with pytest.raises(InvalidInputError, match="outside a step"):
        request_checkpoint()


def test_an_unencodable_state_fails_the_workflow(memory: CheckpointStore) -> None:
    workflow = Workflow("w", [Step("a", lambda state: object())])
    with pytest.raises(CodecError):
        run(memory, workflow, "wf", {})
    assert memory.workflow("wf").status == "failed"
    assert memory.workflow_extras("wf")["error"]["type"] == "CodecError"


# -- failures and retries -----------------------------------------------------------------------


def flaky(failures: int) -> Workflow:
    left = [failures]

    def fragile(state: dict[str, Any]) -> dict[str, Any]:
        if left[0]:
            left[0] -= 1
            raise ValueError("the service is down")
        return advance(6, state)

    steps = list(SIMPLE.steps)
    steps[6] = Step("s06", fragile)
    return Workflow("simple", steps)


def test_a_failed_step_is_recorded_and_retried_by_resume(store_path: Path) -> None:
    workflow = flaky(failures=1)
    with CheckpointStore(store_path) as store:
        with pytest.raises(StepFailedError) as caught:
            run(store, workflow, "wf", initial(), policy=every_n_steps(4))
        assert str(caught.value) == (
            "step 's06' of workflow 'wf' failed: ValueError: the service is down"
        )
        assert isinstance(caught.value.__cause__, ValueError)
        info = store.workflow("wf")
        assert (info.status, store.lease("wf")) == ("failed", None)
        error = store.workflow_extras("wf")["error"]
        assert (error["type"], error["message"], error["step"]) == (
            "ValueError",
            "the service is down",
            "s06",
        )
        # Steps s04 and s05 were done after the last count checkpoint, but s05 asked for one.
        assert store.latest("wf").step == "s05"  # type: ignore[union-attr]

        result = resume(store, "wf", workflow=workflow)
        assert result.state == FINAL
        assert result.resumed_from == 3
        assert result.steps_run == SIMPLE.step_names[6:]
        assert store.workflow("wf").status == "completed"
        assert "error" not in store.workflow_extras("wf")


def test_resume_refuses_a_finished_workflow(memory: CheckpointStore) -> None:
    run(memory, SIMPLE, "wf", initial())
    with pytest.raises(WorkflowFinishedError, match="is completed"):
        resume(memory, "wf", workflow=SIMPLE)
    crash_after(memory, "cancelled", 2)
    memory.set_status("cancelled", "cancelled")
    with pytest.raises(WorkflowFinishedError, match="is cancelled"):
        resume(memory, "cancelled", workflow=SIMPLE)
    with pytest.raises(WorkflowNotFoundError):
        resume(memory, "nowhere", workflow=SIMPLE)


# -- resume -------------------------------------------------------------------------------------


@pytest.mark.parametrize("done", [0, 1, 5, 9, 10])
def test_resume_by_the_recorded_entrypoint(memory: CheckpointStore, done: int) -> None:
    crash_after(memory, "wf", done, policy=every_step)
    result = resume(memory, "wf")
    assert result.state == FINAL
    assert result.resumed_from == done + 1
    assert result.steps_run == SIMPLE.step_names[done:]
    assert memory.workflow("wf").status == "completed"
    if done < STEPS:
        parent = memory.get("wf", done + 2).meta["parent"]
        assert parent == done + 1


def test_resume_keeps_the_policy_the_run_started_with(memory: CheckpointStore) -> None:
    with pytest.raises(StepFailedError):
        run(memory, flaky(failures=1), "wf", initial(), policy=on_gates)
    result = resume(memory, "wf", workflow=flaky(failures=0))
    assert [(info.step) for info in result.checkpoints] == ["s07", "s09"]


def test_resume_without_an_entrypoint_or_checkpoint(memory: CheckpointStore) -> None:
    checkpointer = Checkpointer(memory, "bare", total_steps=STEPS)
    checkpointer.start(initial())
    checkpointer.release()
    with pytest.raises(NotResumableError, match="no entrypoint recorded") as caught:
        resume(memory, "bare")
    assert "giving its Workflow" in caught.value.hint
    # A process killed between taking the lease and writing the first checkpoint.
    memory.acquire_lease("empty", create=True, extras={"entrypoint": ENTRYPOINT})
    with pytest.raises(NotResumableError, match="holds no checkpoint") as caught:
        resume(memory, "empty")
    assert "lmdbstate run" in caught.value.hint
    # ... which a new run of the same id may then take over, once the lease is gone.
    with pytest.raises(WorkflowLockedError):
        run(memory, SIMPLE, "empty", initial())


def test_resume_refuses_checkpoints_a_checkpointer_did_not_write(memory: CheckpointStore) -> None:
    memory.put("plain", {"x": 1}, step="s00")
    with pytest.raises(NotResumableError, match="no step count"):
        resume(memory, "plain", workflow=SIMPLE)
    assert memory.workflow("plain").status == "running"
    assert memory.lease("plain") is None
    checkpointer = Checkpointer(memory, "plain", total_steps=STEPS)
    with pytest.raises(NotResumableError):
        checkpointer.restore()
    assert checkpointer.lease is None


def test_resume_falls_back_past_a_damaged_newest_checkpoint(store_path: Path) -> None:
    with CheckpointStore(store_path) as store:
        crash_after(store, "wf", 6, policy=every_n_steps(2))
        assert [step for _, step, _ in triggers(store, "wf")] == [None, "s01", "s03", "s05"]
    newest = raw_get(store_path, b"ckpt", checkpoint_key(b"wf", 4))
    assert newest is not None
    flip_record(store_path, newest, offset=40)
    with CheckpointStore(store_path) as store:
        result = resume(store, "wf")
        assert result.skipped_damaged == (4,)
        assert result.resumed_from == 3  # taken after s03
        assert result.steps_run == SIMPLE.step_names[4:]
        assert result.state == FINAL
        # The new checkpoints follow the damaged one (seqs are never reused) and descend
        # from the checkpoint resumed from.
        assert result.checkpoints[0].seq == 5
        assert store.get("wf", 5).meta["parent"] == 3


def test_disabled_persistence_runs_the_same_workflow() -> None:
    with Config(enabled=False).open_store() as store:
        assert store.path == ":memory:"
        crash_after(store, "wf", 4)
        assert resume(store, "wf").state == FINAL


# -- changed definitions ------------------------------------------------------------------------


def renamed(index: int, name: str) -> Workflow:
    steps = list(SIMPLE.steps)
    steps[index] = Step(name, steps[index].fn)
    return Workflow("simple", steps)


def test_a_changed_definition_is_refused_and_nothing_changes(memory: CheckpointStore) -> None:
    with pytest.raises(StepFailedError):
        run(memory, flaky(failures=1), "wf", initial(), policy=every_step)
    before = (memory.workflow("wf"), memory.workflow_extras("wf"))
    with pytest.raises(DefinitionChangedError) as caught:
        resume(memory, "wf", workflow=renamed(8, "s08-new"))
    assert "s08-new" in str(caught.value)
    assert "--force" in caught.value.hint
    assert (memory.workflow("wf"), memory.workflow_extras("wf")) == before
    assert memory.lease("wf") is None


def test_force_continues_after_the_same_step(memory: CheckpointStore) -> None:
    crash_after(memory, "wf", 5)
    # A step inserted before the checkpoint's step moves it; one renamed after it runs.
    steps = [Step("s-new", lambda s: s), *SIMPLE.steps[:8], Step("s08-new", SIMPLE.steps[8].fn)]
    steps.append(SIMPLE.steps[9])
    changed = Workflow("simple", steps)
    result = resume(memory, "wf", workflow=changed, force=True)
    assert result.resumed_from == 6
    assert result.steps_run == ("s05", "s06", "s07", "s08-new", "s09")
    assert result.state == FINAL
    assert memory.workflow_extras("wf")["definition"]["fingerprint"] == changed.fingerprint
    last = memory.latest("wf")
    assert last is not None
    assert (last.meta["completed"], last.meta["total"]) == (11, 11)


def test_force_cannot_continue_after_a_removed_step(memory: CheckpointStore) -> None:
    crash_after(memory, "wf", 5)
    with pytest.raises(DefinitionChangedError, match="no longer has") as caught:
        resume(memory, "wf", workflow=renamed(4, "s04-new"), force=True)
    assert "--force" not in caught.value.hint
    assert memory.lease("wf") is None


def test_a_changed_schema_is_refused_unless_forced(memory: CheckpointStore) -> None:
    crash_after(memory, "wf", 5)
    upgraded = Workflow("simple", SIMPLE.steps, schema=2)
    with pytest.raises(DefinitionChangedError, match="schema 1; the steps now use schema 2"):
        resume(memory, "wf", workflow=upgraded)
    assert resume(memory, "wf", workflow=upgraded, force=True).state == FINAL


# -- the checkpointer on its own ----------------------------------------------------------------


def test_an_executor_adopts_the_checkpointer_in_a_few_lines(memory: CheckpointStore) -> None:
    def execute(crash_at: int | None) -> Any:
        with Checkpointer(memory, "job", total_steps=STEPS, policy=every_n_steps(3)) as ckpt:
            restored = ckpt.restore()
            state = initial() if restored is None else restored.state
            if restored is None:
                ckpt.start(state)
            for index in range(ckpt.completed, STEPS):
                if index == crash_at:
                    raise KeyboardInterrupt  # not an error of the workflow's: it stays running
                state = advance(index, state)
                ckpt.after_step(f"s{index:02d}", state)
            ckpt.complete()
        return state

    with pytest.raises(KeyboardInterrupt):
        execute(crash_at=7)
    assert (memory.workflow("job").status, memory.lease("job")) == ("running", None)
    assert memory.latest("job").meta["completed"] == 6  # type: ignore[union-attr]
    assert execute(crash_at=None) == FINAL
    assert memory.workflow("job").status == "completed"


def test_an_error_leaving_the_block_fails_the_workflow(memory: CheckpointStore) -> None:
    def interrupted() -> None:
        with Checkpointer(memory, "job", total_steps=2) as ckpt:
            ckpt.start({})
            ckpt.after_step("a", {})
            _ = 1 / 0

    with pytest.raises(ZeroDivisionError):
        interrupted()
    assert memory.workflow("job").status == "failed"
    assert memory.workflow_extras("job")["error"]["type"] == "ZeroDivisionError"


def test_restoring_a_workflow_without_checkpoints_leaves_its_status(
    memory: CheckpointStore,
) -> None:
    """Regression (review): restore took the lease first, which marked a failed workflow
    running, then found nothing to restore and released it, status unchanged."""
    memory.put("wf", {"n": 1})
    memory.delete("wf", seq=1)
    memory.set_status("wf", "failed")
    assert Checkpointer(memory, "wf", total_steps=2).restore() is None
    assert memory.workflow("wf").status == "failed"
    assert memory.lease("wf") is None


def test_checkpointer_misuse(memory: CheckpointStore) -> None:
    with pytest.raises(InvalidInputError):
        Checkpointer(memory, "job", total_steps=0)
    ckpt = Checkpointer(memory, "job", total_steps=1)
    with pytest.raises(RunError, match="holds no lease"):
        ckpt.after_step("a", {})
    assert ckpt.restore() is None  # a new workflow: nothing to restore, no lease taken
    ckpt.start({})
    assert ckpt.after_step("a", {}).trigger == "final"
    with pytest.raises(RunError, match="all 1 steps are already done"):
        ckpt.after_step("b", {})
    ckpt.complete()
    with pytest.raises(RunError, match="holds no lease"):
        ckpt.complete()


def test_force_checkpoints_the_next_step(memory: CheckpointStore) -> None:
    ckpt = Checkpointer(memory, "job", total_steps=5, policy=manual)
    ckpt.start({})
    assert ckpt.after_step("a", {}).trigger is None
    ckpt.force()
    assert ckpt.after_step("b", {}).trigger == "requested"
    assert ckpt.after_step("c", {}).trigger is None


# -- leases -------------------------------------------------------------------------------------


def test_a_second_executor_is_locked_out(memory: CheckpointStore) -> None:
    crash_after(memory, "wf", 3)
    holder = Checkpointer(memory, "wf", total_steps=STEPS)
    assert holder.restore() is not None
    with pytest.raises(WorkflowLockedError) as caught:
        resume(memory, "wf")
    lease = holder.lease
    assert lease is not None
    assert caught.value.holder == lease
    assert str(caught.value) == (
        f"workflow 'wf' is being run by another executor (pid {lease.pid} on {lease.host})"
    )
    holder.release()
    assert resume(memory, "wf").state == FINAL


def test_an_expired_lease_is_taken_over_and_its_holder_finds_out(
    memory: CheckpointStore, caplog: pytest.LogCaptureFixture
) -> None:
    crash_after(memory, "wf", 3)
    old = Checkpointer(memory, "wf", total_steps=STEPS, lease_ttl=0.001)
    old.restore()
    time.sleep(0.002)
    new = Checkpointer(memory, "wf", total_steps=STEPS)
    with caplog.at_level(logging.WARNING, logger="lmdbstate"):
        assert new.restore() is not None
    assert "taking over the lease" in caplog.text
    assert "which expired" in caplog.text
    # The old holder finds out when it renews the lease, before it writes anything.
    with pytest.raises(WorkflowLockedError, match="being run by another executor"), old:
        old.after_step("s03", advance(3, prefix_states(3)[-1]))
    assert memory.lease("wf") == new.lease  # leaving the block did not release the new lease
    assert memory.workflow("wf").head_seq == 4


def test_a_holder_whose_workflow_moved_on_fails_instead_of_forking(
    memory: CheckpointStore,
) -> None:
    crash_after(memory, "wf", 3)
    holder = Checkpointer(memory, "wf", total_steps=STEPS)
    holder.restore()
    memory.put("wf", {"another": "writer"})  # not through a lease
    with pytest.raises(SequenceConflictError), holder:
        holder.after_step("s03", {})
    info = memory.workflow("wf")
    assert (info.status, info.head_seq, memory.lease("wf")) == ("running", 5, None)


def test_a_lease_of_another_host_lasts_until_it_expires(
    memory: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr("socket.gethostname", lambda: "elsewhere")
        memory.acquire_lease("wf", create=True, ttl=0.2)
    with pytest.raises(WorkflowLockedError, match="on elsewhere"):
        memory.acquire_lease("wf")


def test_a_lease_whose_pid_names_another_process_is_taken_over(
    memory: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory.acquire_lease("wf", create=True)  # held by this process, which is alive
    with pytest.raises(WorkflowLockedError):
        memory.acquire_lease("wf")
    # The pid now names a process that started at another time: the holder has ended.
    monkeypatch.setattr("lmdbstate.leases.process_started", lambda pid: -1)
    memory.acquire_lease("wf")


def test_a_lease_of_another_boot_or_container_lasts_until_it_expires(
    memory: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same host name, a pid that names no process here: another boot or pid namespace."""
    with monkeypatch.context() as patch:
        patch.setattr("lmdbstate.leases.node_identity", lambda: "another-boot/pidns:1")
        held = memory.acquire_lease("wf", create=True, ttl=0.3)
    assert held.node == "another-boot/pidns:1"
    monkeypatch.setattr("lmdbstate.leases.process_started", lambda pid: -1)  # "pid reused"
    with pytest.raises(WorkflowLockedError):
        memory.acquire_lease("wf")
    time.sleep(0.35)
    assert memory.acquire_lease("wf").node == node_identity()


def test_a_lease_written_before_leases_had_a_node_is_still_held(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with CheckpointStore(store_path) as store:
        store.acquire_lease("wf", create=True)
    entry = WorkflowEntry.decode(b"wf", raw_get(store_path, b"wf", b"wf") or b"")
    del entry.extras["lease"]["node"]  # as an earlier version wrote it
    raw_put(store_path, b"wf", b"wf", entry.encode())
    with CheckpointStore(store_path) as store:
        lease = store.lease("wf")
        assert lease is not None
        assert (lease.pid, lease.node) == (os.getpid(), None)
        with pytest.raises(WorkflowLockedError):  # this process, alive, holds it
            store.acquire_lease("wf")
        monkeypatch.setattr("lmdbstate.leases.process_started", lambda pid: -1)
        assert store.acquire_lease("wf").node == node_identity()


def test_node_identity_names_this_boot_and_pid_namespace() -> None:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
        boot_id = file.read().strip()
    assert node_identity() == f"{boot_id}/pidns:{os.stat('/proc/self/ns/pid').st_ino}"


def test_a_holder_of_another_user_is_alive(
    memory: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory.acquire_lease("wf", create=True)

    def not_permitted(pid: int, signal: int) -> None:
        raise PermissionError(pid)

    monkeypatch.setattr("os.kill", not_permitted)
    monkeypatch.setattr("lmdbstate.leases.process_started", lambda pid: -1)
    with pytest.raises(WorkflowLockedError):
        memory.acquire_lease("wf")


def test_a_lease_is_renewed_and_released_only_by_its_holder(memory: CheckpointStore) -> None:
    lease = memory.acquire_lease("wf", create=True, ttl=30)
    assert memory.workflow("wf").checkpoints == 0
    renewed = memory.renew_lease(lease)
    assert renewed.renewed_ns >= lease.renewed_ns
    assert renewed.expires_ns == renewed.renewed_ns + 30 * 10**9
    assert memory.lease("wf") == renewed
    info = memory.release_lease(renewed, status="failed", extras={"note": "x"})
    assert info.status == "failed"
    assert memory.workflow_extras("wf") == {"note": "x"}
    with pytest.raises(WorkflowLockedError, match="released meanwhile"):
        memory.renew_lease(renewed)
    with pytest.raises(WorkflowLockedError):
        memory.release_lease(renewed)
    for bad in (0, -1, "5", float("nan")):
        with pytest.raises(InvalidInputError, match="ttl"):
            memory.acquire_lease("wf", ttl=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="extras"):
        memory.acquire_lease("wf", extras={"lease": 1})
    with pytest.raises(WorkflowNotFoundError):
        memory.acquire_lease("nowhere")


def test_a_first_checkpoint_that_fails_leaves_the_id_free(memory: CheckpointStore) -> None:
    with pytest.raises(CodecError):
        run(memory, SIMPLE, "wf", {"bad": object()})
    assert list(memory.workflows()) == []  # refused before the lease made the workflow exist
    assert run(memory, SIMPLE, "wf", initial()).state == FINAL


def test_resume_with_another_policy(memory: CheckpointStore) -> None:
    crash_after(memory, "wf", 2, policy=manual)  # nothing after the first checkpoint
    result = resume(memory, "wf", policy=every_step)
    assert (result.resumed_from, len(result.checkpoints)) == (1, STEPS)


def test_a_checkpoint_written_between_the_look_and_the_lease(
    memory: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_after(memory, "wf", 3)
    restore = Checkpointer.restore

    def racing(self: Checkpointer, **options: Any) -> Any:
        memory.put("wf", {}, step="gone", meta={"completed": 4})  # another writer got in
        return restore(self, **options)

    monkeypatch.setattr(Checkpointer, "restore", racing)
    with pytest.raises(DefinitionChangedError, match="'gone', which the definition no longer"):
        resume(memory, "wf")
    assert memory.lease("wf") is None


def test_an_unreadable_lease_counts_as_released(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with CheckpointStore(store_path) as store:
        crash_after(store, "wf", 2)
    entry = WorkflowEntry.decode(b"wf", raw_get(store_path, b"wf", b"wf") or b"")
    entry.extras["lease"] = {"owner": "someone"}  # fields missing
    raw_put(store_path, b"wf", b"wf", entry.encode())
    with CheckpointStore(store_path) as store, caplog.at_level(logging.WARNING):
        assert store.lease("wf") is None
        assert resume(store, "wf").state == FINAL
    assert "workflow 'wf': its lease cannot be read; it counts as released" in caplog.text


def test_an_edited_config_file_changes_the_policy_at_the_next_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "lmdbstate.toml").write_text('checkpoint_policy = "every_step"\n')
    watcher = ConfigWatcher(cwd=tmp_path, environ={})
    edited_at = 3

    def edit_then_advance(index: int) -> Step:
        def fn(state: dict[str, Any]) -> dict[str, Any]:
            if index == edited_at:
                # Another mtime than the first write's, even on a coarse clock.
                (tmp_path / "lmdbstate.toml").write_text('checkpoint_policy = "manual"\n')
                os.utime(tmp_path / "lmdbstate.toml", (1, 1))
            return advance(index, state)

        return Step(f"s{index:02d}", fn)

    workflow = Workflow("edited", [edit_then_advance(i) for i in range(STEPS)])
    with (
        caplog.at_level(logging.INFO, logger="lmdbstate"),
        Config(enabled=False).open_store() as store,
    ):
        result = run(store, workflow, "wf", initial(), policy=every_step, reload=watcher)
        checkpoints = triggers(store, "wf")
    assert result.state == FINAL
    # every_step up to the step that edited the file (its checkpoint is where the poll sees the
    # edit), then manual: nothing more but the final checkpoint.
    assert [trigger for _, _, trigger in checkpoints] == ["start"] + ["step"] * (edited_at + 1) + [
        "final"
    ]
    assert "checkpoint policy now manual" in caplog.text


def test_without_an_edit_the_given_policy_stays(memory: CheckpointStore, tmp_path: Path) -> None:
    (tmp_path / "lmdbstate.toml").write_text('checkpoint_policy = "manual"\n')
    watcher = ConfigWatcher(cwd=tmp_path, environ={})
    result = run(memory, SIMPLE, "wf", initial(), policy=every_step, reload=watcher)
    assert len(result.checkpoints) == 11  # as with every_step alone: the file never changed


def test_an_edit_that_keeps_the_policy_changes_nothing(
    memory: CheckpointStore, tmp_path: Path
) -> None:
    (tmp_path / "lmdbstate.toml").write_text('checkpoint_policy = "manual"\n')
    watcher = ConfigWatcher(cwd=tmp_path, environ={})

    def touch_config(state: dict[str, Any]) -> dict[str, Any]:
        (tmp_path / "lmdbstate.toml").write_text('checkpoint_policy = "manual"  # edited\n')
        os.utime(tmp_path / "lmdbstate.toml", (1, 1))
        return advance(0, state)

    steps = [Step("s00", touch_config), *SIMPLE.steps[1:]]
    result = run(
        memory, Workflow("touched", steps), "wf", initial(), policy=every_step, reload=watcher
    )
    assert (
        len(result.checkpoints) == 11
    )  # every_step throughout: the configured policy never changed


def test_a_checkpoint_that_fails_to_write_leaves_the_step_uncounted(
    memory: CheckpointStore,
) -> None:
    """Regression (review): the step was counted before its checkpoint was written."""
    with Checkpointer(memory, "wf", total_steps=3, policy=every_step) as ckpt:
        ckpt.start(initial())
        with pytest.raises(CodecError):
            ckpt.after_step("s00", {"bad": object()})
        assert ckpt.completed == 0
        record = ckpt.after_step("s00", advance(0, initial()))
        assert (record.completed, record.index) == (1, 0)
        assert memory.latest("wf").meta["completed"] == 1  # type: ignore[union-attr]


def test_a_lease_with_fields_of_the_wrong_type_counts_as_released(
    memory: CheckpointStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (review): such a lease used to raise a raw TypeError from acquire_lease."""
    crash_after(memory, "wf", 1)

    def tamper(txn: Any) -> None:
        entry = WorkflowEntry.decode(b"wf", txn.get("wf", b"wf"))
        entry.extras["lease"] = {
            "owner": "x", "pid": "12", "host": "h", "pid_started": None,
            "acquired_ns": 0, "renewed_ns": "0", "ttl_ns": 1,
        }  # fmt: skip
        txn.put("wf", b"wf", entry.encode())

    memory._backend.write(tamper)
    lease = memory.acquire_lease("wf")
    assert lease.pid == os.getpid()
    assert "its lease cannot be read" in caplog.text
