"""The exceptions lmdbstate raises.

Every error the library raises is an ``LmdbStateError``; lmdb's own exceptions never escape
(``env.py`` translates them in one place). Each error carries a ``hint`` saying what to do.

```
LmdbStateError
├── InvalidInputError (ValueError)        the caller passed something the store cannot take
│   ├── InvalidWorkflowIdError
│   ├── InvalidSeqError
│   ├── InvalidStatusError
│   ├── CodecError                        a state value msgpack cannot carry
│   └── ConfigError                       a bad option or setting
├── NotFoundError (LookupError)
│   ├── WorkflowNotFoundError
│   └── CheckpointNotFoundError
├── SequenceConflictError                 expect_seq did not match the head
├── IntegrityError                        a stored record failed its digest or header check
├── MigrationError                        a state or store upgrade cannot run: nothing was written
├── RunError                              an executor cannot start or continue a workflow
│   ├── WorkflowExistsError               run() of an id that already holds checkpoints
│   ├── WorkflowFinishedError             the workflow is completed or cancelled
│   ├── WorkflowLockedError               another live executor holds the workflow's lease
│   ├── DefinitionChangedError            the steps differ from those the workflow started with
│   ├── NotResumableError                 no checkpoint to resume from, or no definition
│   └── StepFailedError                   a step raised; the workflow is marked failed
├── InterchangeError                      an export file or legacy state directory is unusable
└── StoreError                            the store as a whole cannot do what was asked
    ├── StoreNotFoundError
    ├── StoreCorruptedError
    ├── UnsupportedFormatError
    ├── StoreFullError
    ├── StoreDiskFullError
    ├── ReadOnlyStoreError
    ├── StoreClosedError
    ├── ForkedStoreError
    ├── StoreInUseError
    └── StoreConnectionError             the PostgreSQL server cannot be reached, or went away
```
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Lease, Status


class LmdbStateError(Exception):
    """Base of every error lmdbstate raises."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidInputError(LmdbStateError, ValueError):
    """An argument the store cannot accept; nothing was written."""

    hint = "check the argument against the API documentation"


class InvalidWorkflowIdError(InvalidInputError):
    """A workflow id that is not a non-empty str of at most 494 UTF-8 bytes without NUL."""

    hint = "use a non-empty str of at most 494 UTF-8 bytes that contains no NUL character"

    def __init__(self, workflow_id: object, reason: str) -> None:
        super().__init__(f"invalid workflow id {_short_repr(workflow_id)}: {reason}")
        self.workflow_id = workflow_id
        self.reason = reason


class InvalidSeqError(InvalidInputError):
    """A sequence number that is not a positive int."""

    hint = "sequence numbers are ints starting at 1"

    def __init__(self, seq: object) -> None:
        super().__init__(f"invalid sequence number {_short_repr(seq)}: expected an int >= 1")
        self.seq = seq


class InvalidStatusError(InvalidInputError):
    """A workflow status outside the known set."""

    def __init__(self, status: object, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"invalid workflow status {_short_repr(status)}",
            hint=f"use one of: {', '.join(allowed)}",
        )
        self.status = status


class CodecError(InvalidInputError):
    """A value inside a state that the codec cannot encode (or stored bytes it cannot decode)."""

    hint = (
        "states may hold dict, list, tuple, set, frozenset, str, bytes, int, float, bool, None, "
        "datetime, date, UUID and Decimal; convert other objects before saving"
    )

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot encode {path}: {reason}")
        self.path = path
        self.reason = reason


class ConfigError(InvalidInputError):
    """An option or setting with a wrong value or type."""

    hint = "see docs/guide.md for the accepted options"


class NotFoundError(LmdbStateError, LookupError):
    """Something asked for by name is not in the store."""


class WorkflowNotFoundError(NotFoundError):
    """No workflow with this id exists in the store."""

    hint = "run `lmdbstate list` to see the workflows the store holds"

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} not found")
        self.workflow_id = workflow_id


class CheckpointNotFoundError(NotFoundError):
    """The workflow exists but holds no checkpoint with this seq."""

    hint = "run `lmdbstate history WF` to see the checkpoints of a workflow"

    def __init__(self, workflow_id: str, seq: int) -> None:
        super().__init__(f"checkpoint {seq} of workflow {workflow_id!r} not found")
        self.workflow_id = workflow_id
        self.seq = seq


class SequenceConflictError(LmdbStateError):
    """``expect_seq`` did not match the workflow's head: another writer got there first."""

    hint = "reload the latest checkpoint and decide again; another writer advanced this workflow"

    def __init__(
        self, workflow_id: str, expected: int, actual: int, message: str | None = None
    ) -> None:
        super().__init__(
            message or f"workflow {workflow_id!r}: expected head seq {expected}, found {actual}"
        )
        self.workflow_id = workflow_id
        self.expected = expected
        self.actual = actual


class IntegrityError(LmdbStateError):
    """A stored record is damaged: its header or digest does not check out."""

    hint = "other checkpoints are unaffected: `lmdbstate history WF` lists them, `--seq` reads one"

    def __init__(self, workflow_id: str, seq: int, reason: str) -> None:
        super().__init__(f"checkpoint {seq} of workflow {workflow_id!r} is damaged: {reason}")
        self.workflow_id = workflow_id
        self.seq = seq
        self.reason = reason


class MigrationError(LmdbStateError):
    """An upgrade of a state's schema or of the store's format cannot run; nothing was written.

    For a state, ``workflow_id`` and ``seq`` name the checkpoint; for the store they are None.
    """

    hint = (
        "register the missing migration (`@state_migration` or `@store_migration`), or fix the "
        "one that raised; `lmdbstate migrate --check` shows what would run"
    )

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str | None = None,
        seq: int | None = None,
        from_version: int,
        to_version: int,
    ) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.seq = seq
        self.from_version = from_version
        self.to_version = to_version


class RunError(LmdbStateError):
    """An executor cannot start, continue or finish a workflow as asked."""

    hint = "docs/executors.md describes how workflows are run and resumed"

    def __init__(self, workflow_id: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.workflow_id = workflow_id


class WorkflowExistsError(RunError):
    """A new run was asked for under the id of a workflow that already holds checkpoints."""

    hint = "continue it with `lmdbstate resume WF`, or start the new run under another id"

    def __init__(self, workflow_id: str) -> None:
        super().__init__(workflow_id, f"workflow {workflow_id!r} already exists")


class WorkflowFinishedError(RunError):
    """The workflow is completed or cancelled: there is nothing left to run."""

    hint = "`lmdbstate show WF` shows its final state; run it again under a new id"

    def __init__(self, workflow_id: str, status: Status) -> None:
        super().__init__(workflow_id, f"workflow {workflow_id!r} is {status}")
        self.status = status


class WorkflowLockedError(RunError):
    """Another executor that is alive holds the workflow's lease."""

    hint = (
        "wait for the other executor to finish, or stop it: the lease of a holder that died is "
        "taken over at once, and one that is no longer renewed expires"
    )

    def __init__(self, workflow_id: str, holder: Lease | None) -> None:
        if holder is None:
            message = f"workflow {workflow_id!r}: this executor's lease was released meanwhile"
        else:
            message = (
                f"workflow {workflow_id!r} is being run by another executor "
                f"(pid {holder.pid} on {holder.host})"
            )
        super().__init__(workflow_id, message)
        self.holder = holder


class DefinitionChangedError(RunError):
    """The workflow's steps or state schema differ from those its checkpoints were written by."""

    hint = (
        "resume with the definition the workflow started with, or force it (--force, "
        "force=True) to continue after the same step of the new definition"
    )

    def __init__(self, workflow_id: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(
            workflow_id, f"workflow {workflow_id!r} changed definition: {reason}", hint=hint
        )
        self.reason = reason


class NotResumableError(RunError):
    """The workflow holds no checkpoint to resume from, or no way to load its definition."""

    hint = "start it again with `lmdbstate run MODULE:ATTR --id WF`"


class StepFailedError(RunError):
    """A step raised an exception; the workflow is marked failed and can be resumed."""

    hint = "fix the cause; `lmdbstate resume WF` then runs it again from the newest checkpoint"

    def __init__(self, workflow_id: str, step: str, error: Exception) -> None:
        super().__init__(
            workflow_id,
            f"step {step!r} of workflow {workflow_id!r} failed: {type(error).__name__}: {error}",
        )
        self.step = step
        self.error = error


class InterchangeError(LmdbStateError):
    """An export file or a legacy state directory that cannot be read or written as asked."""

    hint = (
        "check the path; `lmdbstate import` reads the files `lmdbstate export` writes, "
        "`lmdbstate import-legacy` reads directories (docs/import-export.md)"
    )

    def __init__(self, message: str, *, path: Path | str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = Path(path)


class StoreError(LmdbStateError):
    """The store as a whole cannot do what was asked."""

    hint = "check the store's path, its permissions and the free disk space"

    def __init__(self, message: str, *, path: Path | str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.path = None if path is None else Path(path)


class StoreNotFoundError(StoreError):
    """There is no store at the given path."""

    hint = "check the path (the CLI takes --store or LMDBSTATE_PATH); a writable open creates one"


class StoreCorruptedError(StoreError):
    """The store's files cannot be read as an lmdbstate store."""

    hint = "keep a copy of the store directory as it is, and open a backup if you have one"


class UnsupportedFormatError(StoreError):
    """The store, or a record in it, was written in a format this version cannot read."""

    hint = "upgrade lmdbstate to a version that knows this format"


class StoreFullError(StoreError):
    """The store reached its maximum map size; nothing of the failed write was kept."""

    hint = "raise max_map_size, or delete workflows you no longer need (`lmdbstate delete`)"


class StoreDiskFullError(StoreError):
    """The filesystem holding the store ran out of space; nothing of the failed write was kept."""

    hint = "free disk space; the store keeps working once there is room"


class ReadOnlyStoreError(StoreError):
    """A write was attempted on a store opened read-only."""

    hint = "open the store with readonly=False to write"


class StoreClosedError(StoreError):
    """The store was used after ``close()``."""

    hint = "open a new CheckpointStore"


class ForkedStoreError(StoreError):
    """The store was opened before ``fork()`` and used, or reopened, in the child."""

    hint = (
        "open stores after forking, or start worker processes with the 'spawn' or "
        "'forkserver' start method"
    )


class StoreInUseError(StoreError):
    """The store is already open in this process with options that cannot be shared."""

    hint = "open the store once per process with the same options, and share that object"


class StoreConnectionError(StoreError):
    """The PostgreSQL server of the store cannot be reached, or the connection was lost.

    Nothing was written, unless the message says the connection was lost during the commit
    itself; the next call connects again.
    """

    hint = "check that the server is up and reachable (host, port, credentials); then retry"


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
