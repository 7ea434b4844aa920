"""Retention: which checkpoints a garbage collection deletes (planning is pure, no I/O).

The planner takes what the ``wf`` and ``age`` indexes say of each workflow and a
``RetentionPolicy``, and returns the exact deletions, oldest first. Its rules, in order:

1. ``finished_max_age``: a finished workflow (completed, failed, cancelled) not updated for that
   long is deleted whole.
2. ``keep_last``: every workflow keeps its newest N checkpoints; older ones go.
3. ``max_age``: checkpoints older than that go.
4. ``max_size``: while the store is above the cap, the oldest remaining checkpoints go,
   finished workflows' before running ones'.

Whatever the rules say, a running workflow keeps its newest checkpoint (or, when that one is
damaged, the newest intact one, ``resume_seq``: what ``resume`` loads), and with
``keep_finished`` a finished workflow keeps its final one unless rule 1 deletes it whole. When
the cap cannot be met within that, the plan deletes what it may and says how far above the cap
the store stays.

The sizes the planner weighs are whatever its caller gives: ``collector`` gives each
checkpoint its share of the store's live bytes, so that ``max_size`` caps the pages in use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .errors import ConfigError

_NS = 1_000_000_000
FINISHED = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How much history to keep. Every bound is optional; ``None`` means no such bound.

    Args:
        keep_last: checkpoints each workflow keeps, newest first (>= 1).
        max_age: seconds a checkpoint is kept.
        max_size: bytes the store's records may take in all.
        finished_max_age: seconds a finished workflow is kept after its last update.
        keep_finished: keep a finished workflow's final checkpoint whatever ``keep_last``,
            ``max_age`` and ``max_size`` say (``finished_max_age`` still deletes it whole).

    Raises:
        ConfigError: a bound that is not a positive number (or, for ``keep_last`` and
            ``max_size``, not an int).
    """

    keep_last: int | None = None
    max_age: float | None = None
    max_size: int | None = None
    finished_max_age: float | None = None
    keep_finished: bool = True

    def __post_init__(self) -> None:
        for name in ("keep_last", "max_size"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ConfigError(f"retention {name} must be an int >= 1, not {value!r}")
        for name in ("max_age", "finished_max_age"):
            value = getattr(self, name)
            if value is not None and (type(value) not in (int, float) or not value > 0):
                raise ConfigError(
                    f"retention {name} must be a number of seconds > 0, not {value!r}"
                )


@dataclass(frozen=True, slots=True)
class CheckpointEntry:
    """One checkpoint as the indexes describe it."""

    seq: int
    created_ns: int
    size: int


@dataclass(frozen=True, slots=True)
class WorkflowEntries:
    """One workflow as the indexes describe it; ``checkpoints`` in seq order."""

    workflow_id: str
    status: str
    updated_ns: int
    checkpoints: Sequence[CheckpointEntry]
    resume_seq: int | None = None
    """The checkpoint a resume would load when it is not the newest (the newer ones are
    damaged): the planner then keeps that one instead of the newest."""
    keep_newest: int = 1
    """Checkpoints the workflow's writer needs kept, newest first, whatever the bounds say
    (the ``retention_keep`` field of its entry: the LangGraph saver asks for the ancestors a
    ``DeltaChannel`` rebuilds its value from). ``finished_max_age`` still deletes it whole."""
    protect: frozenset[int] = frozenset()
    """Seqs kept whatever the bounds say (the records of a workflow that follows another,
    kept with that workflow's; see ``collector``)."""


@dataclass(frozen=True, slots=True)
class Deletion:
    """A checkpoint the plan deletes, and the rule that chose it."""

    workflow_id: str
    seq: int
    created_ns: int
    size: int
    rule: str


@dataclass(frozen=True, slots=True)
class GcPlan:
    """The deletions of one garbage collection, oldest first."""

    deletions: tuple[Deletion, ...]
    workflows_removed: tuple[str, ...]
    """Workflows ``finished_max_age`` deletes whole (their index entries go too). Other rules
    never delete an entry: a finished workflow whose checkpoints all go keeps its status."""
    bytes_before: int
    bytes_after: int
    over_cap: int
    """Bytes still above ``max_size`` after the plan (0 when the cap is met or not set)."""


@dataclass
class _Candidate:
    workflow: WorkflowEntries
    protected: frozenset[int]
    """The seqs the rules may not delete."""
    doomed: dict[int, str] = field(default_factory=dict)
    """seq -> the rule deleting it."""
    whole: bool = False
    """True when ``finished_max_age`` deletes the workflow, entry and all."""


def plan(workflows: Iterable[WorkflowEntries], policy: RetentionPolicy, *, now_ns: int) -> GcPlan:
    """The deletions ``policy`` asks for, given every workflow's checkpoints, at ``now_ns``."""
    candidates = [_candidate(workflow, policy, now_ns) for workflow in workflows]
    for candidate in candidates:
        _by_count_and_age(candidate, policy, now_ns)
    total = sum(c.size for candidate in candidates for c in candidate.workflow.checkpoints)
    after = total - sum(_doomed_bytes(candidate) for candidate in candidates)
    if policy.max_size is not None and after > policy.max_size:
        after = _by_size(candidates, after, policy.max_size)
    deletions = sorted(
        (
            Deletion(candidate.workflow.workflow_id, c.seq, c.created_ns, c.size, rule)
            for candidate in candidates
            for c in candidate.workflow.checkpoints
            if (rule := candidate.doomed.get(c.seq)) is not None
        ),
        key=lambda d: (d.created_ns, d.workflow_id, d.seq),
    )
    removed = tuple(candidate.workflow.workflow_id for candidate in candidates if candidate.whole)
    over = 0 if policy.max_size is None else max(0, after - policy.max_size)
    return GcPlan(tuple(deletions), removed, total, after, over)


def _candidate(workflow: WorkflowEntries, policy: RetentionPolicy, now_ns: int) -> _Candidate:
    finished = workflow.status in FINISHED
    newest = workflow.checkpoints[-1].seq if workflow.checkpoints else None
    if (
        finished
        and policy.finished_max_age is not None
        and workflow.updated_ns <= now_ns - policy.finished_max_age * _NS
    ):
        everything = {c.seq: "finished_max_age" for c in workflow.checkpoints}
        return _Candidate(workflow, frozenset(), everything, whole=True)
    if workflow.resume_seq is not None:
        newest = workflow.resume_seq
    kept = {c.seq for c in workflow.checkpoints[-workflow.keep_newest :]} | workflow.protect
    if newest is not None and (not finished or policy.keep_finished):
        kept.add(newest)
    elif workflow.keep_newest <= 1:
        kept = set(workflow.protect)
    return _Candidate(workflow, frozenset(kept))


def _by_count_and_age(candidate: _Candidate, policy: RetentionPolicy, now_ns: int) -> None:
    checkpoints = candidate.workflow.checkpoints
    if policy.keep_last is not None:
        for c in checkpoints[: max(0, len(checkpoints) - policy.keep_last)]:
            _doom(candidate, c.seq, "keep_last")
    if policy.max_age is not None:
        limit = now_ns - policy.max_age * _NS
        for c in checkpoints:
            if c.created_ns <= limit:
                _doom(candidate, c.seq, "max_age")


def _doom(candidate: _Candidate, seq: int, rule: str) -> None:
    if seq not in candidate.protected:
        candidate.doomed.setdefault(seq, rule)


def _doomed_bytes(candidate: _Candidate) -> int:
    return sum(c.size for c in candidate.workflow.checkpoints if c.seq in candidate.doomed)


def _by_size(candidates: list[_Candidate], size: int, cap: int) -> int:
    """Doom the oldest remaining checkpoints, finished workflows first, down to ``cap``."""
    order = sorted(
        (
            (
                candidate.workflow.status not in FINISHED,
                c.created_ns,
                candidate.workflow.workflow_id,
                c.seq,
                c.size,
                candidate,
            )
            for candidate in candidates
            for c in candidate.workflow.checkpoints
            if c.seq not in candidate.doomed and c.seq not in candidate.protected
        ),
        key=lambda row: row[:4],
    )
    for _, _, _, seq, checkpoint_size, candidate in order:
        if size <= cap:
            break
        candidate.doomed[seq] = "max_size"
        size -= checkpoint_size
    return size
