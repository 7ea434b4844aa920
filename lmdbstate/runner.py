"""The reference executor: workflows of named steps, checkpointed by policy, resumed after a crash.

``Checkpointer`` is the part any executor can use: it holds the workflow's lease, asks the policy
after each step whether to checkpoint, writes the checkpoint with ``expect_seq`` and the
metadata resume needs, and on restore reads the policy's counters back from the newest intact
checkpoint. ``run`` and ``resume`` are a small executor built on it. ``docs/executors.md`` shows
both in use.
"""

from __future__ import annotations

import contextvars
import hashlib
import importlib
import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import codec
from .errors import (
    DefinitionChangedError,
    InvalidInputError,
    NotResumableError,
    RunError,
    SequenceConflictError,
    StepFailedError,
    WorkflowFinishedError,
    WorkflowLockedError,
    WorkflowNotFoundError,
)
from .models import Checkpoint, CheckpointInfo, Lease, WorkflowInfo
from .policy import TRIGGER_FINAL, TRIGGER_REQUESTED, TRIGGER_START, Policy, every_step
from .store import DEFAULT_LEASE_TTL, CheckpointStore

if TYPE_CHECKING:
    import asyncio

    from .config import Config, ConfigWatcher

log = logging.getLogger("lmdbstate")

_MESSAGE_LIMIT = 1000  # characters of an error message recorded with a failed workflow
_ENTRYPOINT_HINT = (
    "name a Workflow object as MODULE:ATTRIBUTE (e.g. lmdbstate.demo:WORKFLOW), importable "
    "from the working directory or PYTHONPATH"
)


# -- definitions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a workflow: ``fn(state)`` returns the next state (``fn`` may be ``async def``).

    A gate (``gate=True``) is a step the ``on_gates`` policy checkpoints after: an approval, a
    hand-off, anything costly to repeat.
    """

    name: str
    fn: Callable[[Any], Any]
    gate: bool = False


class Workflow:
    """An ordered list of uniquely named steps.

    Args:
        name: what the workflow is, recorded with every run of it (a run's id is its own).
        steps: the steps, in the order they run.
        schema: the version of the state schema the steps read and write; checkpoints carry it.

    Raises:
        InvalidInputError: no steps, an item that is not a ``Step``, a step name that is empty,
            not a str or repeated, or a schema that is not an int >= 1.
    """

    __slots__ = ("fingerprint", "name", "schema", "step_names", "steps")

    def __init__(self, name: str, steps: Sequence[Step], *, schema: int = 1) -> None:
        if type(name) is not str or not name:
            raise InvalidInputError(f"invalid workflow name {name!r}: expected a non-empty str")
        if not steps or not all(isinstance(step, Step) for step in steps):
            raise InvalidInputError(f"workflow {name!r} needs a non-empty sequence of Step")
        names = tuple(step.name for step in steps)
        for step_name in names:
            if type(step_name) is not str or not step_name or names.count(step_name) > 1:
                raise InvalidInputError(
                    f"workflow {name!r}: invalid step name {step_name!r}: "
                    "expected a non-empty str, unique within the workflow"
                )
        if type(schema) is not int or schema < 1:
            raise InvalidInputError(f"invalid schema {schema!r}: expected an int >= 1")
        self.name = name
        self.steps = tuple(steps)
        self.step_names = names
        self.schema = schema
        self.fingerprint = hashlib.blake2b(codec.encode(list(names)), digest_size=8).hexdigest()
        """Identifies the sequence of step names; recorded when a run starts."""

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, {len(self.steps)} steps, schema={self.schema})"


def load_workflow(entrypoint: str) -> Workflow:
    """The ``Workflow`` object an entrypoint ``module:attribute`` names, importing the module.

    Raises:
        InvalidInputError: a malformed entrypoint, a module that fails to import, a missing
            attribute, or an object that is not a ``Workflow``.
    """
    module_name, _, attribute = entrypoint.partition(":")
    if not module_name or not attribute:
        raise InvalidInputError(
            f"invalid entrypoint {entrypoint!r}: expected MODULE:ATTRIBUTE", hint=_ENTRYPOINT_HINT
        )
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (Exception, SystemExit) as exc:  # importing runs the user's module: anything goes
        raise InvalidInputError(
            f"cannot load entrypoint {entrypoint!r}: {type(exc).__name__}: {exc}",
            hint=_ENTRYPOINT_HINT,
        ) from exc
    if not isinstance(target, Workflow):
        raise InvalidInputError(
            f"entrypoint {entrypoint!r} is not a Workflow (its type is {type(target).__name__!r})",
            hint=_ENTRYPOINT_HINT,
        )
    return target


# -- the checkpointer -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A completed step, as ``Checkpointer.after_step`` saw it."""

    step: str | int
    index: int
    """The step's position, from 0."""
    completed: int
    """Steps done, this one included."""
    total: int
    started_ns: int | None
    finished_ns: int
    trigger: str | None
    """Why a checkpoint was written after the step (see ``lmdbstate.policy``); None if none was."""
    checkpoint: CheckpointInfo | None


_ACTIVE: contextvars.ContextVar[Checkpointer | None] = contextvars.ContextVar(
    "lmdbstate_checkpointer", default=None
)


class Checkpointer:
    """Checkpoints of one workflow at its step boundaries, for any executor.

    Call ``restore()`` (or, for a new workflow, ``start(state)``), then ``after_step(...)``
    after each step, then ``complete()``. Used as a context manager, an exception leaving the
    block marks the workflow failed (recording the error) and any exit releases the lease, so
    that the workflow can be resumed at once.

    Each checkpoint's ``meta`` holds ``trigger``, ``step_index``, ``completed``, ``total``,
    ``progress`` (completed / total), ``started_ns`` and ``finished_ns`` of the step, and
    ``parent`` (the seq of the checkpoint the state descends from); its ``step`` is the step.

    Args:
        store: the store.
        workflow_id: the workflow.
        total_steps: how many steps the workflow has: the checkpoint after the last one is
            always written (trigger ``final``), as is the first (trigger ``start``).
        policy: when to checkpoint after the other steps.
        schema: the state schema version the checkpoints are written with.
        lease_ttl: seconds the lease lasts; it is renewed at a step boundary once half of it
            has passed, so a single step longer than this lets another executor take over.

    Raises:
        InvalidInputError: ``total_steps`` is not an int >= 1.
    """

    def __init__(
        self,
        store: CheckpointStore,
        workflow_id: str,
        *,
        total_steps: int,
        policy: Policy = every_step,
        schema: int = 1,
        lease_ttl: float = DEFAULT_LEASE_TTL,
    ) -> None:
        if type(total_steps) is not int or total_steps < 1:
            raise InvalidInputError(f"invalid total_steps {total_steps!r}: expected an int >= 1")
        self.store = store
        self.workflow_id = workflow_id
        self.total_steps = total_steps
        self.policy = policy
        self.schema = schema
        self._ttl = lease_ttl
        self._lease: Lease | None = None
        self._head = 0  # the workflow's head seq: the expect_seq of the next checkpoint
        self._parent: int | None = None  # the checkpoint the state in hand descends from
        self._completed = 0
        self._last_completed = 0  # steps done at the last checkpoint ...
        self._last_ns = 0  # ... and when it was written: what the policy counts from
        self._requested = False

    @property
    def lease(self) -> Lease | None:
        """The lease held, or None before ``start``/``restore`` and after the run ended."""
        return self._lease

    @property
    def completed(self) -> int:
        """Steps done: 0 after ``start``, read from the checkpoint by ``restore``."""
        return self._completed

    def continue_at(self, completed: int) -> None:
        """Count the restored checkpoint as taken after ``completed`` steps.

        For an executor continuing a changed definition, in which the step the checkpoint was
        taken after has moved.
        """
        self._completed = self._last_completed = completed

    def start(self, state: object, *, extras: Mapping[str, object] | None = None) -> CheckpointInfo:
        """Begin a new workflow: take its lease and write its first checkpoint, of ``state``.

        Args:
            state: the state the first step starts from.
            extras: fields to record with the workflow (see ``CheckpointStore.acquire_lease``).

        Raises:
            WorkflowExistsError: the workflow already holds checkpoints.
            WorkflowLockedError: another executor holds its lease.
            CodecError: ``state`` cannot be encoded; nothing is written.
        """
        # Refuse a state that cannot be saved before the lease makes the workflow exist: a
        # "running" workflow without its first checkpoint could not be resumed.
        codec.encode(state)
        self._lease = self.store.acquire_lease(
            self.workflow_id, ttl=self._ttl, create=True, extras=extras
        )
        try:
            return self._write(state, None, None, TRIGGER_START, None, None, self._completed)
        except BaseException:
            self.release()
            raise

    def restore(self, *, extras: Mapping[str, object] | None = None) -> Checkpoint | None:
        """Take the workflow's lease and return its newest intact checkpoint.

        Its state is upgraded to the current schema of the workflow's name through the
        registered ``state_migration`` functions (see ``CheckpointStore.latest``). Damaged
        newer checkpoints are skipped (the result's ``damaged_newer`` names them). The
        policy's counters and ``completed`` are read from the checkpoint's metadata. Returns
        None, holding no lease, when the workflow does not exist or holds no checkpoint: then
        ``start`` it.

        Raises:
            WorkflowFinishedError: the workflow is completed or cancelled.
            WorkflowLockedError: another executor holds its lease.
            NotResumableError: the newest intact checkpoint was not written by a Checkpointer.
            IntegrityError: every checkpoint of the workflow is damaged.
            MigrationError: its state cannot be upgraded to the current schema.
        """
        try:
            if not self.store.workflow(self.workflow_id).checkpoints:
                return None  # nothing to restore; taking the lease would mark it running
            self._lease = self.store.acquire_lease(self.workflow_id, ttl=self._ttl, extras=extras)
        except WorkflowNotFoundError:
            return None
        try:
            ckpt = self.store.latest(self.workflow_id, migrate=True)
            completed = None if ckpt is None else _steps_done(self.workflow_id, ckpt)
        except BaseException:
            self.release()
            raise
        if ckpt is None or completed is None:
            self.release()
            return None
        self._head = max((ckpt.seq, *ckpt.damaged_newer))
        self._parent = ckpt.seq
        self._completed = self._last_completed = completed
        self._last_ns = ckpt.created_ns
        return ckpt

    def force(self) -> None:
        """Checkpoint after the step in progress (the next ``after_step``), whatever the policy."""
        self._requested = True

    def after_step(
        self,
        step: str | int,
        state: object,
        *,
        gate: bool = False,
        started_ns: int | None = None,
        finished_ns: int | None = None,
    ) -> StepRecord:
        """Count a completed step, and checkpoint ``state`` if the policy (or ``force``) says so.

        Args:
            step: the step's name (or index).
            state: the state the step produced.
            gate: the step is a gate (for ``on_gates``).
            started_ns: when the step started, for the metadata.
            finished_ns: when it finished; now by default.

        Raises:
            RunError: no lease is held, or every step is already done.
            WorkflowLockedError: the lease was taken over (found when renewing it).
            SequenceConflictError: another writer advanced the workflow.
            CodecError: the state holds something the codec cannot carry.
        """
        lease = self._held()
        if self._completed >= self.total_steps:
            raise RunError(
                self.workflow_id,
                f"workflow {self.workflow_id!r}: all {self.total_steps} steps are already done",
            )
        finished = time.time_ns() if finished_ns is None else finished_ns
        if finished - lease.renewed_ns >= lease.ttl_ns // 2:
            self._lease = self.store.renew_lease(lease)
        index = self._completed
        completed = index + 1
        trigger: str | None
        if completed == self.total_steps:
            trigger = TRIGGER_FINAL
        elif self._requested:
            trigger = TRIGGER_REQUESTED
        else:
            trigger = self.policy.decide(
                completed=completed,
                gate=gate,
                last_completed=self._last_completed,
                last_ns=self._last_ns,
                now_ns=finished,
            )
        info = None
        if trigger is not None:
            info = self._write(state, step, index, trigger, started_ns, finished, completed)
        # Counted only now: a checkpoint that failed to write leaves the step uncounted, so
        # calling after_step again for it does not count it twice.
        self._completed = completed
        return StepRecord(
            step, index, completed, self.total_steps, started_ns, finished, trigger, info
        )

    def _write(
        self,
        state: object,
        step: str | int | None,
        index: int | None,
        trigger: str,
        started_ns: int | None,
        finished_ns: int | None,
        completed: int,
    ) -> CheckpointInfo:
        meta: dict[str, Any] = {
            "trigger": trigger,
            "step_index": index,
            "completed": completed,
            "total": self.total_steps,
            "progress": completed / self.total_steps,
            "started_ns": started_ns,
            "finished_ns": finished_ns,
            "parent": self._parent,
        }
        info = self.store.put(
            self.workflow_id, state, step=step, schema=self.schema, meta=meta,
            expect_seq=self._head,
        )  # fmt: skip
        self._head = self._parent = info.seq
        self._last_completed = completed
        self._last_ns = info.created_ns
        self._requested = False
        return info

    def _held(self) -> Lease:
        if self._lease is None:
            raise RunError(
                self.workflow_id,
                f"workflow {self.workflow_id!r}: this Checkpointer holds no lease",
                hint="call start() or restore() first; a completed or failed run holds none",
            )
        return self._lease

    def complete(self) -> WorkflowInfo:
        """Mark the workflow completed and release the lease.

        Raises:
            RunError: no lease is held.
            WorkflowLockedError: the lease was taken over meanwhile.
        """
        lease, self._lease = self._held(), None
        return self.store.release_lease(lease, status="completed")

    def fail(self, error: BaseException, *, step: str | int | None = None) -> WorkflowInfo:
        """Mark the workflow failed, recording the error, and release the lease.

        The error is kept in the workflow's extras as ``error``: ``type``, ``message``, ``step``
        and ``at_ns``. ``resume`` retries from the newest checkpoint.

        Raises:
            RunError: no lease is held.
            WorkflowLockedError: the lease was taken over meanwhile.
        """
        lease, self._lease = self._held(), None
        record = {
            "type": type(error).__name__,
            "message": str(error)[:_MESSAGE_LIMIT],
            "step": step,
            "at_ns": time.time_ns(),
        }
        return self.store.release_lease(lease, status="failed", extras={"error": record})

    def release(self) -> None:
        """Release the lease if one is held, leaving the workflow resumable; idempotent.

        A lease taken over meanwhile is not another executor's to release: that is ignored.
        """
        lease, self._lease = self._lease, None
        if lease is not None:
            with suppress(WorkflowLockedError):
                self.store.release_lease(lease)

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        lost = isinstance(exc, SequenceConflictError | WorkflowLockedError)
        if self._lease is None or not isinstance(exc, Exception) or lost:
            self.release()  # an interrupt, or the workflow is no longer ours: status as it is
        else:
            with suppress(WorkflowLockedError):
                self.fail(exc)


def _steps_done(workflow_id: str, ckpt: Checkpoint) -> int:
    """The step count a Checkpointer recorded in a checkpoint's metadata.

    Raises:
        NotResumableError: the checkpoint has none: it was not written by a Checkpointer.
    """
    completed = ckpt.meta.get("completed")
    if type(completed) is not int or completed < 0:
        raise NotResumableError(
            workflow_id,
            f"checkpoint {ckpt.seq} of workflow {workflow_id!r} has no step count in its "
            "metadata: it was not written by a Checkpointer",
            hint="resume it with the executor that wrote it",
        )
    return completed


def request_checkpoint() -> None:
    """Ask, from inside a step that ``run`` or ``resume`` runs, for a checkpoint after it.

    The ``manual`` policy checkpoints only then (and at the first and final step).

    Raises:
        InvalidInputError: not called from inside such a step.
    """
    checkpointer = _ACTIVE.get()
    if checkpointer is None:
        raise InvalidInputError("request_checkpoint() was called outside a step run by lmdbstate")
    checkpointer.force()


# -- the reference executor -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunResult:
    """What ``run`` or ``resume`` did; the workflow is completed when it returns."""

    workflow_id: str
    state: Any
    """The final state."""
    resumed_from: int | None
    """The seq of the checkpoint the run continued from; None for ``run``."""
    skipped_damaged: tuple[int, ...]
    """Seqs of damaged newer checkpoints that resume fell back past."""
    steps_run: tuple[str, ...]
    """The steps this call ran: for ``resume``, every step after the checkpoint resumed from,
    including those a killed run had done without checkpointing them."""
    checkpoints: tuple[CheckpointInfo, ...]
    """The checkpoints this call wrote, oldest first."""


def _definition(workflow: Workflow) -> dict[str, object]:
    return {
        "name": workflow.name,
        "fingerprint": workflow.fingerprint,
        "steps": list(workflow.step_names),
        "schema": workflow.schema,
    }


def run(
    store: CheckpointStore,
    workflow: Workflow,
    workflow_id: str,
    initial_state: object,
    *,
    policy: Policy = every_step,
    entrypoint: str | None = None,
    lease_ttl: float = DEFAULT_LEASE_TTL,
    on_step: Callable[[StepRecord], None] | None = None,
    reload: ConfigWatcher | None = None,
) -> RunResult:
    """Start a new workflow and run every step, checkpointing as ``policy`` says.

    The workflow's definition (name, step names and their fingerprint, schema), the policy and
    the entrypoint are recorded with it, so ``resume`` needs only the id.

    Args:
        store: the store.
        workflow: the steps.
        workflow_id: a new id.
        initial_state: the state the first step gets; it is the first checkpoint.
        policy: when to checkpoint; resume keeps it.
        entrypoint: ``module:attribute`` naming ``workflow``, for ``resume`` (and the CLI) to
            load it by; it must name the same definition.
        lease_ttl: see ``Checkpointer``.
        on_step: called after each step (and its checkpoint, when one is written).
        reload: polled after each checkpoint: when its file was edited, the checkpoint policy
            of the new configuration applies from the next step on.

    Raises:
        WorkflowExistsError: the id already holds checkpoints.
        WorkflowLockedError: another executor is starting it.
        StepFailedError: a step raised; the workflow is marked failed (``resume`` retries it).
        InvalidInputError: an entrypoint that does not load ``workflow``'s definition.
        LmdbStateError: the store failed (the workflow is then marked failed too, if it can be).
    """
    if entrypoint is not None and load_workflow(entrypoint).fingerprint != workflow.fingerprint:
        raise InvalidInputError(
            f"entrypoint {entrypoint!r} names another definition than workflow {workflow.name!r}",
            hint=_ENTRYPOINT_HINT,
        )
    checkpointer = Checkpointer(
        store, workflow_id, total_steps=len(workflow.steps), policy=policy,
        schema=workflow.schema, lease_ttl=lease_ttl,
    )  # fmt: skip
    recorded = {
        "entrypoint": entrypoint,
        "definition": _definition(workflow),
        "policy": {"name": policy.name, "interval": policy.interval},
    }
    first = checkpointer.start(initial_state, extras=recorded)
    return _execute(checkpointer, workflow, initial_state, on_step, reload, (first,), None, ())


def resume(
    store: CheckpointStore,
    workflow_id: str,
    *,
    workflow: Workflow | None = None,
    force: bool = False,
    policy: Policy | None = None,
    lease_ttl: float = DEFAULT_LEASE_TTL,
    on_step: Callable[[StepRecord], None] | None = None,
    reload: ConfigWatcher | None = None,
) -> RunResult:
    """Continue a workflow from its newest intact checkpoint and run its remaining steps.

    Damaged newer checkpoints are skipped and reported. Every step after the checkpoint runs
    again, including any the interrupted run did without checkpointing. A failed workflow is
    retried from there too.

    Args:
        store: the store.
        workflow_id: the workflow.
        workflow: its definition; by default the one its recorded entrypoint names.
        force: continue even though the definition changed: after the step the checkpoint was
            taken after, wherever that step now stands, with the state as it was saved.
        policy: when to checkpoint; by default the policy the workflow was started with.
        lease_ttl: see ``Checkpointer``.
        on_step: called after each step (and its checkpoint, when one is written).
        reload: polled after each checkpoint: when its file was edited, the checkpoint policy
            of the new configuration applies from the next step on.

    Raises:
        WorkflowNotFoundError: no such workflow.
        WorkflowFinishedError: it is completed or cancelled.
        DefinitionChangedError: its steps or schema changed, and ``force`` is False; or, even
            with ``force``, the step to continue after is no longer in the definition.
        NotResumableError: it holds no checkpoint, or no entrypoint is recorded and no
            ``workflow`` given.
        WorkflowLockedError: another executor is running it.
        StepFailedError: a step raised; the workflow is marked failed again.
        IntegrityError: every checkpoint of the workflow is damaged.
        MigrationError: its state cannot be upgraded to the current schema.
    """
    info = store.workflow(workflow_id)
    if info.status in ("completed", "cancelled"):
        raise WorkflowFinishedError(workflow_id, info.status)
    recorded = store.workflow_extras(workflow_id)
    if workflow is None:
        workflow = _recorded_workflow(workflow_id, recorded)
    definition = recorded.get("definition")
    if (
        not force
        and isinstance(definition, dict)
        and definition.get("fingerprint") != workflow.fingerprint
    ):
        raise DefinitionChangedError(workflow_id, _changes(definition, workflow))
    if policy is None:
        stored = recorded.get("policy")
        # None recorded (or not a map): the default. A bad name or interval is a ConfigError.
        policy = every_step
        if isinstance(stored, dict):
            name: Any = stored.get("name")
            policy = Policy(name, stored.get("interval"))
    # Look before taking the lease, which marks the workflow running: a refused resume changes
    # nothing. The lease then guards the checkpoint actually resumed from, looked at again.
    _position(workflow_id, workflow, store.latest(workflow_id, migrate=True), force)
    checkpointer = Checkpointer(
        store, workflow_id, total_steps=len(workflow.steps), policy=policy,
        schema=workflow.schema, lease_ttl=lease_ttl,
    )  # fmt: skip
    ckpt = checkpointer.restore(extras={"error": None, "definition": _definition(workflow)})
    try:
        first = _position(workflow_id, workflow, ckpt, force)
    except RunError:
        checkpointer.release()
        raise
    assert ckpt is not None
    checkpointer.continue_at(first)
    log.info(
        "workflow %r: resuming from checkpoint %d; steps to run: %s",
        workflow_id, ckpt.seq, ", ".join(workflow.step_names[first:]) or "none",
    )  # fmt: skip
    return _execute(
        checkpointer, workflow, ckpt.state, on_step, reload, (), ckpt.seq, ckpt.damaged_newer
    )


def _follow_config(
    checkpointer: Checkpointer, reload: ConfigWatcher, previous: Config | None
) -> Config:
    """Adopt the checkpoint policy of an edited configuration file; return the config in force.

    Only an edit that changes the configured policy counts: a policy given explicitly (or
    recorded when the workflow started) stays in force until then.
    """
    current = reload.poll()
    if current is not previous:
        policy = Policy.from_config(current)
        # Only a change of the configured policy counts: any edit of either file reloads it.
        if (previous is None or policy != Policy.from_config(previous)) and (
            policy != checkpointer.policy
        ):
            log.info(
                "workflow %r: the configuration changed; checkpoint policy now %s",
                checkpointer.workflow_id, policy.name
                + ("" if policy.interval is None else f" ({policy.interval})"),
            )  # fmt: skip
            checkpointer.policy = policy
    return current


def _recorded_workflow(workflow_id: str, recorded: dict[str, Any]) -> Workflow:
    entrypoint = recorded.get("entrypoint")
    if not isinstance(entrypoint, str):
        raise NotResumableError(
            workflow_id,
            f"workflow {workflow_id!r} has no entrypoint recorded",
            hint="it was started without one: resume it from Python, giving its Workflow",
        )
    return load_workflow(entrypoint)


def _changes(definition: dict[str, Any], workflow: Workflow) -> str:
    steps = definition.get("steps")
    before = f"steps {', '.join(map(str, steps))}" if isinstance(steps, list) else "other steps"
    return (
        f"it started with {before} (fingerprint {definition.get('fingerprint')}); "
        f"the definition now has {', '.join(workflow.step_names)} "
        f"(fingerprint {workflow.fingerprint})"
    )


def _position(workflow_id: str, workflow: Workflow, ckpt: Checkpoint | None, force: bool) -> int:
    """The index of the step to continue with after ``ckpt``.

    Raises:
        NotResumableError: there is no checkpoint, or it was not written by a Checkpointer.
        DefinitionChangedError: the definition cannot continue from it.
    """
    if ckpt is None:
        raise NotResumableError(
            workflow_id, f"workflow {workflow_id!r} holds no checkpoint to resume from"
        )
    _steps_done(workflow_id, ckpt)
    if not force and ckpt.schema != workflow.schema:
        raise DefinitionChangedError(
            workflow_id,
            f"checkpoint {ckpt.seq} holds state of schema {ckpt.schema}; "
            f"the steps now use schema {workflow.schema}",
            hint=f"register @state_migration({workflow.name!r}, from_version=...) functions "
            f"up to schema {workflow.schema}, or resume with force",
        )
    if ckpt.step is None:
        return 0  # the first checkpoint: the state the workflow started from
    if ckpt.step not in workflow.step_names:
        raise DefinitionChangedError(
            workflow_id,
            f"checkpoint {ckpt.seq} was taken after step {ckpt.step!r}, "
            "which the definition no longer has",
            hint="resume with a definition that has the step: without it, where to continue "
            "cannot be told",
        )
    return workflow.step_names.index(str(ckpt.step)) + 1


def _execute(
    checkpointer: Checkpointer,
    workflow: Workflow,
    state: Any,
    on_step: Callable[[StepRecord], None] | None,
    reload: ConfigWatcher | None,
    written: tuple[CheckpointInfo, ...],
    resumed_from: int | None,
    skipped_damaged: tuple[int, ...],
) -> RunResult:
    """Run the steps from ``checkpointer.completed`` on, then mark the workflow completed."""
    first = checkpointer.completed
    checkpoints = list(written)
    config = None if reload is None else reload.config
    token = _ACTIVE.set(checkpointer)
    try:
        with checkpointer, ExitStack() as stack:
            loop: asyncio.Runner | None = None  # one event loop for every async step of a run
            for step in workflow.steps[first:]:
                started_ns = time.time_ns()
                try:
                    state = step.fn(state)
                    if inspect.iscoroutine(state):
                        if loop is None:
                            import asyncio  # only for async steps: it takes a while to import

                            loop = stack.enter_context(asyncio.Runner())
                        state = loop.run(state)
                except Exception as exc:
                    checkpointer.fail(exc, step=step.name)
                    raise StepFailedError(checkpointer.workflow_id, step.name, exc) from exc
                record = checkpointer.after_step(
                    step.name, state, gate=step.gate, started_ns=started_ns
                )
                if record.checkpoint is not None:
                    checkpoints.append(record.checkpoint)
                    if reload is not None:
                        config = _follow_config(checkpointer, reload, config)
                if on_step is not None:
                    on_step(record)
            checkpointer.complete()
    finally:
        _ACTIVE.reset(token)
    return RunResult(
        checkpointer.workflow_id, state, resumed_from, skipped_damaged,
        workflow.step_names[first:], tuple(checkpoints),
    )  # fmt: skip
