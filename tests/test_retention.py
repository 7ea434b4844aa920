"""The retention planner: pure, so its laws are checked with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmdbstate import ConfigError
from lmdbstate.retention import (
    FINISHED,
    CheckpointEntry,
    RetentionPolicy,
    WorkflowEntries,
    plan,
)

NOW = 1_000_000 * 10**9
STATUSES = ("running", "completed", "failed", "cancelled")


@st.composite
def workflow(draw: st.DrawFn, index: int) -> WorkflowEntries:
    count = draw(st.integers(0, 8))
    times = sorted(draw(st.lists(st.integers(0, NOW), min_size=count, max_size=count)))
    gaps = draw(st.lists(st.integers(1, 3), min_size=count, max_size=count))  # deleted seqs
    seqs = [sum(gaps[: n + 1]) for n in range(count)]
    sizes = draw(st.lists(st.integers(1, 5000), min_size=count, max_size=count))
    checkpoints = [CheckpointEntry(*c) for c in zip(seqs, times, sizes, strict=True)]
    updated = max(times, default=0)
    return WorkflowEntries(f"wf-{index}", draw(st.sampled_from(STATUSES)), updated, checkpoints)


stores = st.integers(0, 6).flatmap(lambda n: st.tuples(*(workflow(i) for i in range(n))))
policies = st.builds(
    RetentionPolicy,
    keep_last=st.none() | st.integers(1, 5),
    max_age=st.none() | st.integers(1, 1_000_000),
    max_size=st.none() | st.integers(1, 60_000),
    finished_max_age=st.none() | st.integers(1, 1_000_000),
    keep_finished=st.booleans(),
)


@settings(max_examples=300)
@given(stores, policies)
def test_a_running_workflows_newest_checkpoint_is_never_deleted(
    workflows: tuple[WorkflowEntries, ...], policy: RetentionPolicy
) -> None:
    doomed = {(d.workflow_id, d.seq) for d in plan(workflows, policy, now_ns=NOW).deletions}
    for wf in workflows:
        if wf.checkpoints and (wf.status not in FINISHED or policy.keep_finished):
            expired = (
                wf.status in FINISHED
                and policy.finished_max_age is not None
                and wf.updated_ns <= NOW - policy.finished_max_age * 10**9
            )
            if not expired:
                assert (wf.workflow_id, wf.checkpoints[-1].seq) not in doomed


@settings(max_examples=300)
@given(stores, policies)
def test_the_plan_is_oldest_first_and_honours_every_bound_it_can(
    workflows: tuple[WorkflowEntries, ...], policy: RetentionPolicy
) -> None:
    result = plan(workflows, policy, now_ns=NOW)
    times = [d.created_ns for d in result.deletions]
    assert times == sorted(times)
    doomed = {(d.workflow_id, d.seq) for d in result.deletions}
    total = sum(c.size for wf in workflows for c in wf.checkpoints)
    assert result.bytes_before == total
    assert result.bytes_after == total - sum(d.size for d in result.deletions)
    for wf in workflows:
        kept = [c for c in wf.checkpoints if (wf.workflow_id, c.seq) not in doomed]
        protected = wf.checkpoints[-1].seq if wf.checkpoints else None
        if policy.keep_last is not None:
            assert len([c for c in kept if c.seq != protected]) <= policy.keep_last
        if policy.max_age is not None:
            limit = NOW - policy.max_age * 10**9
            assert all(c.created_ns > limit or c.seq == protected for c in kept)
    if policy.max_size is not None:
        assert result.over_cap == max(0, result.bytes_after - policy.max_size)
        if result.over_cap:  # only what the rules protect is left
            for wf in workflows:
                kept = [c for c in wf.checkpoints if (wf.workflow_id, c.seq) not in doomed]
                assert len(kept) <= 1
    else:
        assert result.over_cap == 0


@settings(max_examples=300)
@given(stores, policies)
def test_size_deletions_stop_at_the_cap_and_take_finished_workflows_first(
    workflows: tuple[WorkflowEntries, ...], policy: RetentionPolicy
) -> None:
    result = plan(workflows, policy, now_ns=NOW)
    by_size = [d for d in result.deletions if d.rule == "max_size"]
    if by_size:
        assert policy.max_size is not None
        status = {wf.workflow_id: wf.status for wf in workflows}
        # The last one taken (finished workflows first, then oldest first) was needed: without
        # it the store would still be above the cap.
        last = max(
            by_size,
            key=lambda d: (
                status[d.workflow_id] not in FINISHED,
                d.created_ns,
                d.workflow_id,
                d.seq,
            ),
        )
        assert result.bytes_after + last.size > policy.max_size
        if any(status[d.workflow_id] not in FINISHED for d in by_size):
            doomed = {(d.workflow_id, d.seq) for d in result.deletions}
            for wf in workflows:
                if wf.status in FINISHED:
                    deletable = wf.checkpoints[:-1] if policy.keep_finished else wf.checkpoints
                    assert all((wf.workflow_id, c.seq) in doomed for c in deletable)


def test_examples() -> None:
    day = 86_400 * 10**9
    done = WorkflowEntries(
        "done", "completed", NOW - 10 * day,
        [CheckpointEntry(1, NOW - 12 * day, 100), CheckpointEntry(2, NOW - 10 * day, 100)],
    )  # fmt: skip
    live = WorkflowEntries(
        "live", "running", NOW,
        [CheckpointEntry(s, NOW - (5 - s) * day, 1000) for s in range(1, 6)],
    )  # fmt: skip
    result = plan([done, live], RetentionPolicy(finished_max_age=7 * 86_400), now_ns=NOW)
    assert [(d.workflow_id, d.seq, d.rule) for d in result.deletions] == [
        ("done", 1, "finished_max_age"),
        ("done", 2, "finished_max_age"),
    ]
    assert result.workflows_removed == ("done",)
    result = plan([done, live], RetentionPolicy(max_size=2300), now_ns=NOW)
    assert [(d.workflow_id, d.seq) for d in result.deletions] == [
        ("done", 1), ("live", 1), ("live", 2), ("live", 3),
    ]  # fmt: skip
    assert (result.bytes_after, result.over_cap) == (2100, 0)
    result = plan([live], RetentionPolicy(max_size=10), now_ns=NOW)
    assert len(result.deletions) == 4  # the newest stays, whatever the cap
    assert result.over_cap == 990
    assert plan([live], RetentionPolicy(keep_last=2), now_ns=NOW).bytes_after == 2000


@pytest.mark.parametrize(
    "options",
    [
        {"keep_last": 0},
        {"keep_last": 1.5},
        {"max_size": -1},
        {"max_age": 0},
        {"finished_max_age": "7d"},
    ],
)
def test_bad_policies_are_config_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RetentionPolicy(**options)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6),
    st.sets(st.integers(1, 10), max_size=4),
    st.sampled_from(STATUSES),
    st.booleans(),
)
def test_the_newest_a_writer_asks_for_and_the_protected_seqs_are_never_deleted(
    keep_newest: int, protect: set[int], status: str, keep_finished: bool
) -> None:
    checkpoints = [CheckpointEntry(seq, seq * 10**9, 100) for seq in range(1, 11)]
    entries = WorkflowEntries(
        "wf", status, 10 * 10**9, checkpoints, keep_newest=keep_newest, protect=frozenset(protect)
    )
    policy = RetentionPolicy(keep_last=1, max_age=1, max_size=1, keep_finished=keep_finished)
    doomed = {d.seq for d in plan([entries], policy, now_ns=NOW).deletions}
    assert not doomed & protect
    if keep_newest > 1 or status not in FINISHED or keep_finished:
        assert not doomed & set(range(11 - keep_newest, 11))
    else:  # a finished workflow without keep_finished, whose writer asked for nothing
        assert doomed == set(range(1, 11)) - protect
