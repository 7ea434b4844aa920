"""The Typer app: thin commands over the library; rendering lives in ``render.py``.

Exit codes: 0 ok, 1 error (one line on stderr, with a hint), 2 usage, 3 damage found.
"""

import contextlib
import enum
import importlib
import json
import logging
import os
import sys
import time
import uuid
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import __version__, runner
from ..config import (
    CheckpointPolicy,
    Config,
    ConfigWatcher,
    load_config,
    parse_duration,
    parse_size,
)
from ..demo import run_demo
from ..errors import ConfigError, IntegrityError, LmdbStateError, StoreCorruptedError
from ..interchange import (
    check_export_file,
    check_legacy_dir,
    export_jsonl,
    import_jsonl,
    import_legacy,
)
from ..policy import Policy
from ..retention import RetentionPolicy
from ..statediff import diff_states
from ..store import DEFAULT_PATH, CheckpointStore, migrate_store
from ..store import recover as recover_store
from ..transfer import copy_store
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
    str,
    typer.Option(
        "--store",
        "-s",
        envvar="LMDBSTATE_PATH",
        help="The store directory, or a postgresql:// URL (see docs/backends.md).",
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
    store: StorePath = DEFAULT_PATH,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    r"""Inspect and maintain an lmdbstate checkpoint store.

    The store is --store, else $LMDBSTATE_PATH, else the path the config file sets
    (lmdbstate.toml, or \[tool.lmdbstate] in pyproject.toml), else .lmdbstate, in the
    working directory.
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
def _store(
    ctx: typer.Context, *, readonly: bool = True, retention: bool = True
) -> Iterator[CheckpointStore]:
    """Open the store for one command, with errors handled.

    A writable open takes the store settings of the configuration (durability, map sizes,
    retention), as the library's ``Config.open_store`` does; a read-only open needs none of them.
    ``retention=False`` leaves the configured retention out: an import must not have its own
    checkpoints collected while it writes them.
    """
    with _errors_handled():
        options: dict[str, Any] = {}
        if not readonly:
            config = _config(ctx)
            options = {
                "durability": config.durability,
                "map_size": config.map_size,
                "max_map_size": config.max_map_size,
                "retention": config.retention_policy() if retention else None,
            }
        with CheckpointStore(_store_path(ctx), readonly=readonly, **options) as store:
            yield store


def _store_source(ctx: typer.Context) -> str:
    """Where --store came from: ``COMMANDLINE``, ``ENVIRONMENT`` (LMDBSTATE_PATH) or ``DEFAULT``."""
    source = ctx.find_root().get_parameter_source("store")
    return "DEFAULT" if source is None else source.name


def _store_path(ctx: typer.Context) -> str:
    # The configuration is read only when no store was named: a broken config file does not
    # stop the commands that name theirs.
    path: str = ctx.obj
    return load_config().path if _store_source(ctx) == "DEFAULT" else path


def _config(ctx: typer.Context, **overrides: Any) -> Config:
    """The effective configuration, with --store as its path when given on the command line."""
    return load_config(**_with_store(ctx, overrides))


def _watcher(ctx: typer.Context, **overrides: Any) -> ConfigWatcher:
    """The configuration of a running workflow, reloaded at its checkpoints when edited."""
    return ConfigWatcher(**_with_store(ctx, overrides))


def _with_store(ctx: typer.Context, overrides: dict[str, Any]) -> dict[str, Any]:
    if _store_source(ctx) == "COMMANDLINE":
        overrides["path"] = ctx.obj
    return overrides


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
def diff(
    ctx: typer.Context,
    workflow_id: WorkflowId,
    seqs: Annotated[
        list[int] | None,
        typer.Argument(
            metavar="SEQ",
            help="Up to two checkpoints to compare, SEQ_A then SEQ_B (default: the one before "
            "the newest, then the newest).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show what changed in a workflow's state from one checkpoint to another.

    With no SEQ: the checkpoint before the newest against the newest; with one: SEQ_A against
    the newest; with two: SEQ_A against SEQ_B. Maps are compared key by key and lists index by
    index; each change is one line: + added, - removed, ~ changed.
    """
    wanted = seqs or []
    if len(wanted) > 2 or any(seq < 1 for seq in wanted):
        raise typer.BadParameter("give at most two seqs, each at least 1", param_hint="SEQ")
    with _store(ctx) as store:
        if len(wanted) < 2:
            newest = [info.seq for info in store.history(workflow_id, reverse=True, limit=2)]
            if len(newest) < 2 - len(wanted):
                render.error(
                    f"workflow {workflow_id!r} has fewer than two checkpoints",
                    hint="`lmdbstate history WF` lists the checkpoints it has",
                )
                raise typer.Exit(EXIT_ERROR)
            wanted = [newest[1], newest[0]] if not wanted else [wanted[0], newest[0]]
        old, new = (store.get(workflow_id, seq) for seq in wanted)
        render.state_diff(old, new, diff_states(old.state, new.state), as_json=as_json)


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
    """List a workflow's checkpoints without their state.

    Damaged checkpoints are listed after the intact ones, and the command exits 3.
    """
    damaged: list[IntegrityError] = []
    with _store(ctx) as store:
        infos = list(
            store.history(workflow_id, reverse=reverse, limit=limit, on_damaged=damaged.append)
        )
        render.history(infos, damaged, as_json=as_json)
    if damaged:
        raise typer.Exit(EXIT_DAMAGE)


@app.command()
def stats(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show counts and sizes: workflows by status, checkpoints, live and file bytes, readers.

    With a retention policy in the config (retention_* settings), also what a gc at that
    policy would delete.
    """
    with _store(ctx) as store:
        report = store.stats()
        policy = _configured_policy(ctx)
        preview = None if policy is None else store.gc(policy, dry_run=True)
        render.stats(report, preview, as_json=as_json)


def _configured_policy(ctx: typer.Context) -> RetentionPolicy | None:
    """The config's retention policy; None when it sets none, or cannot be read."""
    try:
        return _config(ctx).retention_policy()
    except ConfigError:
        return None  # stats and gc with bounds on the command line need no config


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
        # The bar's total reads every index entry, which damage may make impossible.
        total = None
        if workflow_id is None:
            with contextlib.suppress(StoreCorruptedError):
                total = store.stats().record_bytes
        with render.progress("verifying", total) as advance:
            report = store.verify(workflow_id=workflow_id, deep=deep, progress=advance)
        render.verify_report(report, as_json=as_json)
    if not report.ok:
        raise typer.Exit(EXIT_DAMAGE)


@app.command()
def repair(
    ctx: typer.Context,
    backup: Annotated[
        str | None,
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
    with _store(ctx):
        pass  # a missing or unreadable store fails here, before anything is written
    with _store(ctx, readonly=False) as store:
        render.repair_report(store.repair(backup_dir=backup), as_json=as_json)


def _bound(text: str | None, parse: Any, option: str, example: str) -> Any:
    """A --max-size or --max-age value read strictly; a bad one is a one-line usage error."""
    if text is None:
        return None
    try:
        value = parse(text)
    except ValueError as exc:
        render.error(f"invalid value for {option}: {exc}", hint=f"for example {option} {example}")
        raise typer.Exit(EXIT_USAGE) from None
    if not value:
        render.error(f"invalid value for {option}: {text!r} is zero", hint="give a value above 0")
        raise typer.Exit(EXIT_USAGE)
    return value


@app.command()
def gc(
    ctx: typer.Context,
    max_size: Annotated[
        str | None,
        typer.Option(
            "--max-size",
            metavar="SIZE",
            help="Hold the store's live size under this: 500MiB, 2GB, 1.5GiB (powers of 1024 "
            "with i, of 1000 without).",
            show_default=False,
        ),
    ] = None,
    max_age: Annotated[
        str | None,
        typer.Option(
            "--max-age",
            metavar="AGE",
            help="Delete checkpoints older than this: 30d, 12h, 15m, 45s.",
            show_default=False,
        ),
    ] = None,
    keep_last: Annotated[
        int | None,
        typer.Option(
            "--keep-last", min=1, help="Keep this many newest checkpoints of each workflow."
        ),
    ] = None,
    finished_max_age: Annotated[
        str | None,
        typer.Option(
            "--finished-max-age",
            metavar="AGE",
            help="Delete whole the finished workflows not updated for this long: 7d.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be deleted; write nothing.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete old checkpoints by size, age and count, oldest first, while writers go on.

    A running workflow always keeps its newest intact checkpoint and a finished one its
    final checkpoint (unless --finished-max-age removes it whole); finished workflows'
    checkpoints go before running ones'. Without bounds on the command line the configured
    retention policy (retention_* settings) applies; with any, exactly those given do.
    """
    bounds = {
        "max_size": _bound(max_size, parse_size, "--max-size", "500MiB"),
        "max_age": _bound(max_age, parse_duration, "--max-age", "30d"),
        "keep_last": keep_last,
        "finished_max_age": _bound(finished_max_age, parse_duration, "--finished-max-age", "7d"),
    }
    with _errors_handled():
        if any(value is not None for value in bounds.values()):
            policy = RetentionPolicy(**bounds)
        else:
            configured = _config(ctx).retention_policy()
            if configured is None:
                render.error(
                    "no retention bounds: none given and none configured",
                    hint="pass --max-size, --max-age, --keep-last or --finished-max-age, or set "
                    "retention_* in lmdbstate.toml",
                )
                raise typer.Exit(EXIT_USAGE)
            policy = configured
    with _store(ctx):
        pass  # a missing store fails here, before one is created by a writable open
    with _store(ctx, readonly=dry_run) as store, render.count_progress("deleting") as advance:
        report = store.gc(policy, dry_run=dry_run, progress=advance)
    render.gc_report(report, as_json=as_json)


@app.command()
def compact(
    ctx: typer.Context,
    dest: Annotated[
        str | None,
        typer.Option(
            "--dest",
            metavar="DIR",
            help="Write the compacted copy into this new directory and leave the store as it is.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Shrink the store's file to the pages in use (after gc, the file keeps its size).

    Copies the store with compaction, flushes the copy and renames it over the store's file.
    Needs the store to itself: refused while another process has it open. With --dest the
    store is not touched and may stay in use.
    """
    with _store(ctx):
        pass  # a missing store fails here, before one is created by a writable open
    with _store(ctx, readonly=dest is not None) as store:
        report = store.compact(dest)
    render.compact_report(report, as_json=as_json)


@app.command("copy")
def copy_command(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SRC", help="The store to copy: a directory or a postgresql:// URL."
        ),
    ],
    dest: Annotated[
        str,
        typer.Argument(
            metavar="DEST",
            help="A new or empty directory, or a postgresql:// URL whose schema holds no store.",
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Copy a whole store into a new one, between LMDB and PostgreSQL in either direction.

    Every record, index entry and digest arrives byte for byte; the source is read in one
    snapshot, never written, and may stay in use. --store is not used: both stores are named.
    """
    with _errors_handled(), render.count_progress("copying") as advance:
        report = copy_store(source, dest, progress=advance)
    render.copy_report(report, as_json=as_json)


@app.command()
def backup(
    ctx: typer.Context,
    dest: Annotated[
        str, typer.Argument(metavar="DEST", help="A new or empty directory for the copy.")
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
        str, typer.Argument(metavar="SRC", help="The damaged store's directory (read only).")
    ],
    dest: Annotated[
        str,
        typer.Argument(metavar="DEST", help="A new or empty directory for the new store."),
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


# -- export, import, import-legacy -----------------------------------------------------------


@app.command()
def export(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="FILE",
            help="The file to write: JSON Lines, a checkpoint a line.",
            show_default=False,
        ),
    ],
    workflow_id: Annotated[
        str | None,
        typer.Argument(
            metavar="WORKFLOW_ID", help="Export only this workflow.", show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Write the store's checkpoints, or one workflow's, to a portable JSON Lines file.

    Reads each checkpoint in its own short transaction while writers go on. Damaged
    checkpoints are left out and listed (exit 3). `lmdbstate import FILE` reads the file into
    any store, with the same states and digests.
    """
    with _store(ctx) as store, render.count_progress("exporting") as advance:
        report = export_jsonl(
            store, out, workflow_id=workflow_id, overwrite=force, progress=advance
        )
    render.export_report(report, as_json=as_json)
    if not report.ok:
        raise typer.Exit(EXIT_DAMAGE)


@app.command("import")
def import_file(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="A file written by lmdbstate export.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Import the checkpoints of an export file, with their seqs, times and digests.

    Creates the store if needed. Checkpoints already present are left as they are, so
    importing a file again adds nothing. Exits 3 when a line was skipped or imported with a
    digest that differs from the line's.
    """
    with _errors_handled():
        check_export_file(file)  # a missing or foreign file fails before a store is created
        size = file.stat().st_size
    with (
        _store(ctx, readonly=False, retention=False) as store,
        render.progress("importing", size) as advance,
    ):
        report = import_jsonl(store, file, progress=advance)
    render.import_report(report, as_json=as_json)
    if not report.ok:
        raise typer.Exit(EXIT_DAMAGE)


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise typer.BadParameter(f"no time zone {name!r}: give an IANA name such as UTC") from None


@app.command("import-legacy")
def import_legacy_dir(
    ctx: typer.Context,
    directory: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            help="The legacy state directory, e.g. .tapps-agents/workflow-state (read only).",
        ),
    ],
    timezone: Annotated[
        Any,
        typer.Option(
            "--timezone",
            metavar="ZONE",
            parser=_zone,
            help="The legacy system's time zone, for times without an offset (default: this "
            "machine's).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Import the JSON state directory of the system lmdbstate replaces; never writes to it.

    Each workflow's snapshots become its checkpoints in the order they were saved, the current
    one last. Creates the store if needed; running it again adds only snapshots saved since.
    Exits 3 when a file was skipped (torn JSON, a broken gzip file, a checksum mismatch).
    """
    with _errors_handled():
        check_legacy_dir(directory)  # a missing directory fails before a store is created
    with (
        _store(ctx, readonly=False, retention=False) as store,
        render.count_progress("importing") as advance,
    ):
        report = import_legacy(store, directory, timezone=timezone, progress=advance)
    render.legacy_import_report(report, as_json=as_json)
    if not report.ok:
        raise typer.Exit(EXIT_DAMAGE)


# -- run, resume, config, demo ----------------------------------------------------------------


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}") from None


def _import_from_cwd() -> None:
    """Let an entrypoint name a module in the working directory, as ``python -m`` does."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _import_modules(modules: list[str]) -> None:
    """Import the modules that register migrations; a failure is a one-line usage error."""
    _import_from_cwd()
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            render.error(
                f"cannot import {module!r}: {type(exc).__name__}: {exc}",
                hint="--import takes a module name importable from the working directory",
            )
            raise typer.Exit(EXIT_USAGE) from None


@app.command()
def migrate(
    ctx: typer.Context,
    workflow_id: Annotated[
        str | None,
        typer.Argument(
            metavar="WORKFLOW_ID", help="With --states: only this workflow.", show_default=False
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Show what would change; write nothing.")
    ] = False,
    backup: Annotated[
        str | None,
        typer.Option(
            "--backup",
            metavar="DIR",
            help="A new directory for the copy taken before the store is upgraded "
            "(default: beside the store, named STORE.formatN-backup-TIME-PID).",
        ),
    ] = None,
    states: Annotated[
        bool,
        typer.Option(
            "--states",
            help="Upgrade workflows' newest states to their current schema, as new checkpoints.",
        ),
    ] = False,
    modules: Annotated[
        list[str] | None,
        typer.Option(
            "--import",
            metavar="MODULE",
            help="Import this module first, for the migrations it registers (repeatable).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Upgrade the store's format, or with --states the workflows' state schemas.

    The store format is upgraded after a backup copy, one step per write transaction; an
    interrupted upgrade carries on from the last step done. --states writes each workflow's
    newest state, upgraded through the registered state migrations, as a new checkpoint (the
    history stays); if any state cannot be upgraded, nothing is written.
    """
    _import_modules(modules or [])
    if workflow_id is not None and not states:
        render.error("WORKFLOW_ID is only taken with --states", hint="add --states")
        raise typer.Exit(EXIT_USAGE)
    if states and backup is not None:
        render.error("--backup is only taken without --states", hint="drop --backup")
        raise typer.Exit(EXIT_USAGE)
    if not states:
        with _errors_handled():
            report = migrate_store(_store_path(ctx), backup_dir=backup, check=check)
        render.store_migration_report(report, as_json=as_json)
        return
    with _store(ctx):
        pass  # a missing store fails here, before one is created by a writable open
    with _store(ctx, readonly=check) as store:
        render.state_migration_report(
            store.migrate_states(workflow_id, check=check), as_json=as_json
        )


@app.command("run")
def run_workflow(
    ctx: typer.Context,
    entrypoint: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:ATTR", help="The Workflow object to run, e.g. lmdbstate.demo:WORKFLOW."
        ),
    ],
    workflow_id: Annotated[str, typer.Option("--id", help="The new workflow's id.")],
    state: Annotated[
        Any,
        typer.Option(
            "--state", metavar="JSON", parser=_json_value, help="The initial state, as JSON."
        ),
    ] = "{}",
    policy: Annotated[
        CheckpointPolicy | None,
        typer.Option("--policy", help="When to checkpoint (default: the configured policy)."),
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            help="Steps for every_n_steps, seconds for time_based (default: the configured one).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Start a workflow and run all its steps, checkpointing at step boundaries.

    Creates the store if needed. Each step prints a line on stderr. The entrypoint is
    recorded, so `lmdbstate resume WORKFLOW_ID` can continue the workflow after a crash.
    """
    overrides: dict[str, Any] = {}
    if policy is not None:
        overrides["checkpoint_policy"] = policy
    if interval is not None:
        overrides["checkpoint_interval"] = int(interval) if interval.is_integer() else interval
    with _store(ctx, readonly=False) as store:
        watcher = _watcher(ctx, **overrides)
        _import_from_cwd()
        workflow = runner.load_workflow(entrypoint)
        result = runner.run(
            store, workflow, workflow_id, state, policy=Policy.from_config(watcher.config),
            entrypoint=entrypoint, on_step=render.step_done, reload=watcher,
        )  # fmt: skip
    render.run_result(result, as_json=as_json)


@app.command("resume")
def resume_workflow(
    ctx: typer.Context,
    workflow_id: WorkflowId,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Continue even though the workflow's steps changed since it started."
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Continue a workflow from its newest intact checkpoint and run the steps after it.

    Loads the workflow by the entrypoint `lmdbstate run` recorded, and keeps the policy it
    started with. Refuses a completed workflow, one another executor is running, and one
    whose steps changed (unless --force).
    """
    with _store(ctx) as store:
        store.workflow(workflow_id)  # a missing store or workflow fails before a writable open
    with _store(ctx, readonly=False) as store:
        _import_from_cwd()
        result = runner.resume(
            store, workflow_id, force=force, on_step=render.step_done, reload=_watcher(ctx)
        )
    render.run_result(result, as_json=as_json)


config_app = typer.Typer(
    name="config",
    help="Show or check the configuration: lmdbstate.toml, pyproject.toml, LMDBSTATE_* variables.",
    no_args_is_help=True,
)
app.add_typer(config_app)


@config_app.command("show")
def config_show(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the effective configuration and where each value came from."""
    with _errors_handled():
        config = _config(ctx)
    render.config_settings(config, as_json=as_json)


@config_app.command("check")
def config_check(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Check the configuration; exit 1 with the error when a value is wrong."""
    with _errors_handled():
        config = _config(ctx)
    render.config_valid(config, as_json=as_json)


@app.command()
def demo(
    ctx: typer.Context,
    workflow_id: Annotated[
        str | None,
        typer.Option("--id", help="The demo workflow's id (default: demo- and the time)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seeds the moment of the kill (default: random).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a workflow in a subprocess, SIGKILL it part-way, resume it and check the result.

    The workflow is lmdbstate.demo:WORKFLOW: twelve steps, one a gate, building a state of a
    few hundred KiB. Its final state is compared with an uninterrupted run's. Creates the
    store if needed; takes a few seconds.
    """
    chosen = (
        workflow_id or time.strftime("demo-%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:4]
    )
    with _store(ctx, readonly=False) as store:
        report = run_demo(store, chosen, seed=seed)
    render.demo_report(report, as_json=as_json)
    if not report.matches:
        render.error(
            "the resumed workflow's final state differs from the uninterrupted run's",
            hint="this is a bug in lmdbstate; please report it with the output above",
        )
        raise typer.Exit(EXIT_ERROR)


def _confirmed(question: str) -> bool:
    """Ask a yes/no question (default no); end of input or Ctrl-C count as no."""
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:
        return False


def main() -> None:
    """The console script's entry point."""
    # The library never prints; its warnings (a damaged checkpoint skipped, a lease taken
    # over) are worth a line on a terminal.
    logging.getLogger("lmdbstate").addHandler(render.WarningLines(logging.WARNING))
    # psycopg logs its own clean-up after a lost connection; the error itself is reported in
    # one line already, so its records go nowhere rather than to Python's last-resort handler.
    logging.getLogger("psycopg").addHandler(logging.NullHandler())
    app()
