"""The demo's pipeline and its kill harness (``lmdbstate demo`` runs both; see test_cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lmdbstate import MEMORY_PATH, CheckpointStore, RunError, WorkflowExistsError, codec, run
from lmdbstate.demo import INITIAL_STATE, POLICY, WORKFLOW, _run_and_kill, build, run_demo


def test_the_pipeline_is_deterministic_and_a_few_hundred_kib() -> None:
    with CheckpointStore(":memory:") as store:
        first = run(store, build(0.0), "a", dict(INITIAL_STATE), policy=POLICY).state
        second = run(store, build(0.0), "b", {}, policy=POLICY).state  # the defaults
        assert first == second
    assert 200 * 1024 < len(codec.encode(first)) < 400 * 1024
    assert first["report"]["documents"] == 300
    assert first["manifest"]["published"] is True
    assert [step.name for step in WORKFLOW.steps if step.gate] == ["review"]
    assert build(0.0).fingerprint == WORKFLOW.fingerprint


def test_a_run_that_never_reports_the_checkpoint() -> None:
    command = (sys.executable, "-c", "import sys; sys.stderr.write('boom')")
    with pytest.raises(RunError, match="never reported checkpoint 2: boom"):
        _run_and_kill(command, "demo-1", 2, 0.0)


def test_a_line_cut_short_by_the_kill_is_not_counted() -> None:
    code = (
        "import sys, time\n"
        "sys.stderr.write('step 1/3 a: 0.1 s, checkpoint 2 (step)\\nstep 2/3 b: 0.1 s')\n"
        "sys.stderr.flush()\n"
        "time.sleep(30)\n"
    )
    assert _run_and_kill((sys.executable, "-c", code), "demo-1", 2, 0.05)[:2] == (1, (2,))


def test_the_demo_refuses_a_taken_id(store_path: Path) -> None:
    with CheckpointStore(store_path) as store:
        store.put("taken", {})
        with pytest.raises(WorkflowExistsError):
            run_demo(store, "taken")


def test_the_demo_refuses_a_store_in_memory() -> None:
    """Regression (review): the demo's run happens in another process, which cannot see it."""
    with CheckpointStore(MEMORY_PATH) as store, pytest.raises(RunError, match="on disk"):
        run_demo(store, "demo-1")
