"""All CLI output: rich tables for people, JSON for programs, one-line errors on stderr.

Workflow ids, steps and paths are user data: every console here is created with markup off, so
a ``[`` in them is printed as it is, never read as rich markup.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import reprlib
import shlex
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.pretty import Pretty
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column, Table
from rich.text import Text

from ..config import Config
from ..demo import DemoReport
from ..errors import IntegrityError, LmdbStateError
from ..locations import shown_location
from ..models import (
    Checkpoint,
    CheckpointInfo,
    CompactReport,
    CopyReport,
    DamagedRecord,
    ExportReport,
    GcDeletion,
    GcReport,
    ImportProblem,
    ImportReport,
    LegacyImportReport,
    RecoverReport,
    RepairReport,
    StateChange,
    StateMigrationReport,
    StoreMigrationReport,
    StoreStats,
    VerifyReport,
    WorkflowInfo,
    utc_from_ns,
)
from ..runner import RunResult, StepRecord

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def _time_column(header: str) -> Column:
    """A column for times: never wrapped, so a time stays on one line."""
    return Column(header, no_wrap=True)


def _stdout() -> Console:
    return Console(highlight=False, markup=False)


def _label(name: str) -> Text:
    return Text(name, style="bold")


def human_bytes(size: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def timestamp(ns: int | None) -> str:
    """Nanoseconds since the epoch as an ISO 8601 UTC time, truncated to the millisecond."""
    if ns is None:
        return "-"
    return utc_from_ns(ns).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def short_time(ns: int) -> str:
    """Nanoseconds since the epoch as ``YYYY-MM-DD HH:MM:SS`` UTC, for table cells."""
    return utc_from_ns(ns).strftime("%Y-%m-%d %H:%M:%S")


def to_jsonable(value: Any) -> Any:
    """A JSON-friendly view of a state, for display.

    Tuples and sets become lists (sets sorted), bytes ``{"base64": ...}``, datetimes ISO
    strings, UUIDs and Decimals strings, NaN and infinities the strings ``"nan"``, ``"inf"`` and
    ``"-inf"`` (strict JSON has no such numbers), non-str keys their ``str()``. Lossy by design:
    it is for reading.
    """
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, set | frozenset):
        items = [to_jsonable(item) for item in value]
        try:
            return sorted(items)
        except TypeError:  # mixed or unorderable types: any fixed order will do
            return sorted(items, key=repr)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    return value


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    print(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False))


def _workflow_dict(info: WorkflowInfo) -> dict[str, Any]:
    data = dataclasses.asdict(info)
    data["created_at"] = timestamp(info.created_ns)
    data["updated_at"] = timestamp(info.updated_ns)
    return data


def _info_dict(info: CheckpointInfo) -> dict[str, Any]:
    data = dataclasses.asdict(info)
    data["digest"] = f"{info.digest:016x}"
    data["created_at"] = timestamp(info.created_ns)
    return data


def _table(columns: Iterable[str | Column], rows: Iterable[Iterable[str]], *, empty: str) -> None:
    table = Table(*columns)
    for row in rows:
        table.add_row(*row)
    _stdout().print(table if table.row_count else empty)


def workflows(infos: Iterable[WorkflowInfo], *, as_json: bool) -> None:
    """The ``list`` command's output."""
    if as_json:
        emit_json([_workflow_dict(info) for info in infos])
        return
    rows = (
        (
            info.workflow_id,
            info.status,
            str(info.checkpoints),
            str(info.head_seq),
            human_bytes(info.bytes),
            short_time(info.updated_ns),
        )  # fmt: skip
        for info in infos
    )
    columns = (
        Column("workflow", overflow="fold"),  # an id is never cut short
        "status", "checkpoints", "head", "bytes", _time_column("updated (UTC)"),
    )  # fmt: skip
    _table(columns, rows, empty="no workflows")


def history(
    infos: Iterable[CheckpointInfo], damaged: Sequence[IntegrityError], *, as_json: bool
) -> None:
    """The ``history`` command's output: the intact checkpoints, then the damaged ones."""
    if as_json:
        rows = [_info_dict(info) for info in infos]
        rows += [
            {"workflow_id": exc.workflow_id, "seq": exc.seq, "damaged": exc.reason}
            for exc in damaged
        ]
        emit_json(rows)
    else:
        _history_table(infos, damaged)
    if damaged:
        error(
            f"{len(damaged)} damaged: "
            + ", ".join(f"seq {exc.seq} ({exc.reason})" for exc in damaged),
            hint="`lmdbstate verify` reports every damaged record; `lmdbstate repair` removes "
            "them after a backup",
        )


def _history_table(infos: Iterable[CheckpointInfo], damaged: Sequence[IntegrityError]) -> None:
    table_rows = (
        (
            str(info.seq),
            "-" if info.step is None else str(info.step),
            str(info.schema),
            short_time(info.created_ns),
            human_bytes(info.size),
            f"{info.digest:016x}",
        )  # fmt: skip
        for info in infos
    )
    columns = ("seq", "step", "schema", _time_column("created (UTC)"), "size", "digest")
    _table(columns, table_rows, empty="no intact checkpoints" if damaged else "no checkpoints")


def checkpoint(ckpt: Checkpoint, *, as_json: bool) -> None:
    """The ``show`` command's output: metadata, digest status, then the state."""
    if as_json:
        data = _info_dict(ckpt.info)
        data["digest_ok"] = True
        data["record_format"] = ckpt.record_format
        data["meta"] = to_jsonable(ckpt.meta)
        data["state"] = to_jsonable(ckpt.state)
        emit_json(data)
        return
    console = _stdout()
    table = Table.grid(padding=(0, 2))
    rows: list[tuple[str, str]] = [
        ("workflow", ckpt.workflow_id),
        ("seq", str(ckpt.seq)),
        ("step", "-" if ckpt.step is None else str(ckpt.step)),
        ("schema", str(ckpt.schema)),
        ("created", timestamp(ckpt.created_ns)),
        ("size", human_bytes(ckpt.size)),
        ("digest", f"{ckpt.digest:016x} ok"),
        ("format", "2 (lists in chunks)" if ckpt.record_format == 2 else str(ckpt.record_format)),
    ]
    for name, value in rows:
        table.add_row(_label(name), value)
    console.print(table)
    if ckpt.meta:
        console.print(_label("meta"))
        console.print(Pretty(ckpt.meta))
    console.print(_label("state"))
    console.print(Pretty(ckpt.state))


def state_diff(
    old: Checkpoint, new: Checkpoint, changes: Sequence[StateChange], *, as_json: bool
) -> None:
    """The ``diff`` command's output: the two checkpoints, then one line per change."""
    if as_json:
        emit_json(
            {
                "workflow_id": old.workflow_id,
                "from": {"seq": old.seq, "step": old.step},
                "to": {"seq": new.seq, "step": new.step},
                "changes": [
                    {
                        "op": change.op,
                        "path": to_jsonable(list(change.path)),
                        "old": to_jsonable(change.old),
                        "new": to_jsonable(change.new),
                    }
                    for change in changes
                ],
            }
        )
        return
    message(
        f"workflow {old.workflow_id}: seq {old.seq} ({_step_text(old.step)}) -> seq {new.seq} "
        f"({_step_text(new.step)})"
    )
    for change in changes:
        where = _path_text(change.path)
        if change.op == "added":
            message(f"+ {where}: {_short_repr(change.new)}")
        elif change.op == "removed":
            message(f"- {where}: {_short_repr(change.old)}")
        else:
            message(f"~ {where}: {_short_repr(change.old)} -> {_short_repr(change.new)}")
    message("no change" if not changes else f"{len(changes)} change{'s' * (len(changes) > 1)}")


def _step_text(step: str | int | None) -> str:
    return "no step" if step is None else f"step {step}"


def _path_text(path: Sequence[object]) -> str:
    """``messages[3].content``: identifier keys after dots, other keys and indexes bracketed."""
    text = ""
    for part in path:
        if isinstance(part, str) and part.isidentifier():
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text or "(the whole state)"


def _short_reprs() -> reprlib.Repr:
    """A repr that builds no more of a value than a diff line shows, however large it is."""
    short = reprlib.Repr()
    short.maxlevel = 3
    short.maxstring = short.maxother = short.maxlong = 76
    return short


_SHORT = _short_reprs()


def _short_repr(value: object, limit: int = 80) -> str:
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def stats(report: StoreStats, gc_preview: GcReport | None, *, as_json: bool) -> None:
    """The ``stats`` command's output; ``gc_preview`` is a dry run at the configured policy."""
    if as_json:
        data = dataclasses.asdict(report)
        data["largest"] = [_workflow_dict(info) for info in report.largest]
        data["oldest_at"] = timestamp(report.oldest_ns)
        data["newest_at"] = timestamp(report.newest_ns)
        data["gc_preview"] = None
        if gc_preview is not None:
            data["gc_preview"] = {
                "checkpoints": gc_preview.checkpoints_removed,
                "workflows": gc_preview.workflows_removed,
                "record_bytes": gc_preview.record_bytes_removed,
                "live_bytes_after": gc_preview.live_bytes_after,
                "over_cap": gc_preview.over_cap,
            }
        emit_json(data)
        return
    console = _stdout()
    by_status = ", ".join(f"{n} {status}" for status, n in report.workflows_by_status.items())
    summary = Table.grid(padding=(0, 2))
    lmdb = report.max_map_size > 0  # a PostgreSQL or memory store has no map and no readers
    rows: list[tuple[str, str]] = [
        ("store", report.path),
        ("format", str(report.format_version)),
        ("workflows", f"{report.workflows} ({by_status})"),
        ("checkpoints", str(report.checkpoints)),
        ("record bytes", human_bytes(report.record_bytes)),
        ("live bytes", human_bytes(report.live_bytes)),
        ("file bytes", f"{human_bytes(report.file_bytes)} ({_reusable(report)})"),
    ]
    if lmdb:
        maximum = human_bytes(report.max_map_size)
        rows.append(("map size", f"{human_bytes(report.map_size)} (max {maximum})"))
    rows.append(("page size", human_bytes(report.page_size)))
    if lmdb:
        rows.append(("readers", f"{report.readers_used} of {report.max_readers}"))
    rows += [("oldest", timestamp(report.oldest_ns)), ("newest", timestamp(report.newest_ns))]
    if gc_preview is not None:
        rows.append(
            (
                "gc at policy",
                f"would delete {gc_preview.checkpoints_removed} checkpoints "
                f"({human_bytes(gc_preview.record_bytes_removed)} of records); live bytes after "
                f"about {human_bytes(gc_preview.live_bytes_after)}",
            )
        )
    for name, value in rows:
        summary.add_row(_label(name), value)
    console.print(summary)
    if report.largest:
        table = Table("workflow", "status", "checkpoints", "bytes", title="largest workflows")
        for info in report.largest:
            table.add_row(
                info.workflow_id, info.status, str(info.checkpoints), human_bytes(info.bytes)
            )
        console.print(table)


def _reusable(report: StoreStats) -> str:
    free = max(0, report.file_bytes - report.live_bytes)
    return f"{human_bytes(free)} free for reuse; `lmdbstate compact` gives it back"


def message(text: str) -> None:
    """A line of plain output on stdout."""
    _stdout().print(text, markup=False, soft_wrap=True)


def error(exc: LmdbStateError | str, hint: str | None = None) -> None:
    """One line on stderr naming the error, and a hint line when there is one."""
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    text = str(exc)
    if isinstance(exc, LmdbStateError):
        hint = exc.hint
    console.print(f"error: {text}", markup=False)
    if hint:
        console.print(f"hint: {hint}", markup=False)


class WarningLines(logging.Handler):
    """The library's log records, one ``warning: ...`` line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        """Print the record's message."""
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        console.print(f"warning: {record.getMessage()}", markup=False)


@contextmanager
def progress(label: str, total_bytes: int | None) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr while the block runs, when stderr is a terminal.

    Yields the callback to give the library (records, bytes done), or None off a terminal.
    """
    if not sys.stderr.isatty() or os.environ.get("CI"):
        yield None
        return
    columns = (
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total_bytes)
        yield lambda _records, done: bar.update(task, completed=done)


@contextmanager
def count_progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """As ``progress``, for a callback given (items done, items in all)."""
    if not sys.stderr.isatty() or os.environ.get("CI"):
        yield None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _report_json(report: Any, **computed: object) -> None:
    """Print a report dataclass as JSON, keys in hex, with ``computed`` properties added."""
    data = dataclasses.asdict(
        report,
        dict_factory=lambda items: {k: v.hex() if isinstance(v, bytes) else v for k, v in items},
    )
    emit_json(data | computed)


def _damaged_table(damaged: Iterable[DamagedRecord]) -> None:
    rows = (
        (
            "-" if d.workflow_id is None else d.workflow_id,
            "-" if d.seq is None else str(d.seq),
            d.reason,
        )
        for d in damaged
    )
    _table((Column("workflow", overflow="fold"), "seq", "reason"), rows, empty="")


def verify_report(report: VerifyReport, *, as_json: bool) -> None:
    """The ``verify`` command's output."""
    if as_json:
        _report_json(report, ok=report.ok)
        return
    rate = report.bytes / report.seconds / 2**20 if report.seconds > 0 else 0.0
    verdict = "ok" if report.ok else "DAMAGE FOUND"
    message(
        f"{verdict}: {report.records} checkpoints ({human_bytes(report.bytes)}) in "
        f"{report.workflows} workflows checked in {report.seconds:.2f} s ({rate:.0f} MiB/s)"
        + (", bodies decoded" if report.deep else "")
    )
    for problem in report.structure_problems:
        message(f"damaged page: {problem}")
    if report.structure_problems:
        message("records were not read: `lmdbstate recover SRC DEST` copies the intact ones")
        return
    if report.damaged:
        message(f"{len(report.damaged)} damaged checkpoints:")
        _damaged_table(report.damaged)
    if report.index_problems:
        message(f"{len(report.index_problems)} index problems:")
        rows = ((p.table, p.workflow_id, p.reason) for p in report.index_problems)
        _table(("index", Column("workflow", overflow="fold"), "problem"), rows, empty="")
    if report.chunk_problems:
        message(f"{len(report.chunk_problems)} chunk problems (of {report.chunks} chunks):")
        for problem in report.chunk_problems:
            message(f"  {problem}")
    if not report.ok:
        message("`lmdbstate repair` backs the store up, then removes the damage.")


def repair_report(report: RepairReport, *, as_json: bool) -> None:
    """The ``repair`` command's output."""
    if as_json:
        _report_json(report)
        return
    if report.backup_path is not None:
        message(f"backup: {report.backup_path}")
    message(
        f"removed {len(report.removed)} damaged checkpoints; rebuilt {report.workflows_rebuilt} "
        f"workflow entries; added {report.age_added} and removed {report.age_removed} age "
        f"entries; rewrote {report.chunk_counts_fixed} chunk reference counts and removed "
        f"{report.chunks_removed} unreferenced chunks"
    )
    if report.removed:
        _damaged_table(report.removed)


def gc_report(report: GcReport, *, as_json: bool) -> None:
    """The ``gc`` command's output: what was deleted (or would be), and the sizes."""
    if as_json:
        _report_json(report)
        return
    verb = "would delete" if report.dry_run else "deleted"
    rules = ", ".join(f"{n} by {rule}" for rule, n in sorted(report.by_rule.items()))
    message(
        f"{verb} {report.checkpoints_removed} checkpoints ({rules or 'none'}; "
        f"{human_bytes(report.record_bytes_removed)} of records) and "
        f"{report.workflows_removed} whole workflows"
    )
    after = "estimated " if report.dry_run else ""
    message(
        f"live bytes: {human_bytes(report.live_bytes_before)} -> {after}"
        f"{human_bytes(report.live_bytes_after)}; file: {human_bytes(report.file_bytes)}"
    )
    if report.over_cap:
        message(
            f"still {human_bytes(report.over_cap)} above --max-size: the newest checkpoints of "
            f"running workflows (and the final ones of finished workflows) are kept"
        )
    if report.dry_run and report.deletions:
        per_workflow: dict[str, list[GcDeletion]] = {}
        for deletion in report.deletions:
            per_workflow.setdefault(deletion.workflow_id, []).append(deletion)
        rows = (
            (
                workflow_id,
                _seq_ranges(d.seq for d in doomed),
                human_bytes(sum(d.bytes for d in doomed)),
                ", ".join(sorted({d.rule for d in doomed})),
            )
            for workflow_id, doomed in sorted(per_workflow.items())
        )
        _table((Column("workflow", overflow="fold"), "seqs", "bytes", "rule"), rows, empty="")
    elif not report.dry_run:
        message(f"{report.transactions} write transactions, {report.seconds:.2f} s")


def _seq_ranges(seqs: Iterable[int]) -> str:
    """Seqs as runs: ``1-40, 42, 45-47``."""
    runs: list[list[int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def store_migration_report(report: StoreMigrationReport, *, as_json: bool) -> None:
    """The output of ``migrate`` (store format)."""
    if as_json:
        _report_json(report)
        return
    if report.from_version == report.to_version:
        message(f"store {report.path} has format {report.to_version}: nothing to upgrade")
        return
    if not report.steps:
        message(f"store {report.path} was upgraded to format {report.to_version} meanwhile")
        return
    verb = "would upgrade" if report.check else "upgraded"
    message(f"{verb} store {report.path} from format {report.from_version} to {report.to_version}")
    for step in report.steps:
        message(f"  {step.from_version} -> {step.to_version}: {step.name}  {step.description}")
    if report.backup_path is not None:
        message(f"backup: {report.backup_path}")


def state_migration_report(report: StateMigrationReport, *, as_json: bool) -> None:
    """The output of ``migrate --states``."""
    if as_json:
        _report_json(report)
        return
    verb = "would write" if report.check else "wrote"
    message(
        f"{verb} {len(report.upgraded)} upgraded states; {report.current} workflows already current"
    )
    rows = (
        (
            upgrade.workflow_id,
            upgrade.name,
            str(upgrade.seq),
            f"{upgrade.from_schema} -> {upgrade.to_schema}",
            "-" if upgrade.new_seq is None else str(upgrade.new_seq),
        )
        for upgrade in report.upgraded
    )
    columns = (Column("workflow", overflow="fold"), "name", "from seq", "schema", "new seq")
    _table(columns, rows, empty="")


def compact_report(report: CompactReport, *, as_json: bool) -> None:
    """The ``compact`` command's output."""
    if as_json:
        _report_json(report)
        return
    message(
        f"compacted {report.path}: file {human_bytes(report.file_bytes_before)} -> "
        f"{human_bytes(report.file_bytes_after)} (live {human_bytes(report.live_bytes)}), "
        f"{report.seconds:.2f} s"
    )


def copy_report(report: CopyReport, *, as_json: bool) -> None:
    """The ``copy`` command's output."""
    if as_json:
        _report_json(report)
        return
    message(
        f"copied {report.checkpoints} checkpoints of {report.workflows} workflows "
        f"({report.items} keys in all) from {report.source} to {report.dest} in "
        f"{report.seconds:.2f} s"
    )


def backup_done(path: str, *, as_json: bool) -> None:
    """The ``backup`` command's output."""
    if as_json:
        emit_json({"backup": path})
    else:
        message(f"backup written to {path}")


def recover_report(report: RecoverReport, *, as_json: bool) -> None:
    """The ``recover`` command's output."""
    if as_json:
        _report_json(report, complete=report.complete)
        return
    snapshot = (
        "no usable meta page"
        if report.snapshot_txnid is None
        else (f"snapshot of transaction {report.snapshot_txnid}")
    )
    message(
        f"recovered {report.recovered} checkpoints into {report.dest} ({snapshot}; "
        f"{report.from_scan} found only by scanning pages) in {report.seconds:.2f} s"
    )
    rows = (
        (w.workflow_id, str(w.recovered), str(w.from_scan), "?" if w.lost is None else str(w.lost))
        for w in report.workflows
    )
    columns = (Column("workflow", overflow="fold"), "recovered", "from scan", "lost")
    _table(columns, rows, empty="no workflows found")
    if report.damaged:
        message(f"{len(report.damaged)} damaged checkpoints left out:")
        _damaged_table(report.damaged)
    for skipped in report.skipped_pages:
        message(f"unreadable: {skipped}")
    if report.from_scan:
        message(
            "records found only by scanning may be copies LMDB had freed (deleted checkpoints) "
            "or commits newer than the snapshot: check them with `lmdbstate history`"
        )


def export_report(report: ExportReport, *, as_json: bool) -> None:
    """The ``export`` command's output."""
    if as_json:
        _report_json(report, ok=report.ok)
        return
    message(
        f"exported {report.checkpoints} checkpoints of {report.workflows} workflows to "
        f"{report.path} ({human_bytes(report.bytes)}) in {report.seconds:.2f} s"
    )
    if report.damaged:
        message(f"{len(report.damaged)} damaged checkpoints left out:")
        _damaged_table(report.damaged)


def _problems_table(title: str, problems: tuple[ImportProblem, ...]) -> None:
    if not problems:
        return
    message(title.format(n=len(problems)))
    rows = (
        (
            p.source,
            "-" if p.workflow_id is None else p.workflow_id,
            "-" if p.seq is None else str(p.seq),
            p.reason,
        )
        for p in problems
    )
    columns = (
        Column("where", overflow="fold"), Column("workflow", overflow="fold"), "seq", "reason",
    )  # fmt: skip
    _table(columns, rows, empty="")


def import_report(report: ImportReport, *, as_json: bool) -> None:
    """The ``import`` command's output."""
    if as_json:
        _report_json(report, ok=report.ok)
        return
    message(
        f"imported {report.imported} checkpoints of {report.workflows} workflows from "
        f"{report.path} ({report.already_present} were already present; "
        f"{report.statuses_set} statuses set) in {report.seconds:.2f} s"
    )
    _problems_table("{n} lines skipped:", report.skipped)
    _problems_table(
        "{n} checkpoints imported with a digest that differs from their line's:", report.mismatched
    )


def legacy_import_report(report: LegacyImportReport, *, as_json: bool) -> None:
    """The ``import-legacy`` command's output."""
    if as_json:
        _report_json(report, ok=report.ok)
        return
    message(
        f"imported {report.imported} checkpoints of {report.workflows} workflows from "
        f"{report.source} ({report.files} state files: {report.snapshots} snapshots, "
        f"{report.duplicates} further copies; {report.already_present} were already present; "
        f"{report.statuses_set} statuses set) in {report.seconds:.2f} s"
    )
    _problems_table("{n} files skipped:", report.skipped)


# -- run, resume, config, demo ----------------------------------------------------------------


def step_line(record: StepRecord) -> str:
    """``step 3/12 tokenize: 0.121 s, checkpoint 2 (step_count)``; the demo reads these lines."""
    text = f"step {record.completed}/{record.total} {record.step}"
    if record.started_ns is not None:
        text += f": {(record.finished_ns - record.started_ns) / 1e9:.3f} s"
    if record.checkpoint is not None:
        text += f", checkpoint {record.checkpoint.seq} ({record.trigger})"
    return text


def step_done(record: StepRecord) -> None:
    """A progress line on stderr for each step ``run`` and ``resume`` complete."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(step_line(record), markup=False)


def _seqs(seqs: Iterable[int]) -> str:
    return ", ".join(map(str, seqs)) or "none"


def run_result(result: RunResult, *, as_json: bool) -> None:
    """The output of ``run`` and ``resume``, once the workflow completed."""
    if as_json:
        emit_json(
            {
                "workflow_id": result.workflow_id,
                "status": "completed",
                "resumed_from": result.resumed_from,
                "skipped_damaged": list(result.skipped_damaged),
                "steps_run": list(result.steps_run),
                "checkpoints": [_info_dict(info) for info in result.checkpoints],
                "state": to_jsonable(result.state),
            }
        )
        return
    if result.resumed_from is not None:
        skipped = result.skipped_damaged
        message(
            f"resumed from checkpoint {result.resumed_from}"
            + (f", past damaged checkpoints {_seqs(skipped)}" if skipped else "")
        )
        message(f"steps run again: {', '.join(result.steps_run) or 'none'}")
    else:
        message(f"steps run: {', '.join(result.steps_run)}")
    message(f"checkpoints written: {_seqs(info.seq for info in result.checkpoints)}")
    message(f"workflow {result.workflow_id!r} completed")


def config_settings(config: Config, *, as_json: bool) -> None:
    """The ``config show`` output: every setting, its value and where it came from."""
    settings = config.settings()
    path = settings.get("path")
    if isinstance(path, str):
        settings["path"] = shown_location(path)  # a URL's password stays hidden
    if as_json:
        emit_json(
            {
                name: {"value": value, "source": config.sources[name]}
                for name, value in settings.items()
            }
        )
        return
    rows = (
        (name, "-" if value is None else str(value), config.sources[name])
        for name, value in settings.items()
    )
    columns = ("setting", "value", Column("source", overflow="fold"))
    _table(columns, rows, empty="no settings")


def config_valid(config: Config, *, as_json: bool) -> None:
    """The ``config check`` output when the configuration is valid."""
    files = sorted({source for source in config.sources.values() if source.startswith("/")})
    if as_json:
        emit_json({"ok": True, "files": files})
    else:
        message(f"ok: the configuration is valid (files read: {', '.join(files) or 'none'})")


def demo_report(report: DemoReport, *, as_json: bool) -> None:
    """The ``demo`` output: what ran, when it was killed, where it resumed, what it found."""
    if as_json:
        data = dataclasses.asdict(report)
        data["checkpoints"] = [
            {"seq": seq, "step": step, "trigger": trigger}
            for seq, step, trigger in report.checkpoints
        ]
        emit_json(to_jsonable(data))
        return
    done = report.done_before_kill
    rows: list[tuple[str, str]] = [
        ("workflow", f"{report.workflow_id} in {report.store}"),
        ("steps", f"{len(report.steps)}: {', '.join(report.steps)}"),
        ("gates", ", ".join(report.gates)),
        ("policy", f"{report.policy}, and the first and the final checkpoint"),
        (
            "reference",
            f"uninterrupted, in memory (persistence disabled), without the waits: "
            f"{report.reference_seconds:.2f} s; final state {human_bytes(report.state_bytes)}",
        ),
        ("run", f"{shlex.join(report.command[2:])}  (pid {report.pid})"),
        (
            "kill",
            f"SIGKILL {report.kill_delay * 1000:.0f} ms after checkpoint "
            f"{report.acknowledged[-1]} was reported, inside step {len(done) + 1} "
            f"({report.steps[len(done)]})",
        ),
        ("done", f"{len(done)} steps: {', '.join(done)}; checkpoints {_seqs(report.acknowledged)}"),
    ]
    if report.lease_taken_over:
        rows.append(("lease", "still held by the killed run: taken over, as its process ended"))
    position = report.steps.index(report.resumed_after) + 1
    again = ", ".join(report.run_again)
    rows += [
        (
            "resume",
            f"from checkpoint {report.resumed_from}, taken after step {position} "
            f"({report.resumed_after})",
        ),
        (
            "run again",
            f"{again} (done before the kill, not checkpointed)"
            if again
            else "none: no step was done after that checkpoint",
        ),
    ]
    summary = Table.grid(padding=(0, 2))
    for name, value in rows:
        summary.add_row(_label(name), value)
    _stdout().print(summary)
    for record in report.resumed_steps:
        message(f"    {step_line(record)}")
    verdict = (
        "the final state equals the uninterrupted run's"
        if report.matches
        else "THE FINAL STATE DIFFERS from the uninterrupted run's"
    )
    message(f"result: completed; {verdict} (digest {report.digest}), {report.seconds:.1f} s in all")
    message(
        f"the workflow's {len(report.checkpoints)} checkpoints "
        f"({human_bytes(report.workflow_bytes)}):"
    )
    rows_table = (
        (str(seq), "-" if step is None else str(step), trigger)
        for seq, step, trigger in report.checkpoints
    )
    _table(("seq", "step", "trigger"), rows_table, empty="no checkpoints")
