"""Fault: workflows killed with SIGKILL at random instants resume to the uninterrupted result.

Each trial runs a workflow in a real subprocess, kills it a random moment after a step it
reported, and resumes it here by its recorded entrypoint. The leases are exercised across
processes too: a second executor is locked out, and a dead holder's lease is taken over.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmdbstate import CheckpointStore, Policy, WorkflowFinishedError, resume, run
from lmdbstate.leases import process_started
from lmdbstate.policy import every_n_steps, every_step, manual, on_gates, time_based

from .workflows import BLOCKING, PACE, SIMPLE, STEPS, initial, prefix_states

ROOT = Path(__file__).resolve().parent.parent
POLICIES = [every_step, every_n_steps(2), every_n_steps(3), on_gates, manual, time_based(0.01)]

# Prints "<steps completed> <seq of the checkpoint written after it, or ->" once each step and
# its checkpoint are done.
RUNNER = textwrap.dedent(
    """
    import sys
    from lmdbstate import CheckpointStore, Policy, run
    from tests.workflows import KILLABLE, initial

    path, workflow_id, name, interval = sys.argv[1:]
    policy = Policy(name, None if interval == "-" else float(interval) if "." in interval
                    else int(interval))

    def report(record):
        seq = "-" if record.checkpoint is None else record.checkpoint.seq
        print(record.completed, seq, flush=True)

    with CheckpointStore(path) as store:
        run(store, KILLABLE, workflow_id, initial(), policy=policy,
            entrypoint="tests.workflows:KILLABLE", on_step=report)
    """
)


def spawn(code: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, cwd=ROOT)


def decisions(store: CheckpointStore, workflow_id: str) -> set[tuple[int, str]]:
    """(steps completed, trigger) of every checkpoint of the workflow."""
    found = set()
    for info in store.history(workflow_id):
        meta = store.get(workflow_id, info.seq).meta
        found.add((meta["completed"], meta["trigger"]))
    return found


@pytest.fixture(scope="module")
def uninterrupted() -> dict[Policy, set[tuple[int, str]]]:
    """What each policy decides in a run that nothing interrupts."""
    expected = {}
    with CheckpointStore(":memory:") as store:
        for policy in POLICIES:
            run(store, SIMPLE, str(policy), initial(), policy=policy)
            expected[policy] = decisions(store, str(policy))
    return expected


def kill_and_resume(
    store: CheckpointStore, workflow_id: str, policy: Policy, rng: random.Random
) -> tuple[int, int | None]:
    """One trial; returns the steps the child reported done and the checkpoint resumed from."""
    interval = "-" if policy.interval is None else str(policy.interval)
    proc = spawn(RUNNER, store.path, workflow_id, policy.name, interval)
    assert proc.stdout is not None
    wait_for = rng.randrange(1, STEPS)
    lines = [proc.stdout.readline() for _ in range(wait_for)]
    time.sleep(rng.uniform(0, 3 * PACE))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines += proc.stdout.readlines()
    proc.stdout.close()
    reported = [line.split() for line in lines if line.endswith(b"\n")]
    done = int(reported[-1][0])
    acknowledged = [int(seq) for _, seq in reported if seq != b"-"]

    try:
        result = resume(store, workflow_id)
    except WorkflowFinishedError:
        resumed_from = None  # the child finished before the kill
        final = store.latest(workflow_id)
        assert final is not None
        assert final.state == prefix_states(STEPS)[-1]
    else:
        resumed_from = result.resumed_from
        assert result.state == prefix_states(STEPS)[-1]
        assert resumed_from is not None
        # Resumed from the newest checkpoint committed, and every step after it ran again.
        assert resumed_from >= max(acknowledged, default=1)
        restored = store.get(workflow_id, resumed_from).meta["completed"]
        # A kill between a checkpoint's commit and the line reporting its step leaves that
        # step saved but unreported: one step at most.
        assert restored <= done + 1
        assert result.steps_run == SIMPLE.step_names[restored:]

    # No committed checkpoint was lost or changed: seqs run 1..head without a gap, each holds
    # exactly the state after the steps it counts, and each descends from the one before.
    infos = list(store.history(workflow_id))
    assert [info.seq for info in infos] == list(range(1, len(infos) + 1))
    assert set(acknowledged) <= {info.seq for info in infos}
    prefixes = prefix_states(STEPS)
    for info in infos:
        ckpt = store.get(workflow_id, info.seq)
        assert ckpt.state == prefixes[ckpt.meta["completed"]]
        assert ckpt.meta["parent"] == (None if info.seq == 1 else info.seq - 1)
    assert store.workflow(workflow_id).status == "completed"
    return done, resumed_from


def run_trials(path: Path, trials: int, expected: dict[Policy, set[tuple[int, str]]]) -> None:
    rng = random.Random(trials)
    resumed = 0
    with CheckpointStore(path) as store:
        for trial in range(trials):
            policy = POLICIES[trial % len(POLICIES)]
            _, resumed_from = kill_and_resume(store, f"wf-{trial}", policy, rng)
            resumed += resumed_from is not None
            if policy.name != "time_based":  # the others decide by step counts alone
                assert decisions(store, f"wf-{trial}") == expected[policy], policy
        assert store.verify(deep=True).ok
    assert resumed >= trials * 0.6, "too few kills landed before the end of the run"
    print(f"\n{trials} runs killed, {resumed} resumed part-way, all to the uninterrupted result")


def test_workflows_killed_at_random_resume_to_the_same_result(
    tmp_path: Path, uninterrupted: dict[Policy, set[tuple[int, str]]]
) -> None:
    run_trials(tmp_path / "store", 30, uninterrupted)


@pytest.mark.slow
def test_three_hundred_kills(
    tmp_path: Path, uninterrupted: dict[Policy, set[tuple[int, str]]]
) -> None:
    run_trials(tmp_path / "store", 300, uninterrupted)


# -- leases across processes --------------------------------------------------------------------

RESUMER = textwrap.dedent(
    """
    import sys
    from lmdbstate import CheckpointStore, WorkflowLockedError, resume

    with CheckpointStore(sys.argv[1]) as store:
        try:
            resume(store, sys.argv[2])
        except WorkflowLockedError as exc:
            print("locked by", exc.holder.pid, flush=True)
    """
)


@pytest.fixture
def blocked(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A store holding BLOCKING, crashed after its first checkpoint; and its release file."""
    path, release = tmp_path / "store", tmp_path / "release"
    with CheckpointStore(path) as store:
        lease = store.acquire_lease(
            "wf", create=True, extras={"entrypoint": "tests.workflows:BLOCKING"}
        )
        store.put("wf", {"release": str(release)}, meta={"completed": 0}, expect_seq=0)
        store.release_lease(lease)
    yield path, release
    release.touch()


def test_a_second_resume_is_locked_out_and_a_dead_holders_lease_is_taken_over(
    blocked: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    path, release = blocked
    first = spawn(RESUMER, str(path), "wf")
    assert first.stdout is not None
    assert first.stdout.readline() == b"waiting\n"  # inside step "wait", holding the lease

    second = subprocess.run(
        [sys.executable, "-c", RESUMER, str(path), "wf"], capture_output=True, cwd=ROOT, check=True
    )
    assert second.stdout == f"locked by {first.pid}\n".encode()

    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stdout.close()
    release.touch()
    with CheckpointStore(path) as store, caplog.at_level(logging.WARNING, logger="lmdbstate"):
        assert store.lease("wf").pid == first.pid  # type: ignore[union-attr]
        result = resume(store, "wf", workflow=BLOCKING)
        assert result.state == {
            "release": str(release),
            "prepared": True,
            "released": True,
            "finished": True,
        }
        # The killed resume had checkpointed "prepare" (every_step: none was recorded).
        assert (result.resumed_from, result.steps_run) == (2, ("wait", "finish"))
    assert f"taking over the lease of pid {first.pid}" in caplog.text
    assert "which has ended" in caplog.text


HOLDER = textwrap.dedent(
    """
    import sys
    from lmdbstate import CheckpointStore

    with CheckpointStore(sys.argv[1]) as store:
        store.acquire_lease("wf", create=True)
    """
)


def test_the_lease_of_an_exited_unreaped_holder_is_taken_over(tmp_path: Path) -> None:
    assert process_started(os.getpid()) is not None
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "store")])
    # Not waited for: the exited holder stays a zombie, whose pid still answers os.kill.
    deadline = time.monotonic() + 30
    while process_started(holder.pid) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with CheckpointStore(tmp_path / "store") as store:
        assert store.lease("wf").pid == holder.pid  # type: ignore[union-attr]
        assert store.acquire_lease("wf").pid == os.getpid()
    holder.wait()
    assert process_started(holder.pid) is None
