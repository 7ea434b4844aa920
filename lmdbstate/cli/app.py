"""The Typer app: thin commands over the library; rendering lives in ``render.py``.

Exit codes: 0 ok, 1 error (one line on stderr, with a hint), 2 usage, 3 damage found.
"""

import enum
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from ..errors import IntegrityError, LmdbStateError, StoreCorruptedError
from ..store import DEFAULT_PATH, CheckpointStore
from ..store import recover as recover_store
from . import render

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DAMAGE = 3


# No ``help=`` here: the root callback's docstring is the top-level help, exit codes included.
app = typer.Typer(
    name="lmdbstate",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


class StatusName(enum.StrEnum):
    """Workflow statuses, as the CLI accepts them."""

    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


StorePath = Annotated[
    Path,
    typer.Option(
        "--store",
        "-s",
        envvar="LMDBSTATE_PATH",
        help="The store directory.",
        show_default=True,
    ),
]
WorkflowId = Annotated[
    str, typer.Argument(metavar="WORKFLOW_ID", help="The workflow id.", show_default=False)
]
SeqOption = Annotated[
    int | None,
    typer.Option("--seq", min=1, help="One checkpoint, by its sequence number (see history)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _show_version(value: bool) -> None:
    if value:
        render.message(f"lmdbstate {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    store: StorePath = Path(DEFAULT_PATH),
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Inspect and maintain an lmdbstate checkpoint store.

    The store is --store, else $LMDBSTATE_PATH, else .lmdbstate in the working directory.
    Exit codes: 0 ok, 1 error, 2 usage error, 3 damage found.
    """
    ctx.obj = store


@contextmanager
def _errors_handled() -> Iterator[None]:
    """Turn every error inside into one line on stderr and an exit code.

    This is the one place where the CLI handles errors: every command runs inside it, most
    through ``_store``.
    """
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except LmdbStateError as exc:
        render.error(exc)
        damaged = isinstance(exc, IntegrityError | StoreCorruptedError)
        raise typer.Exit(EXIT_DAMAGE if damaged else EXIT_ERROR) from None
    except Exception as exc:
        # State may hold secrets: never print a traceback or locals unless asked to.
        if os.environ.get("LMDBSTATE_DEBUG"):
            raise
        render.error(
            f"internal error: {type(exc).__name__}: {exc}",
            hint="this is a bug in lmdbstate; set LMDBSTATE_DEBUG=1 to see the traceback",
        )
        raise typer.Exit(EXIT_ERROR) from None


@contextmanager
def _store(ctx: typer.Context, *, readonly: bool = True) -> Iterator[CheckpointStore]:
    """Open the store for one command, with errors handled."""
    with _errors_handled(), CheckpointStore(ctx.obj, readonly=readonly) as store:
        yield store


@app.command("list")
def list_workflows(
    ctx: typer.Context,
    status: Annotated[
        StatusName | None, typer.Option("--status", help="Only workflows with this status.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the workflows in the store."""
    with _store(ctx) as store:
        chosen = None if status is None else status.value
        render.workflows(list(store.workflows(status=chosen)), as_json=as_json)  # type: ignore[arg-type]


@app.command()
def show(
    ctx: typer.Context, workflow_id: WorkflowId, seq: SeqOption = None, as_json: JsonFlag = False
) -> None:
    """Show a checkpoint (the newest unless --seq is given): metadata, digest status and state."""
    with _store(ctx) as store:
        if seq is None:
            store.workflow(workflow_id)  # raises when the workflow does not exist
            ckpt = store.latest(workflow_id, skip_damaged=False)  # damage is reported, not skipped
            if ckpt is None:
                render.error(
                    f"workflow {workflow_id!r} has no checkpoints",
                    hint="its checkpoints were deleted; `lmdbstate delete WF` removes the workflow",
                )
                raise typer.Exit(EXIT_ERROR)
        else:
            ckpt = store.get(workflow_id, seq)
        render.checkpoint(ckpt, as_json=as_json)


@app.command()
def history(
    ctx: typer.Context,
    workflow_id: WorkflowId,
    reverse: Annotated[bool, typer.Option("--reverse", "-r", help="Newest first.")] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=0, help="Show at most this many.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List a workflow's checkpoints without their state."""
    with _store(ctx) as store:
        render.history(
            list(store.history(workflow_id, reverse=reverse, limit=limit)), as_json=as_json
        )


@app.command()
def stats(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show counts and sizes: workflows by status, checkpoints, live and file bytes, readers."""
    with _store(ctx) as store:
        render.stats(store.stats(), as_json=as_json)


@app.command()
def delete(
    ctx: typer.Context,
    workflow_id: WorkflowId,
    seq: SeqOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a workflow with all its checkpoints, or one checkpoint with --seq."""
    what = f"workflow {workflow_id!r}" if seq is None else f"checkpoint {seq} of {workflow_id!r}"
    # Check read-only first: a missing store must not be created by opening it writable, and
    # a missing workflow fails before the question is asked.
    with _store(ctx) as store:
        store.workflow(workflow_id)
    if not yes and not _confirmed(f"Delete {what}?"):
        render.error("nothing deleted", hint="answer y, or pass --yes to delete without asking")
        raise typer.Exit(EXIT_ERROR)
    with _store(ctx, readonly=False) as store:
        deleted = store.delete(workflow_id, seq=seq)
    render.message(f"deleted {what} ({deleted} checkpoint{'s' if deleted != 1 else ''})")


@app.command()
def verify(
    ctx: typer.Context,
    workflow_id: Annotated[
        str | None,
        typer.Argument(metavar="WORKFLOW_ID", help="Check only this workflow.", show_default=False),
    ] = None,
    deep: Annotated[
        bool, typer.Option("--deep", help="Also decode every record's body (slower).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check every record's header and digest, and the indexes against the records.

    Never writes. Exits 3 when anything is damaged, listing each damaged record.
    """
    with _store(ctx) as store:
        total = store.stats().record_bytes if workflow_id is None else None
        with render.progress("verifying", total) as advance:
            report = store.verify(workflow_id=workflow_id, deep=deep, progress=advance)
        render.verify_report(report, as_json=as_json)
    if not report.ok:
        raise typer.Exit(EXIT_DAMAGE)


@app.command()
def repair(
    ctx: typer.Context,
    backup: Annotated[
        Path | None,
        typer.Option(
            "--backup",
            help="A new directory for the backup taken first "
            "(default: beside the store, named STORE.backup-TIME).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Back the store up, delete damaged records, and rebuild the indexes from the records.

    Every intact record stays as it is; afterwards verify finds nothing.
    """
    with _store(ctx) as store:
        store.stats()  # a missing or unreadable store fails here, before anything is written
    with _store(ctx, readonly=False) as store:
        render.repair_report(store.repair(backup_dir=backup), as_json=as_json)


@app.command()
def backup(
    ctx: typer.Context,
    dest: Annotated[
        Path, typer.Argument(metavar="DEST", help="A new or empty directory for the copy.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Write a consistent, compacted copy of the store while writers go on."""
    with _store(ctx) as store:
        target = store.backup(dest)
    render.backup_done(target, as_json=as_json)


@app.command()
def recover(
    source: Annotated[
        Path, typer.Argument(metavar="SRC", help="The damaged store's directory (read only).")
    ],
    dest: Annotated[
        Path, typer.Argument(metavar="DEST", help="A new or empty directory for the new store.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Copy every intact checkpoint of a damaged store into a new store.

    Reads SRC page by page without LMDB, so it works where LMDB refuses to open the store,
    and never writes to it. --store is not used: SRC is named explicitly. Exits 3 when
    anything could not be recovered.
    """
    with _errors_handled():
        report = recover_store(source, dest)
    render.recover_report(report, as_json=as_json)
    if not report.complete:
        raise typer.Exit(EXIT_DAMAGE)


def _confirmed(question: str) -> bool:
    """Ask a yes/no question (default no); end of input or Ctrl-C count as no."""
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:
        return False


def main() -> None:
    """The console script's entry point."""
    app()
